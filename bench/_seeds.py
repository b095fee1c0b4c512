"""What the seed-running benches share: their common flags, the per-seed loop, "after" as the
mean of the last evaluations, and the summary with IQM and a 95% stratified bootstrap CI
(``llmrl.eval.compare`` / ``llmrl.eval.stats``), optionally fed into an AdaStop test that says how
many more seeds a comparison needs (``llmrl.eval.adastop``).

Used by bench/learning.py, bench/code_learning.py and bench/thr_steering.py; their run folders are
what ``llmrl compare`` reads (docs/compare.md).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np


def add_seed_args(ap: argparse.ArgumentParser, *, seeds: Sequence[int], steps: int, eval_every: int, out: str,
                  last_evals: int = 3, last_evals_help: str = "'after' = mean of this many final evaluations",
                  steps_help: str | None = None) -> argparse.ArgumentParser:
    """The flags every seed bench takes: --seeds --steps --eval-every --last-evals --out --set."""
    ap.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    ap.add_argument("--steps", type=int, default=steps, help=steps_help)
    ap.add_argument("--eval-every", type=int, default=eval_every)
    ap.add_argument("--last-evals", type=int, default=last_evals, help=last_evals_help)
    ap.add_argument("--out", default=out)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra recipe overrides")
    return ap


def tail_mean(evals: Sequence[tuple[int, float]], last: int, *, skip_first: bool = False) -> float:
    """Mean accuracy of the last ``last`` evaluations (greedy accuracy moves 2-3 points between
    evaluations, docs/benchmarks.md); ``skip_first`` never counts the evaluation before training.

    >>> tail_mean([(0, 0.2), (10, 0.4), (20, 0.6)], 2)
    0.5
    >>> tail_mean([(0, 0.2)], 3, skip_first=True)
    0.2
    """
    pool = list(evals[1:]) if skip_first else list(evals)
    tail = [a for _, a in pool[-last:]] or [evals[-1][1]]
    return sum(tail) / len(tail)


def for_each_seed(seeds: Iterable[int], run: Callable[[int], dict], *, hide: Sequence[str] = ("evals",)) -> list[dict]:
    """``run(seed)`` for each seed, each result printed to stderr (one JSON line) as it finishes."""
    results = []
    for seed in seeds:
        r = run(seed)
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k not in hide}), file=sys.stderr, flush=True)
    return results


def interval(values: Mapping[str, Sequence[float]] | Sequence[float], name: str = "value") -> dict:
    """IQM and 95% stratified bootstrap CI per named set of per-seed values (needs >= 2 seeds)."""
    from llmrl.eval.stats import iqm_ci

    sets = values if isinstance(values, Mapping) else {name: values}
    out = iqm_ci({k: np.asarray(v, dtype=np.float64) for k, v in sets.items()})
    return out if isinstance(values, Mapping) else out[name]


def adastop_verdict(state: str, scores: Mapping[str, Sequence[tuple[str, float]]], *, n: int = 5, K: int = 4,
                    alpha: float = 0.05) -> dict:
    """Feed per-seed scores (``{config: [(run_id, score)]}``) into the AdaStop test kept in
    ``state`` and return its verdict (decisions, seeds to run next)."""
    from llmrl.eval.adastop import AdaStop

    test = AdaStop.load_or_new(state, list(scores), n=n, K=K, alpha=alpha)
    res = test.update(scores)
    test.save(state)
    return res
