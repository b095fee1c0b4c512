"""Procedural multi-step integer arithmetic: prompts like ``4-34+82=`` with answer ``52``.

No download, deterministic given the seed. Splits are a hash partition of the expression
*string*, so ``test`` and ``validation`` problems never appear in ``train`` whatever the seed
or size. Defaults follow ``../shared/notes/tiny-learning.md``: 2-3 operands up to 99 with
``+`` and ``-`` only (with ``*`` the tiny model's errors stopped being near misses and RL
stopped improving greedy accuracy).

Example:
    >>> ds = arithmetic_dataset("train", 3, seed=0)
    >>> ds.column_names
    ['prompt', 'answer']
    >>> all(p.endswith("=") for p in ds["prompt"])
    True
"""
from __future__ import annotations

import hashlib
import itertools
import random

SPLITS = ("train", "validation", "test")
# Per 100 hash buckets: 10 test, 10 validation, 80 train.
_TEST_BUCKETS = range(0, 10)
_VALIDATION_BUCKETS = range(10, 20)
# Below this many expressions we enumerate the split exactly instead of rejection sampling.
_ENUMERATE_LIMIT = 200_000


def split_of(expression: str) -> str:
    """Which split an expression (without ``=``) belongs to; a fixed hash, not Python's ``hash``.

    >>> split_of("4-34+82") in SPLITS
    True
    """
    bucket = int.from_bytes(hashlib.blake2b(expression.encode(), digest_size=8).digest(), "big") % 100
    if bucket in _TEST_BUCKETS:
        return "test"
    if bucket in _VALIDATION_BUCKETS:
        return "validation"
    return "train"


def evaluate(expression: str) -> int:
    """Value of a ``+``/``-``/``*`` integer expression with the usual precedence (no ``eval``).

    >>> evaluate("4-34+82"), evaluate("2+3*4-1")
    (52, 13)
    """
    import re

    tokens = re.findall(r"\d+|[-+*]", expression)
    if "".join(tokens) != expression.replace(" ", "") or not tokens:
        raise ValueError(f"not a +,-,* integer expression: {expression!r}")
    # Fold products first, then sum the signed terms.
    terms: list[int] = []
    sign, product, expect_number = 1, None, True
    for tok in tokens:
        if expect_number:
            if not tok.isdigit():
                raise ValueError(f"not a +,-,* integer expression: {expression!r}")
            product = int(tok) if product is None else product * int(tok)
        elif tok == "*":
            pass
        else:
            terms.append(sign * product)
            sign, product = (1 if tok == "+" else -1), None
        expect_number = not expect_number
    if expect_number:
        raise ValueError(f"expression ends with an operator: {expression!r}")
    terms.append(sign * product)
    return sum(terms)


def _space_size(min_operands: int, max_operands: int, max_value: int, n_ops: int) -> int:
    return sum((max_value + 1) ** k * n_ops ** (k - 1) for k in range(min_operands, max_operands + 1))


def _random_expression(rng: random.Random, min_operands: int, max_operands: int, max_value: int,
                       ops: str) -> str:
    k = rng.randint(min_operands, max_operands)
    parts = [str(rng.randint(0, max_value))]
    for _ in range(k - 1):
        parts += [rng.choice(ops), str(rng.randint(0, max_value))]
    return "".join(parts)


def _all_expressions(min_operands: int, max_operands: int, max_value: int, ops: str):
    numbers = [str(v) for v in range(max_value + 1)]
    for k in range(min_operands, max_operands + 1):
        for nums in itertools.product(numbers, repeat=k):
            for chosen in itertools.product(ops, repeat=k - 1):
                yield nums[0] + "".join(o + v for o, v in zip(chosen, nums[1:]))


def arithmetic_dataset(
    split: str,
    n: int,
    *,
    seed: int = 0,
    min_operands: int = 2,
    max_operands: int = 3,
    max_value: int = 99,
    ops: str = "+-",
):
    """``n`` distinct arithmetic problems from one split, as a ``datasets.Dataset``.

    Args:
        split: ``"train"``, ``"validation"`` or ``"test"`` (80/10/10 hash partition of the
            expression space; disjoint whatever the other arguments).
        n: number of problems (distinct within the split).
        seed: sampling seed; the same arguments give the same rows in the same order.
        min_operands, max_operands: operands per expression, drawn uniformly in this range.
        max_value: operands are integers in ``[0, max_value]``.
        ops: operator characters drawn uniformly, any of ``+-*``.

    Returns:
        Dataset with columns ``prompt`` (``"4-34+82="``) and ``answer`` (``"52"``, a string;
        negative results carry a minus sign).
    """
    from datasets import Dataset

    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}; pick one of those.")
    if not ops or set(ops) - set("+-*"):
        raise ValueError(f"ops={ops!r} must be a non-empty string of characters from '+-*'.")
    if not 1 <= min_operands <= max_operands:
        raise ValueError(f"need 1 <= min_operands <= max_operands, got {min_operands}, {max_operands}.")
    if max_value < 0 or n < 0:
        raise ValueError(f"max_value and n must be >= 0, got max_value={max_value}, n={n}.")
    ops = "".join(dict.fromkeys(ops))  # dedupe, keep order: "+-+" draws like "+-"

    # A str seed is hashed with SHA-512 by random.Random, so this is stable across runs and
    # machines, and each split gets its own stream.
    rng = random.Random(f"arithmetic/{split}/{seed}")
    size = _space_size(min_operands, max_operands, max_value, len(ops))
    if size <= _ENUMERATE_LIMIT:
        pool = [e for e in _all_expressions(min_operands, max_operands, max_value, ops)
                if split_of(e) == split]
        if n > len(pool):
            raise ValueError(
                f"the {split!r} split has only {len(pool)} distinct expressions with "
                f"operands={min_operands}..{max_operands}, max_value={max_value}, ops={ops!r}; "
                f"asked for n={n}. Lower n or widen the space (max_value, max_operands, ops).")
        expressions = rng.sample(pool, n)
    else:
        seen: dict[str, None] = {}
        while len(seen) < n:
            e = _random_expression(rng, min_operands, max_operands, max_value, ops)
            if e not in seen and split_of(e) == split:
                seen[e] = None
        expressions = list(seen)
    return Dataset.from_dict({
        "prompt": [e + "=" for e in expressions],
        "answer": [str(evaluate(e)) for e in expressions],
    })


def exact_match_reward(prompts, completions, answer, **kwargs) -> list[float | None]:
    """1.0 when the completion, stripped, equals the answer string exactly; else 0.0.

    TRL reward signature. Stricter than ``math_reward`` (which takes the last number): for the
    arithmetic task the trained behaviour is "answer, then <eos>", and this reward matches the
    greedy exact-match accuracy used for evaluation. A missing answer (None) scores None.

    >>> exact_match_reward(["1+1="] * 3, ["2", " 2\\n", "22"], answer=["2", "2", "2"])
    [1.0, 1.0, 0.0]
    """
    out: list[float | None] = []
    for completion, gold in zip(completions, answer, strict=True):
        if gold is None:
            out.append(None)
            continue
        if isinstance(completion, list):  # chat format: the last message's content
            completion = completion[-1]["content"] if completion else ""
        out.append(float(completion is not None and completion.strip() == str(gold).strip()))
    return out
