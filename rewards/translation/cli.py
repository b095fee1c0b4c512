"""`llmrl exemplars build` and `llmrl eval translation`.

    llmrl exemplars build --backend openai --model Qwen/Qwen2.5-72B-Instruct \\
        --base-url http://localhost:8000/v1 --directions en-zh --out runs/exemplars_en_zh.jsonl
    llmrl exemplars build --backend hf --model ./my-model data.jsonl --out ex.jsonl
    llmrl eval translation --model runs/x/final --directions en-de,en-zh --limit 200
    llmrl eval translation --hypotheses hyps.jsonl --directions en-de
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

exemplars_app = typer.Typer(no_args_is_help=True, help="Build exemplar translations ahead of training (ExTrans).")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _read_rows(data: Optional[Path], directions: Optional[str], split: str, limit: Optional[int]) -> list[dict]:
    if (data is None) == (directions is None):
        _fail("give a data file (JSON Lines of {source, src_lang, tgt_lang}) or --directions for WMT22, not both")
    if directions is not None:
        from llmrl.data.translation import wmt22_dataset

        ds = wmt22_dataset(split, limit, directions=directions)
        return [dict(zip(ds.column_names, v)) for v in zip(*(ds[c] for c in ds.column_names))]
    if not data.is_file():
        _fail(f"{data}: file not found")
    rows = []
    for n, line in enumerate(data.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not all(isinstance(row.get(k), str) for k in ("source", "src_lang", "tgt_lang")):
                raise KeyError("source, src_lang and tgt_lang must be strings")
        except (ValueError, KeyError) as exc:
            _fail(f"{data} line {n}: not a {{source, src_lang, tgt_lang}} record ({exc})")
        rows.append(row)
    return rows[:limit] if limit else rows


@exemplars_app.command("build")
def build(data: Optional[Path] = typer.Argument(None, help="JSON Lines of {source, src_lang, tgt_lang}."),
          directions: Optional[str] = typer.Option(None, "--directions", help="WMT22 directions instead of a file, "
                                                   "e.g. en-zh or en-de,de-en."),
          split: str = typer.Option("train", "--split", help="WMT22 split (train / test)."),
          out: Path = typer.Option(..., "--out", help="JSON Lines to append {source, src_lang, tgt_lang, exemplar} to."),
          backend: str = typer.Option("openai", "--backend", help="openai (any OpenAI-compatible server) or hf."),
          model: str = typer.Option(..., "--model", help="Served model name (openai) or HF name / folder (hf)."),
          base_url: Optional[str] = typer.Option(None, "--base-url", help="openai: the server's /v1 URL "
                                                 "(default $LLMRL_JUDGE_BASE_URL)."),
          cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="openai: response cache folder."),
          max_concurrency: int = typer.Option(16, "--max-concurrency", min=1),
          max_tokens: int = typer.Option(512, "--max-tokens", min=1),
          limit: Optional[int] = typer.Option(None, "--limit", min=1, help="First N rows (per direction)."),
          progress: bool = typer.Option(True, "--progress/--no-progress")) -> None:
    """Translate each source with a strong model, resumably; prints the counts as JSON."""
    from llmrl.rewards.translation.exemplars import build_exemplars, translate_fn

    rows = _read_rows(data, directions, split, limit)
    args = ({"base_url": base_url, "cache_dir": cache_dir, "max_concurrency": max_concurrency}
            if backend == "openai" else {})
    try:
        translate = translate_fn(backend, model=model, max_tokens=max_tokens, **args)
    except ValueError as exc:
        _fail(str(exc))
    counts = build_exemplars(rows, out, translate=translate, progress=progress)
    typer.echo(json.dumps({"out": str(out), **counts}))
    if counts["failed"]:
        raise typer.Exit(1)


def translation(model: Optional[str] = typer.Option(None, "--model", help="HF name, folder or tiny://NAME."),
                hypotheses: Optional[Path] = typer.Option(None, "--hypotheses", help="JSON Lines of {pair, id, "
                                                          "hypothesis} instead of a model."),
                directions: str = typer.Option("en-de", "--directions", help="WMT22 directions, comma-separated."),
                split: str = typer.Option("test", "--split"),
                limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Segments in all."),
                chat: bool = typer.Option(True, "--chat/--no-chat", help="Wrap the prompt in the chat template."),
                require_think: bool = typer.Option(False, "--require-think", help="Score only what follows "
                                                   "</think> (a broken format counts as an empty translation)."),
                max_new_tokens: int = typer.Option(512, "--max-new-tokens", min=1),
                reps: int = typer.Option(1000, "--bootstrap", min=10, help="Bootstrap resamples."),
                comet: bool = typer.Option(False, "--comet", help="Also COMET (needs llmrl[comet] and weights)."),
                out: Optional[Path] = typer.Option(None, "--out", help="Write the report JSON here too.")) -> None:
    """BLEU and chrF per WMT22 direction with 95% bootstrap CIs (COMET when asked)."""
    from llmrl.data.translation import wmt22_dataset
    from llmrl.eval.translation import report
    from llmrl.rewards.translation.format import extract_translation

    if (model is None) == (hypotheses is None):
        _fail("give --model or --hypotheses (one of them)")
    try:
        ds = wmt22_dataset(split, limit, directions=directions)
    except ValueError as exc:
        _fail(str(exc))
    rows = [dict(zip(ds.column_names, v)) for v in zip(*(ds[c] for c in ds.column_names))]
    if hypotheses is not None:
        if not hypotheses.is_file():
            _fail(f"--hypotheses: {hypotheses} not found")
        found = {}
        for line in hypotheses.read_text(encoding="utf-8").splitlines():
            if line.strip():
                h = json.loads(line)
                found[(h["pair"], h["id"])] = h["hypothesis"]
        missing = [(r["pair"], r["id"]) for r in rows if (r["pair"], r["id"]) not in found]
        if missing:
            _fail(f"--hypotheses: {len(missing)} segments have no hypothesis, e.g. {missing[:3]}")
        texts = [found[(r["pair"], r["id"])] for r in rows]
    else:
        from llmrl.models.load import load_model_and_tokenizer
        from llmrl.models.warm_start import greedy_generate

        net, tok = load_model_and_tokenizer(model)
        prompts = [r["prompt"] for r in rows]
        if chat and getattr(tok, "chat_template", None):
            prompts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        texts = greedy_generate(net, tok, prompts, max_new_tokens=max_new_tokens, batch_size=16)
    texts = [extract_translation(t, require_think=require_think) or "" for t in texts]
    result = {"model": model, "hypotheses": str(hypotheses) if hypotheses else None, "split": split,
              "directions": report(rows, texts, reps=reps, comet=comet)}
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)
