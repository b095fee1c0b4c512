"""Prompt sources a recipe names under ``data.name``.

Each builder is ``builder(split, n, seed, **args) -> datasets.Dataset`` with a prompt column
(``data.prompt_column``, default "prompt") and any other columns the rewards need (they are
passed to reward functions as keyword arguments, TRL-style). Entries are import strings so the
heavy ones load only when used."""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable

DATASETS: dict[str, str] = {
    "arithmetic": "llmrl.data.arithmetic:arithmetic_dataset",
    "gsm8k": "llmrl.data.gsm8k:gsm8k_dataset",
    "jsonl": "llmrl.data.registry:jsonl_dataset",
    "hf": "llmrl.data.registry:hub_dataset",
    "mbpp": "llmrl.eval.benchmarks:mbpp_dataset",
    "apps": "llmrl.eval.benchmarks:apps_dataset",
    "humaneval": "llmrl.eval.benchmarks:humaneval_dataset",
    "code_tiny": "llmrl.data.code_tiny:code_tiny_dataset",
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


def jsonl_dataset(*, split: str, n: int | None, seed: int, path: str | None = None, train_path: str | None = None,
                  test_path: str | None = None):
    """Local JSON Lines files: ``args: {train_path: ..., test_path: ...}`` (or one ``path``)."""
    import datasets

    file = {"train": train_path, "test": test_path}.get(split) or path
    if not file:
        raise ValueError(f"data.args: the jsonl dataset needs 'path' or '{split}_path'")
    return datasets.load_dataset("json", data_files=file, split="train")


def hub_dataset(*, split: str, n: int | None, seed: int, path: str, config: str | None = None,
                train_split: str = "train", test_split: str = "test", prompt_field: str | None = None):
    """Any Hugging Face hub dataset (needs network); ``prompt_field`` is renamed to ``prompt``."""
    import datasets

    ds = datasets.load_dataset(path, config, split=train_split if split == "train" else test_split)
    if prompt_field and prompt_field != "prompt":
        ds = ds.rename_column(prompt_field, "prompt")
    return ds
