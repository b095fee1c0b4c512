"""Prompt sources a recipe names under ``data.name``.

Each builder is ``builder(split, n, seed, **args) -> datasets.Dataset`` with a prompt column
(``data.prompt_column``, default "prompt") and any other columns the rewards need (they are
passed to reward functions as keyword arguments, TRL-style). Entries are import strings so the
heavy ones load only when used."""
from __future__ import annotations

import difflib
import importlib
import random
from pathlib import Path
from typing import Any, Callable

DATASETS: dict[str, str] = {
    "arithmetic": "llmrl.data.arithmetic:arithmetic_dataset",
    "gsm8k": "llmrl.data.gsm8k:gsm8k_dataset",
    "file": "llmrl.data.registry:file_dataset",
    "jsonl": "llmrl.data.registry:jsonl_dataset",
    "hf": "llmrl.data.registry:hub_dataset",
    "mbpp": "llmrl.eval.benchmarks:mbpp_dataset",
    "apps": "llmrl.eval.benchmarks:apps_dataset",
    "humaneval": "llmrl.eval.benchmarks:humaneval_dataset",
    "code_tiny": "llmrl.data.code_tiny:code_tiny_dataset",
    "fact_lookup": "llmrl.data.fact_lookup:fact_lookup_dataset",
    "multihop": "llmrl.data.multihop:multihop_dataset",
    "clinical_notes": "llmrl.privacy.corpus:clinical_notes_dataset",
    "wmt22": "llmrl.data.translation:wmt22_dataset",
    "number_words": "llmrl.data.translation:number_words_dataset",
}


def resolve_dataset(name: str) -> Callable[..., Any]:
    target = DATASETS.get(name, name)
    if ":" not in target:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"data.name: unknown dataset {name!r}.{hint} Use one of {sorted(DATASETS)} or 'module:function'.")
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"data.name: cannot import {target!r} ({exc})") from None


def build_dataset(name: str, split: str, *, n: int | None, seed: int, args: dict[str, Any]):
    """Load a split; ``n`` caps the number of rows (None = all)."""
    ds = resolve_dataset(name)(split=split, n=n, seed=seed, **args)
    if n is not None and len(ds) > n:
        ds = ds.select(range(n))
    return ds


FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".json": "json", ".jsonl": "json",
                ".ndjson": "json"}


def _rename_columns(ds, columns: dict[str, str] | None, source: str):
    """Rename the data set's columns to ours: ``columns: {prompt: question}`` makes its
    ``question`` column our ``prompt`` (the names the trainer and the rewards read)."""
    if not columns:
        return ds
    missing = [theirs for theirs in columns.values() if theirs not in ds.column_names]
    if missing:
        raise ValueError(f"data.args.columns: {', '.join(map(repr, missing))} not a column of {source} "
                         f"(columns: {', '.join(ds.column_names)})")
    return ds.rename_columns({theirs: ours for ours, theirs in columns.items() if theirs != ours})


def _held_out(ds, split: str, test_fraction: float):
    """One file for both splits: a fixed share of its rows (the same whatever the seed, so a warm
    start's draw and the evaluation's never overlap) is the test split."""
    if not test_fraction:
        return ds
    order = list(range(len(ds)))
    random.Random(0).shuffle(order)  # fixed: not the trainer seed
    k = max(1, round(len(ds) * test_fraction))
    return ds.select(sorted(order[:k] if split == "test" else order[k:]))


def file_dataset(*, split: str, n: int | None, seed: int, path: str | None = None, train_path: str | None = None,
                 test_path: str | None = None, format: str | None = None, columns: dict[str, str] | None = None,
                 test_fraction: float = 0.1):
    """Local CSV, parquet or JSON / JSON Lines files, read with ``datasets``.

    Recipe keys (``data.name: file``, these under ``data.args``):

    - ``train_path`` / ``test_path``: one file per split; or ``path``: one file for both, with
      ``test_fraction`` of its rows (default 0.1, a fixed draw) held out as the test split
      (0 = train and evaluate on the same rows).
    - ``format``: ``csv``, ``parquet`` or ``json`` (JSON Lines or a JSON list); default from the
      file's suffix (.csv, .parquet/.pq, .json/.jsonl/.ndjson).
    - ``columns``: rename columns to the names the trainer and rewards read, ours: theirs,
      e.g. ``{prompt: question, answer: solution}``. Other columns are passed to the rewards
      under their own names.

    A missing, empty or malformed file, or a ``columns`` entry the file does not have, is a
    ValueError naming the key and the file (``llmrl train`` exits 2).

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "qa.csv"
    >>> _ = f.write_text("question,answer\\n1+1=,2\\n2+2=,4\\n")
    >>> ds = file_dataset(split="train", n=None, seed=0, path=str(f), columns={"prompt": "question"}, test_fraction=0)
    >>> ds.column_names, list(ds["prompt"])
    (['prompt', 'answer'], ['1+1=', '2+2='])
    """
    import datasets

    key = f"{split}_path" if {"train": train_path, "test": test_path}.get(split) else "path"
    file = {"train": train_path, "test": test_path}.get(split) or path
    if not file:
        raise ValueError(f"data.args: the file data set needs 'path' (one file for both splits) or "
                         f"'{split}_path'")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"data.args.test_fraction: {test_fraction} must be in [0, 1)")
    where = f"data.args.{key}"
    local = Path(file).expanduser()
    if not local.is_file():
        raise ValueError(f"{where}: file not found: {file} ({'a folder, not a file' if local.is_dir() else 'check the path'}"
                         f"; relative paths are from the folder llmrl runs in, {Path.cwd()})")
    fmt = format or FILE_FORMATS.get(local.suffix.lower())
    if fmt not in ("csv", "parquet", "json"):
        raise ValueError(f"data.args.format: {format!r} is not one of csv, parquet, json" if format else
                         f"{where}: cannot tell the format of {file} from its suffix {local.suffix!r}; "
                         f"name the file {', '.join(FILE_FORMATS)} or set data.args.format: csv, parquet or json")
    if local.stat().st_size == 0:
        raise ValueError(f"{where}: {file} is empty; it needs a header/records with a prompt column")
    try:
        ds = datasets.load_dataset(fmt, data_files=str(local), split="train")
    except Exception as exc:  # datasets wraps the parser's error; show that one
        cause = exc.__cause__ or exc
        what = {"csv": "CSV", "parquet": "parquet", "json": "JSON / JSON Lines"}[fmt]
        detail = " ".join(str(cause).split()) or type(cause).__name__
        if "corresponds to no data" in str(exc) or isinstance(exc, StopIteration):
            raise ValueError(f"{where}: {file} holds no rows") from None
        raise ValueError(f"{where}: {file} is not a readable {what} file ({type(cause).__name__}: {detail[:300]})") from None
    if len(ds) == 0:
        raise ValueError(f"{where}: {file} holds no rows")
    ds = _rename_columns(ds, columns, file)
    return _held_out(ds, split, test_fraction) if key == "path" else ds


def jsonl_dataset(*, split: str, n: int | None, seed: int, path: str | None = None, train_path: str | None = None,
                  test_path: str | None = None, columns: dict[str, str] | None = None, test_fraction: float = 0.1):
    """Local JSON Lines files: :func:`file_dataset` with ``format: json`` (same keys)."""
    return file_dataset(split=split, n=n, seed=seed, path=path, train_path=train_path, test_path=test_path,
                        format="json", columns=columns, test_fraction=test_fraction)


def hub_dataset(*, split: str, n: int | None, seed: int, path: str, config: str | None = None,
                train_split: str = "train", test_split: str = "test", columns: dict[str, str] | None = None,
                prompt_field: str | None = None, trust_remote_code: bool = False):
    """A Hugging Face hub data set (or a hub-format folder), read with ``datasets.load_dataset``.

    Recipe keys (``data.name: hf``, these under ``data.args``):

    - ``path``: hub name (``openai/gsm8k``) or a local folder; ``config``: its configuration
      (``main``); ``train_split`` / ``test_split``: the splits used for training and evaluation.
    - ``columns``: rename to our names, ours: theirs, e.g. ``{prompt: question}``
      (``prompt_field: question`` is the older spelling of the same).
    - ``trust_remote_code``: allow a data set's loading script to run.

    A data set that cannot be loaded (offline, unknown name or split) is a ValueError naming
    ``data.args.path`` and the cause."""
    import datasets

    which = train_split if split == "train" else test_split
    extra = {"trust_remote_code": True} if trust_remote_code else {}
    try:
        ds = datasets.load_dataset(path, config, split=which, **extra)
    except Exception as exc:
        cause = " ".join(f"{type(exc).__name__}: {exc}".split())[:400]
        raise ValueError(f"data.args.path: could not load the hub data set {path!r} (config {config!r}, split "
                         f"{which!r}): {cause}. Check the name, config and split (data.args.train_split / "
                         "test_split); offline, pre-download it or use data.name: file with a local copy") from None
    if prompt_field and prompt_field != "prompt":
        columns = {"prompt": prompt_field, **(columns or {})}
    return _rename_columns(ds, columns, path)
