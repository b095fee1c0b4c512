"""Tiny function-writing tasks with hidden unit tests, learnable by the tiny local model on a CPU.

Each task asks for the return expression of ``f(x)`` described by a short spec of one or two
integer operations applied left to right::

    # times 3 plus 1
    return                      <- the model writes ``x*3+1`` (or ``1+x*3``, ``3*x+1``...)

The program ``def f(x):\n    return `` + completion runs in the sandbox against hidden asserts
on fixed inputs (``assert f(-3) == -8`` ...), judged by ``llmrl.rewards.code`` like MBPP, so the
tiny recipe exercises the very reward and sandbox path a real coder model uses.

Why this design (``../shared/notes/tiny-learning.md``): the answer is short (at most 8
characters, so rollouts are cheap and the supervised warm start's greedy check sees whole
answers), and the typical errors are near misses the model also samples correctly: a wrong
digit, ``+`` for ``-``, or a missing parenthesis in ``(x+3)*2`` (precedence). ``answer`` holds
the canonical body for the supervised warm start (exact match is a lower bound of the pass rate:
``3*x`` passes too). Splits are a hash partition of the spec, so test tasks never appear in
train.

>>> ds = code_tiny_dataset(split="train", n=2, seed=0)
>>> sorted(ds.column_names)
['answer', 'program_prefix', 'prompt', 'task_id', 'tests']
>>> ds[0]["prompt"].endswith("\\nreturn ")
True
"""
from __future__ import annotations

import hashlib
import itertools
import json
import random

from llmrl.sandbox.jobs import AssertTests

__all__ = ["code_tiny_dataset", "all_tasks", "canonical_body", "TEST_INPUTS", "OPS"]

SPLITS = ("train", "validation", "test")
#: spec word -> Python operator. Division and modulo use Python's floor semantics, which the
#: negative test input checks.
OPS = {"plus": "+", "minus": "-", "times": "*", "div": "//", "mod": "%"}
_ADDITIVE = {"+", "-"}
#: Hidden test inputs: include a negative, zero, and values where the near misses differ.
TEST_INPUTS = (-3, 0, 2, 7, 11)
PREFIX = "def f(x):\n    return "


def canonical_body(steps: list[tuple[str, int]]) -> str:
    """The shortest natural Python expression for the steps applied to ``x`` in order.

    >>> canonical_body([("times", 3), ("plus", 1)]), canonical_body([("plus", 3), ("times", 2)])
    ('x*3+1', '(x+3)*2')
    >>> canonical_body([("minus", 2), ("minus", 5)])
    'x-2-5'
    """
    expr, prev = "x", None
    for word, k in steps:
        op = OPS[word]
        if prev in _ADDITIVE and op not in _ADDITIVE:
            expr = f"({expr})"  # left-to-right meaning needs the parentheses: (x+3)*2
        expr = f"{expr}{op}{k}"
        prev = op
    return expr


def _evaluate(steps: list[tuple[str, int]], x: int) -> int:
    for word, k in steps:
        x = {"plus": x + k, "minus": x - k, "times": x * k, "div": x // k, "mod": x % k}[word]
    return x


def _spec(steps: list[tuple[str, int]]) -> str:
    return " ".join(f"{w} {k}" for w, k in steps)


def split_of(spec: str) -> str:
    """Split of a task by a fixed hash of its spec (20% test, 10% validation, 70% train; the test share is
    large because the space is small and held-out accuracy needs a few hundred tasks).

    >>> split_of("times 3 plus 1") in SPLITS
    True
    """
    bucket = int.from_bytes(hashlib.blake2b(spec.encode(), digest_size=8).digest(), "big") % 100
    return "test" if bucket < 20 else "validation" if bucket < 30 else "train"


def all_tasks(max_steps: int = 2, max_constant: int = 9, ops: str = "plus,minus,times,div,mod") -> list[list[tuple[str, int]]]:
    """Every task (list of (op word, constant) steps) of the space, in a fixed order.

    >>> len(all_tasks(1, 9, "plus,times"))
    18
    """
    words = [w.strip() for w in ops.split(",") if w.strip()]
    bad = [w for w in words if w not in OPS]
    if bad or not words:
        raise ValueError(f"data.args.ops: unknown operation(s) {bad or ops!r}; use a comma list of {sorted(OPS)}")
    if not 1 <= max_steps <= 3 or not 1 <= max_constant <= 9:
        raise ValueError(f"data.args: need 1 <= max_steps <= 3 and 1 <= max_constant <= 9 "
                         f"(single digits keep answers short), got {max_steps}, {max_constant}")
    step_choices = [(w, k) for w in words for k in range(1, max_constant + 1)]
    tasks = []
    for length in range(1, max_steps + 1):
        tasks += [list(t) for t in itertools.product(step_choices, repeat=length)]
    return tasks


def code_tiny_dataset(*, split: str, n: int | None, seed: int, max_steps: int = 2, max_constant: int = 9,
                      ops: str = "plus,minus,times,div,mod", replace: bool = True):
    """``n`` tiny function-writing tasks of one split, as a ``datasets.Dataset``.

    Args:
        split: ``train``, ``validation`` or ``test`` (hash partition of the spec space).
        n: rows; ``None`` = every task of the split once. With ``replace`` (default) a larger
            ``n`` than the split holds draws tasks again (the warm start wants many examples);
            otherwise it is an error.
        seed: row order / draw seed.
        max_steps: operations per task (1-3). max_constant: constants 1..max_constant.
        ops: comma list of operations from ``plus, minus, times, div, mod``.

    Returns:
        Columns ``prompt`` (spec comment + ``return ``; the def line stays out of the prompt:
        every prompt token costs CPU time and it carries no information), ``answer`` (canonical
        body), ``tests`` (JSON ``AssertTests``), ``program_prefix`` (the def line + ``return ``),
        ``task_id`` (the spec).
    """
    from datasets import Dataset

    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    pool = [t for t in all_tasks(max_steps, max_constant, ops) if split_of(_spec(t)) == split]
    rng = random.Random(f"code_tiny/{split}/{seed}")
    if n is None or n <= len(pool):
        chosen = rng.sample(pool, len(pool) if n is None else n)
    elif replace:
        chosen = rng.sample(pool, len(pool)) + rng.choices(pool, k=n - len(pool))
    else:
        raise ValueError(f"the {split!r} split has {len(pool)} tasks, asked for n={n}; raise max_steps/ops or lower n")
    rows = []
    for steps in chosen:
        spec = _spec(steps)
        asserts = [f"assert f({x}) == {_evaluate(steps, x)}" for x in TEST_INPUTS]
        rows.append({"prompt": f"# {spec}\nreturn ", "answer": canonical_body(steps),
                     "tests": json.dumps(AssertTests(asserts=asserts).to_dict()),
                     "program_prefix": PREFIX, "task_id": spec})
    return Dataset.from_list(rows)
