"""GSM8K (Cobbe et al., 2021) as a prompt/answer dataset for ``llmrl.rewards.math.math_reward``.

Reads ``gsm8k/{train,test}.jsonl`` (7,473 / 1,319 records, fields ``question`` and ``answer``;
the answer is a worked solution ending in ``#### <number>``) from the first local copy
(:func:`llmrl.paths.find_local_data`: $LLMRL_DATA_DIR, ../shared/data, the llmrl cache), else
the hub dataset ``openai/gsm8k`` (config ``main``); or any folder / ``.jsonl`` file with the
same fields.
"""
from __future__ import annotations

import json
from pathlib import Path

from llmrl.paths import SOURCES, DataNotFoundError, load_hub_dataset, locate_data

HUB = "openai/gsm8k"

INSTRUCTION = (
    "Solve the problem step by step. End your response with the final answer on its own line "
    'as "#### <number>" (or put it in \\boxed{}).'
)


def gold_answer(solution: str) -> str:
    """The gold number of a GSM8K solution: text after the last ``#### ``, commas removed.

    >>> gold_answer("48/2 = <<48/2=24>>24 clips in May.\\n#### 1,072")
    '1072'
    """
    if "####" not in solution:
        raise ValueError(f"GSM8K solution has no '####' marker: {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def _read_records(split: str, source: str | None) -> list[dict]:
    source = source or "auto"
    relative = f"gsm8k/{split}.jsonl"
    if source in SOURCES:
        path = locate_data(relative, source=source, what="GSM8K", hub=HUB)
        if path is None:
            ds = load_hub_dataset(HUB, "main", split=split, relative=relative, what="GSM8K", source=source)
            return [{"question": r["question"], "answer": r["answer"]} for r in ds]
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / f"{split}.jsonl"
        if not path.is_file():
            raise DataNotFoundError(
                f"GSM8K file {path} not found. Pass source=<folder with train.jsonl/test.jsonl or a .jsonl "
                "file>, or source='auto' (the local copies, then the hub).")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def gsm8k_dataset(split: str = "train", *, n: int | None = None, seed: int = 0, source: str = "auto",
                  instruction: str = INSTRUCTION):
    """GSM8K rows as a ``datasets.Dataset`` (registry builder ``data.name: gsm8k``).

    Args:
        split: ``"train"`` (7,473) or ``"test"`` (1,319).
        n: keep the first ``n`` rows (file order), or all when None.
        seed: part of the builder contract; it does *not* change the rows. ``n`` always takes
            the first ``n`` problems, so a held-out ``eval_size`` is the same problems for every
            trainer seed (runs with different seeds stay comparable); the trainer shuffles the
            training order itself.
        source: ``"auto"`` (default: the first local copy of ``gsm8k/<split>.jsonl`` in
            $LLMRL_DATA_DIR, ../shared/data, the llmrl cache; else the hub ``openai/gsm8k``),
            ``"local"``, ``"hub"``, or a folder / ``.jsonl`` path with ``question``/``answer``.
        instruction: appended to each question (after a blank line).

    Returns:
        Dataset with columns ``prompt`` (question + instruction), ``answer`` (gold number as a
        string, e.g. ``"72"``), ``question`` and ``solution`` (the worked solution).
    """
    from datasets import Dataset

    del seed  # see the docstring: the rows do not depend on it
    if split not in ("train", "test"):
        raise ValueError(f"GSM8K split={split!r}: use 'train' or 'test'.")
    records = _read_records(split, source)
    if n is not None:
        records = records[:n]
    return Dataset.from_dict({
        "prompt": [f"{r['question']}\n\n{instruction}" for r in records],
        "answer": [gold_answer(r["answer"]) for r in records],
        "question": [r["question"] for r in records],
        "solution": [r["answer"] for r in records],
    })
