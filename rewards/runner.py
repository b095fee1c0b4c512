"""Score a batch with several rewards concurrently, each under a timeout.

Design rule: rewards never block or kill training. A reward that raises or overruns its timeout
scores the whole batch with its ``failure_value``, the reason is logged and counted, and the step
goes on. Each call runs on its own daemon thread: a hung reward cannot be killed from Python,
but it cannot hold up the step either. Async rewards run on their own event loop in that thread.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from llmrl.rewards.registry import resolve_reward

log = logging.getLogger(__name__)


@dataclass
class RewardFn:
    name: str
    fn: Callable
    weight: float = 1.0
    timeout_s: float = 60.0
    failure_value: float = 0.0


@dataclass
class RewardResult:
    """per_reward[name]: [N] float (nan = not applicable); total: [N] weighted sum."""

    total: torch.Tensor
    per_reward: dict[str, torch.Tensor]
    details: list[dict[str, Any]]
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def build_reward_fns(specs) -> list[RewardFn]:
    """From recipe ``rewards`` entries (RewardSpec) to callables with their args bound."""
    out = []
    for spec in specs:
        fn = resolve_reward(spec.name)
        if spec.args:
            fn = functools.partial(fn, **spec.args)
        short = spec.name.rsplit(":", 1)[-1]
        out.append(RewardFn(short, fn, spec.weight, spec.timeout_s, spec.failure_value))
    return out


def _call(fn: Callable, prompts, completions, columns) -> Any:
    result = fn(prompts=prompts, completions=completions, **columns)
    if inspect.isawaitable(result):
        return asyncio.run(result)
    return result


def _run_with_timeout(rf: RewardFn, prompts, completions, columns) -> tuple[Any, str | None]:
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = _call(rf.fn, prompts, completions, columns)
        except BaseException as exc:  # noqa: BLE001 - any failure is an outcome, not a crash
            box["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=target, name=f"reward-{rf.name}", daemon=True)
    thread.start()
    thread.join(rf.timeout_s)
    if thread.is_alive():
        return None, f"timeout after {rf.timeout_s:g}s"
    if "error" in box:
        return None, box["error"]
    return box["value"], None


def score(prompts: list, completions: list, columns: dict[str, list], reward_fns: list[RewardFn]) -> RewardResult:
    """Run every reward on the batch at once (threads), combine with weights.

    ``None`` from a reward means not applicable (TRL's convention): that reward is left out of
    the sample's sum; a sample no reward applies to scores 0 and is counted in the details.
    """
    n = len(completions)
    results: dict[str, tuple[Any, str | None]] = {}
    seconds: dict[str, float] = {}

    def run_one(rf: RewardFn):
        t0 = time.perf_counter()
        results[rf.name] = _run_with_timeout(rf, prompts, completions, columns)
        seconds[rf.name] = time.perf_counter() - t0

    threads = [threading.Thread(target=run_one, args=(rf,), daemon=True) for rf in reward_fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    per_reward: dict[str, torch.Tensor] = {}
    failures: dict[str, str] = {}
    details: list[dict[str, Any]] = [{} for _ in range(n)]
    for rf in reward_fns:
        value, error = results[rf.name]
        if error is None and (not isinstance(value, (list, tuple)) or len(value) != n):
            error = f"returned {type(value).__name__} of length {len(value) if hasattr(value, '__len__') else '?'}, expected a list of {n}"
        if error is not None:
            log.warning("reward %s failed for the whole batch (%s); scoring %g", rf.name, error, rf.failure_value)
            failures[rf.name] = error
            value = [rf.failure_value] * n
        vals = [float("nan") if v is None or not math.isfinite(float(v)) else float(v) for v in value]
        per_reward[rf.name] = torch.tensor(vals, dtype=torch.float32)
        for i, d in enumerate(getattr(value, "details", None) or []):
            if d:
                details[i][rf.name] = d
        if error:
            for d in details:
                d[rf.name] = {"error": error}
    stacked = torch.stack([per_reward[rf.name] * rf.weight for rf in reward_fns])  # [R, N]
    total = torch.nansum(stacked, dim=0)
    return RewardResult(total=total, per_reward=per_reward, details=details, failures=failures, seconds=seconds)
