"""Score a batch with several rewards concurrently, each under a timeout.

The contract is TRL 1.16's: ``reward(prompts=, completions=, completion_ids=, trainer_state=,
**columns) -> list[float | None]``, so a TRL reward function (``trl.rewards.*`` or a user's)
works unchanged. A function without ``**kwargs`` gets only the arguments it names.

Design rule: rewards never block or kill training. A reward that raises, overruns its timeout or
returns something that is not one number (or None) per completion scores the whole batch with
its ``failure_value``; the reason, naming the reward, is logged and counted, and the step goes
on. Each sync call runs on its own daemon thread: a hung reward cannot be killed from Python,
but it cannot hold up the step either. Async rewards run on one persistent event loop (one
thread for the process), so a judge or search client keeps its session across steps.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import numbers
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from llmrl.rewards.registry import resolve_reward

log = logging.getLogger(__name__)


@dataclass
class TrainerState:
    """What TRL passes as ``trainer_state``: the fields of ``transformers.TrainerState`` that
    reward functions read to schedule themselves (for example a length penalty that grows with
    the step)."""

    global_step: int = 0
    max_steps: int = 0
    epoch: float | None = None
    is_world_process_zero: bool = True


@dataclass
class RewardFn:
    name: str
    fn: Callable
    weight: float = 1.0
    timeout_s: float = 60.0
    failure_value: float = 0.0


@dataclass
class RewardResult:
    """per_reward[name]: [N] float (nan = not applicable); total: [N] weighted sum.

    ``all_none_rows``: rows no reward applied to (every reward returned None); they score 0."""

    total: torch.Tensor
    per_reward: dict[str, torch.Tensor]
    details: list[dict[str, Any]]
    failures: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    all_none_rows: int = 0


def build_reward_fns(specs) -> list[RewardFn]:
    """From recipe ``rewards`` entries (RewardSpec) to callables with their args bound.

    Two rewards with the same short name are refused: their scores would land under one name
    (and, before, were summed twice)."""
    out: list[RewardFn] = []
    for spec in specs:
        fn = resolve_reward(spec.name)
        if spec.args:
            fn = functools.partial(fn, **spec.args)
        short = spec.name.rsplit(":", 1)[-1]
        if any(rf.name == short for rf in out):
            raise ValueError(duplicate_name_message(short))
        out.append(RewardFn(short, fn, spec.weight, spec.timeout_s, spec.failure_value))
    return out


def duplicate_name_message(short: str) -> str:
    return (f"rewards: two rewards are named {short!r}; each reward must appear once (to weigh one reward more, "
            "raise its weight; for two variants, register one under another name or wrap it in a function "
            "of your own)")


# ---------------------------------------------------------------- calling


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def reward_event_loop() -> asyncio.AbstractEventLoop:
    """The process's one event loop for async rewards, started on first use (daemon thread)."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="llmrl-reward-loop", daemon=True).start()
        return _loop


def is_reward_event_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the process's reward loop (clients may keep sessions on it)."""
    return loop is _loop


async def _awaited(awaitable):
    return await awaitable


def _accepted(fn: Callable, kwargs: dict[str, Any]) -> dict[str, Any]:
    """All of ``kwargs`` for a function with ``**kwargs`` (the TRL contract), else only the
    names it declares."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _run_with_timeout(rf: RewardFn, kwargs: dict[str, Any]) -> tuple[Any, str | None]:
    box: dict[str, Any] = {}

    def target():
        try:
            result = rf.fn(**_accepted(rf.fn, kwargs))
            if inspect.isawaitable(result):
                box["future"] = asyncio.run_coroutine_threadsafe(_awaited(result), reward_event_loop())
                result = box["future"].result()
            box["value"] = result
        except BaseException as exc:  # noqa: BLE001 - any failure is an outcome, not a crash
            box["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=target, name=f"reward-{rf.name}", daemon=True)
    thread.start()
    thread.join(rf.timeout_s)
    if thread.is_alive():
        if "future" in box:
            box["future"].cancel()
        return None, f"timeout after {rf.timeout_s:g}s"
    if "error" in box:
        return None, box["error"]
    return box["value"], None


def to_scores(value: Any, n: int) -> tuple[list[float], str | None]:
    """One float per row (None and non-finite -> nan), or the reason ``value`` is not that.

    >>> to_scores([1, None, 0.5], 3)
    ([1.0, nan, 0.5], None)
    >>> to_scores(["1.0", 2], 2)[1]
    "row 0 is str '1.0', not a number or None"
    """
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__len__"):
        return [], f"returned {type(value).__name__}, expected a list of {n} numbers or None"
    if len(value) != n:
        return [], f"returned {len(value)} values for {n} completions (one per completion expected)"
    out = []
    for i, v in enumerate(value):
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if v is None:
            out.append(float("nan"))
        elif isinstance(v, numbers.Real):
            f = float(v)
            out.append(f if math.isfinite(f) else float("nan"))
        else:
            return [], f"row {i} is {type(v).__name__} {v!r:.40}, not a number or None"
    return out, None


def score(prompts: list, completions: list, columns: dict[str, list], reward_fns: list[RewardFn], *,
          completion_ids: list[list[int]] | None = None, trainer_state: TrainerState | None = None) -> RewardResult:
    """Run every reward on the batch at once (threads), combine with weights.

    ``None`` from a reward means not applicable (TRL's convention): that reward is left out of
    the sample's sum; a sample no reward applies to scores 0 and is counted in
    ``all_none_rows`` with a warning.
    """
    n = len(completions)
    kwargs = dict(columns, prompts=prompts, completions=completions,
                  completion_ids=completion_ids, trainer_state=trainer_state or TrainerState())
    results: dict[str, tuple[Any, str | None]] = {}
    seconds: dict[str, float] = {}

    def run_one(rf: RewardFn):
        t0 = time.perf_counter()
        results[rf.name] = _run_with_timeout(rf, kwargs)
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
        vals: list[float] = []
        if error is None:
            vals, error = to_scores(value, n)
        if error is not None:
            log.warning("reward %s failed for the whole batch (%s); scoring %g", rf.name, error, rf.failure_value)
            failures[rf.name] = error
            vals = [float(rf.failure_value)] * n
            for d in details:
                d[rf.name] = {"error": error}
        else:
            for i, d in enumerate(getattr(value, "details", None) or []):
                if d and i < n:
                    details[i][rf.name] = d
            if n and all(math.isnan(v) for v in vals):
                log.warning("reward %s returned None (not applicable) for all %d completions", rf.name, n)
        per_reward[rf.name] = torch.tensor(vals, dtype=torch.float32)
    if reward_fns:
        stacked = torch.stack([per_reward[rf.name] * rf.weight for rf in reward_fns])  # [R, N]
        none_rows = torch.isnan(stacked).all(dim=0)
        total = torch.nansum(stacked, dim=0)
    else:
        none_rows = torch.ones(n, dtype=torch.bool)
        total = torch.zeros(n)
    all_none = int(none_rows.sum())
    if all_none:
        first = int(none_rows.nonzero()[0])
        log.warning("%d of %d completions got None from every reward and score 0 (first: prompt %r, completion %r); "
                    "make sure at least one reward applies to each row", all_none, n,
                    str(prompts[first])[:80] if first < len(prompts) else None, str(completions[first])[:80])
    return RewardResult(total=total, per_reward=per_reward, details=details, failures=failures, seconds=seconds,
                        all_none_rows=all_none)
