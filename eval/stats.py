"""Comparing runs across seeds: interquartile mean (IQM) with 95% stratified bootstrap CIs.

Why IQM and bootstrap (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice"):
with 3-10 seeds a mean is dominated by one lucky or broken run and a single run says nothing;
IQM discards the top and bottom quarter of (seed x task) scores and the stratified bootstrap
resamples seeds within each task, which gives honest intervals for few runs. We call rliable,
the authors' library, rather than re-implementing it.

>>> import numpy as np
>>> r = iqm_ci({"grpo": np.array([[0.1], [0.2], [0.3], [0.4]])}, reps=200, seed=0)
>>> round(r["grpo"]["iqm"], 3)
0.25
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

__all__ = ["iqm", "iqm_ci", "aggregate_ci"]


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries (scipy's 25%-trimmed mean, as rliable uses).

    >>> iqm(np.array([0.0, 1.0, 2.0, 100.0]))
    1.5
    """
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64).reshape(-1, 1)))


def _as_matrix(name: str, x: np.ndarray) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]  # [seeds] -> [seeds, 1 task]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"scores for {name!r} must be [num_seeds] or [num_seeds, num_tasks], got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"scores for {name!r} contain NaN/inf; drop or fix those runs first")
    return a


def _rliable_library():
    """``rliable.library``, importable with pandas >= 3.

    rliable 1.2 pins ``arch < 8``, and arch 7.x calls pandas' private
    ``deprecate_kwarg(old, new)`` which pandas 3 changed to ``deprecate_kwarg(klass, old, new)``
    (import fails with "missing 1 required positional argument: 'new_arg_name'"). arch 8 fixes
    the import but drops the ``random_state`` argument rliable passes. So when the plain import
    fails that way, we adapt the old call form for the duration of the import only.
    """
    try:
        from rliable import library
        return library
    except TypeError as exc:
        if "new_arg_name" not in str(exc):
            raise
    import sys

    import pandas.util._decorators as dec

    original = dec.deprecate_kwarg

    def compat(*args, **kwargs):
        if args and isinstance(args[0], str):  # arch 7.x: deprecate_kwarg(old, new)
            args = (FutureWarning, *args)
        return original(*args, **kwargs)

    for name in [m for m in sys.modules if m == "arch" or m.startswith("arch.") or m.startswith("rliable.library")]:
        del sys.modules[name]  # drop the half-imported modules
    dec.deprecate_kwarg = compat
    try:
        from rliable import library
    finally:
        dec.deprecate_kwarg = original
    return library


def aggregate_ci(scores_per_run: Mapping[str, np.ndarray], aggregate: Callable[[np.ndarray], float], *,
                 reps: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """Point estimate and stratified bootstrap CI of any aggregate (rliable ``get_interval_estimates``)."""
    library = _rliable_library()
    mats = {k: _as_matrix(k, v) for k, v in scores_per_run.items()}
    if not mats:
        raise ValueError("no runs given: pass {'name': array of per-seed scores}")
    # rliable draws from numpy's global RNG; fix it for reproducible intervals, then restore.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        points, cis = library.get_interval_estimates(
            mats, lambda x: np.array([aggregate(x)]), reps=reps, confidence_interval_size=confidence)
    finally:
        np.random.set_state(state)
    return {k: {"point": float(points[k][0]), "ci_low": float(cis[k][0, 0]), "ci_high": float(cis[k][1, 0]),
                "num_seeds": int(mats[k].shape[0]), "num_tasks": int(mats[k].shape[1])} for k in mats}


def iqm_ci(scores_per_seed: Mapping[str, np.ndarray], *, reps: int = 2000, confidence: float = 0.95,
           seed: int = 0) -> dict[str, dict[str, float]]:
    """IQM and its 95% stratified bootstrap CI for each named run set.

    Args:
        scores_per_seed: ``{"name": scores}``, scores of shape ``[num_seeds]`` or
            ``[num_seeds, num_tasks]`` (rliable's layout: runs x tasks).
        reps: bootstrap resamples.
        confidence: interval size (0.95 -> 2.5% and 97.5% percentiles).
        seed: bootstrap RNG seed (results are reproducible).

    Returns:
        ``{"name": {"iqm", "ci_low", "ci_high", "mean", "num_seeds", "num_tasks"}}``.
    """
    from rliable import metrics

    res = aggregate_ci(scores_per_seed, metrics.aggregate_iqm, reps=reps, confidence=confidence, seed=seed)
    out = {}
    for k, r in res.items():
        out[k] = {"iqm": r["point"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                  "mean": float(np.mean(np.asarray(scores_per_seed[k], dtype=np.float64))),
                  "num_seeds": r["num_seeds"], "num_tasks": r["num_tasks"]}
    return out
