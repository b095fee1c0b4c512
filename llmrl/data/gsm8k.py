"""GSM8K (Cobbe et al., 2021) as a prompt/answer dataset for ``llmrl.rewards.math.math_reward``.

Reads the offline copy in ``<shared data>/gsm8k/{train,test}.jsonl`` by default (7,473 /
1,319 records, fields ``question`` and ``answer``; the answer is a worked solution ending in
``#### <number>``), or the hub dataset ``openai/gsm8k`` (config ``main``) with
``source="hub"``, or any folder / ``.jsonl`` file with the same fields.
"""
from __future__ import annotations

import json
from pathlib import Path

from llmrl.paths import shared_data_dir

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
    if source == "hub":
        from datasets import load_dataset

        try:
            ds = load_dataset("openai/gsm8k", "main", split=split)
        except Exception as e:  # network / hub errors come in many types
            raise ValueError(
                f"could not load openai/gsm8k ({split}) from the Hugging Face Hub: {e}. "
                "Offline? Use the local copy (source=None reads "
                f"{shared_data_dir() / 'gsm8k'}) or pass source=<folder or .jsonl file>.") from e
        return [{"question": r["question"], "answer": r["answer"]} for r in ds]
    path = Path(source) if source else shared_data_dir() / "gsm8k"
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(
            f"GSM8K file {path} not found. Set $LLMRL_DATA_DIR to the folder holding gsm8k/, pass "
            "source=<folder with train.jsonl/test.jsonl or a .jsonl file>, or source='hub'.")
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


def gsm8k_dataset(split: str = "train", *, source: str | None = None, n: int | None = None,
                  instruction: str = INSTRUCTION):
    """GSM8K rows as a ``datasets.Dataset``.

    Args:
        split: ``"train"`` (7,473) or ``"test"`` (1,319).
        source: None for the offline copy under the shared data folder, ``"hub"`` for
            ``openai/gsm8k``, or a folder / ``.jsonl`` path with ``question``/``answer`` fields.
        n: keep the first ``n`` rows (file order), or all when None.
        instruction: appended to each question (after a blank line).

    Returns:
        Dataset with columns ``prompt`` (question + instruction), ``answer`` (gold number as a
        string, e.g. ``"72"``), ``question`` and ``solution`` (the worked solution).
    """
    from datasets import Dataset

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
