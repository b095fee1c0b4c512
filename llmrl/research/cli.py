"""``llmrl index build``, ``llmrl search serve`` and ``llmrl eval research``."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

index_app = typer.Typer(no_args_is_help=True, help="Build the local search index of a corpus.")
search_app = typer.Typer(no_args_is_help=True, help="Serve a local search index over HTTP (Search-R1 API).")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@index_app.command("build")
def build(corpus: Path = typer.Argument(..., help="JSON Lines (.jsonl or .jsonl.gz) of {title, text[, url, passage_id]}."),
          out: Optional[Path] = typer.Option(None, "--out", help="Index file (default: the llmrl cache)."),
          force: bool = typer.Option(False, "--force", help="Rebuild even if an index of this corpus exists.")) -> None:
    """Index a corpus with SQLite FTS5 (BM25), once; prints JSON {index, passages, seconds}."""
    from llmrl.research.index import SearchIndex, build_index

    t0 = time.perf_counter()
    try:
        path = build_index(corpus, out, force=force)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"index": str(path), "passages": SearchIndex(path).size,
                           "seconds": round(time.perf_counter() - t0, 3)}))


@search_app.command("serve")
def serve(corpus: Path = typer.Argument(..., help="A corpus .jsonl(.gz) (indexed first if needed) or a built index."),
          host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8000, "--port"),
          topk_max: int = typer.Option(100, "--max-topk", min=1)) -> None:
    """POST /retrieve {queries, topk, return_scores} (Search-R1's API) and POST /page {url}."""
    from llmrl.research.index import SearchIndex, build_index
    from llmrl.research.server import make_server

    try:
        path = corpus if corpus.suffix in (".sqlite", ".db") else build_index(corpus)
        index = SearchIndex(path)
    except ValueError as exc:
        _fail(str(exc))
    server = make_server(index, host, port, max_topk=topk_max)
    typer.echo(f"serving {index.size} passages on http://{host}:{server.server_address[1]}/retrieve", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


def research(model: str = typer.Option(..., "--model", help="HF name, local path or tiny://NAME."),
             data: list[str] = typer.Option(["hotpotqa"], "--data", help="hotpotqa, bamboogle, hotpotqa_train or a "
                                            ".jsonl with question and answer(s); repeatable."),
             search: str = typer.Option(..., "--search", help="Corpus file, http(s):// /retrieve URL or module:function."),
             limit: Optional[int] = typer.Option(None, "--limit", min=1, help="First N questions of each data set."),
             chat: bool = typer.Option(True, "--chat/--no-chat", help="Wrap the instruction in the chat template."),
             max_turns: int = typer.Option(10, "--max-turns", min=0),
             top_k: int = typer.Option(3, "--top-k", min=1),
             max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1, help="Per assistant turn."),
             max_total_tokens: int = typer.Option(4096, "--max-total-tokens", min=1),
             batch_size: int = typer.Option(32, "--batch-size", min=1)) -> None:
    """F1 / EM per data set with tool statistics; prints JSON."""
    from llmrl.config.schema import AgentConfig
    from llmrl.data.multihop import FILES, multihop_dataset
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.research.build import agent_problems, build_agent_engine
    from llmrl.research.evaluate import evaluate_agent
    from llmrl.rollout.hf_engine import HFEngine

    agent = AgentConfig(search=search, top_k=top_k, max_turns=max_turns, max_total_tokens=max_total_tokens)
    problems = agent_problems(agent)
    if problems:
        _fail("; ".join(p.replace("agent.search", "--search") for p in problems))
    try:
        sets = {d: multihop_dataset("test", n=limit, **({"name": d} if d in FILES else {"path": d})) for d in data}
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    model, tok = load_model_and_tokenizer(model)
    engine = build_agent_engine(HFEngine(model, tok, max_prompt_length=4096, add_special_tokens=not chat), tok, agent)
    out = {}
    for name, ds in sets.items():
        prompts = list(ds["prompt"])
        if chat:
            prompts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
                       for p in prompts]
        out[name] = evaluate_agent(engine, prompts, list(ds["answers"]), max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, progress=True)
    typer.echo(json.dumps(out, indent=2))
