"""Compare configurations over seeds and tasks: interval estimates, not single curves.

Reads run folders (what ``llmrl train`` writes: ``recipe.yaml``, ``metrics.jsonl``,
``summary.json``; what the benches write: ``result.json``; what ``llmrl eval`` writes:
``summary.json`` with pass@k per benchmark), groups them into configurations, and reports per
configuration the mean, median, interquartile mean (IQM) and optimality gap with 95% stratified
bootstrap CIs, the probability of improvement of each pair, performance profiles and learning
curves with CI bands (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice";
computed with rliable, the authors' library, through :mod:`llmrl.eval.stats`).

Layout of the scores: for each configuration a matrix ``[num_seeds, num_tasks]``; tasks are the
strata of the bootstrap (seeds are resampled within each task).

>>> import numpy as np
>>> rep = compare_scores({"a": np.array([[0.1], [0.2], [0.3], [0.4]]),
...                       "b": np.array([[0.5], [0.6], [0.7], [0.8]])}, reps=200)
>>> round(rep["aggregates"]["a"]["iqm"]["point"], 3), rep["probability_of_improvement"]["b > a"]["point"]
(0.25, 1.0)
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from llmrl.eval.stats import _as_matrix, _rliable_library

__all__ = ["Run", "load_run", "load_runs", "group_runs", "score_matrices", "compare_scores",
           "learning_curves", "paired_differences", "render_table", "plot_report", "write_html", "AGGREGATES"]

AGGREGATES = ("mean", "median", "iqm", "optimality_gap")


# --------------------------------------------------------------------------- reading runs
@dataclass
class Run:
    """One run folder: its configuration label, seed, and scores per task.

    ``scores[task][metric]`` are final scores; ``curves[metric]`` are ``(step, value)`` pairs and
    ``wall_s[step]`` the cumulative training seconds at that step (from ``perf/step_s``).
    """
    path: Path
    seed: int | None
    recipe: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    wall_s: dict[int, float] = field(default_factory=dict)
    samples_per_step: int | None = None
    label: str = ""


def _read_json(p: Path) -> Any:
    return json.loads(p.read_text()) if p.is_file() else None


def _dotted(d: Mapping[str, Any] | None, key: str) -> Any:
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _flat_numbers(d: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"pass@k": {"1": 0.3}}`` -> ``{"pass@k/1": 0.3, "pass@1": 0.3}`` (numbers only)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and math.isfinite(v):
            out[name] = float(v)
        elif isinstance(v, Mapping):
            out.update(_flat_numbers(v, name + "/"))
            if k == "pass@k":  # llmrl eval's layout: pass@k -> {"1": ..}; also offer "pass@1"
                out.update({f"{prefix}pass@{kk}": float(vv) for kk, vv in v.items() if isinstance(vv, (int, float))})
    return out


def load_run(path: str | Path) -> Run:
    """Read one run folder (trainer run, bench run with ``result.json``, or ``llmrl eval`` output).

    Where a metric is in several files, ``result.json`` (bench) wins over ``summary.json``, which
    wins over the last value in ``metrics.jsonl``.
    """
    import yaml

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; pass run folders (each with metrics.jsonl, summary.json or result.json)")
    recipe = yaml.safe_load((path / "recipe.yaml").read_text()) if (path / "recipe.yaml").is_file() else {}
    result = _read_json(path / "result.json")
    if isinstance(result, dict) and isinstance(result.get("result"), dict):  # bench/thr_steering.py layout
        result = result["result"]
    summary = _read_json(path / "summary.json")
    key = _read_json(path / "key.json")
    rows = []
    if (path / "metrics.jsonl").is_file():
        rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not (recipe or result or summary or rows):
        raise ValueError(f"{path}: no recipe.yaml, metrics.jsonl, summary.json or result.json; is it a run folder?")

    seed = _dotted(recipe, "trainer.seed")
    if seed is None and isinstance(result, dict):
        seed = result.get("seed")
    if seed is None:
        m = re.search(r"seed[_=-]?(\d+)", path.name)
        seed = int(m.group(1)) if m else None
    task = (_dotted(recipe, "data.name") or (summary or {}).get("benchmark") or (key or {}).get("benchmark") or "task")

    final: dict[str, float] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    wall: dict[int, float] = {}
    t = 0.0
    for r in rows:
        step = int(r.get("step", len(wall) + 1))
        t += float(r.get("perf/step_s", 0.0))
        wall[step] = t
        for k, v in r.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                curves.setdefault(k, []).append((step, float(v)))
                final[k] = float(v)
    if isinstance(result, dict) and result.get("evals"):  # bench runs keep their eval curve here
        curves.setdefault("eval/accuracy", [(int(s), float(a)) for s, a in result["evals"]])
    if isinstance(summary, dict):
        final.update(_flat_numbers(summary))
    if isinstance(result, dict):
        final.update(_flat_numbers({k: v for k, v in result.items() if k != "evals"}))
    pps, g = _dotted(recipe, "trainer.prompts_per_step"), _dotted(recipe, "rollout.num_generations")
    return Run(path=path, seed=None if seed is None else int(seed), recipe=recipe, scores={str(task): final},
               curves=curves, wall_s=wall, samples_per_step=int(pps * g) if pps and g else None)


def _default_label(run: Run) -> str:
    name = re.sub(r"(^|[_-])seed[_=-]?\d+", "", run.path.name).strip("_-")
    if not run.recipe:  # an `llmrl eval` folder: its benchmark is the task, not part of the configuration
        for task in run.scores:
            name = re.sub(rf"(^|[_-]){re.escape(task)}($|[_-])", r"\1", name).strip("_-")
    return name or run.path.parent.name


def _sort_key(values: tuple) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))
                 for v in values)


def group_runs(runs: Sequence[Run], group_by: Sequence[str] = ()) -> dict[str, list[Run]]:
    """Configurations: runs with equal values of the ``group_by`` recipe keys (dotted, e.g.
    ``algorithm.token_weighting.p``; a key missing from a recipe is looked up in the bench's
    result.json too). Without keys, the folder name with its ``seedN`` part removed."""
    out: dict[str, list[Run]] = {}
    order: dict[str, tuple] = {}
    for r in runs:
        if group_by:
            parts, raw = [], []
            for key in group_by:
                v = _dotted(r.recipe, key)
                if v is None:
                    v = r.scores[next(iter(r.scores))].get(key.split(".")[-1])
                if v is None:
                    raise ValueError(f"{r.path}: no value for --group-by {key!r} in recipe.yaml; "
                                     f"name a dotted recipe key such as algorithm.advantage")
                raw.append(v)
                parts.append(f"{key.split('.')[-1]}={v:+g}" if isinstance(v, float) else f"{key.split('.')[-1]}={v}")
            label = ",".join(parts)
            order[label] = tuple(raw)
        else:
            label = _default_label(r)
            order[label] = (label,)
        r.label = label
        out.setdefault(label, []).append(r)
    # configurations in the order of their values (p = -0.5, 0, +0.5), numbers numerically
    return {k: out[k] for k in sorted(out, key=lambda k: _sort_key(order[k]))}


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Run folders from the paths given; a path without run files of its own is searched one level
    down (so ``runs/bench_thr_steering`` finds its ``seed*_p*`` folders)."""
    runs: list[Run] = []
    for p in map(Path, paths):
        own = any((p / f).is_file() for f in ("metrics.jsonl", "summary.json", "result.json"))
        if own:
            runs.append(load_run(p))
            continue
        subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "warm", "before_"))
                      and any((d / f).is_file() for f in ("metrics.jsonl", "summary.json", "result.json"))) \
            if p.is_dir() else []
        if not subs:
            raise ValueError(f"{p}: no run folder there (none of metrics.jsonl, summary.json, result.json in it "
                             f"or in its subfolders)")
        runs += [load_run(d) for d in subs]
    return runs


def score_matrices(groups: Mapping[str, Sequence[Run]], metric: str
                   ) -> tuple[dict[str, np.ndarray], list[str], dict[str, list]]:
    """``{config: [num_seeds, num_tasks]}`` of ``metric`` (rows in seed order), the task names
    (the strata) and ``{config: seeds of the rows}``.

    Runs of one seed on several tasks (e.g. one ``llmrl eval`` folder per benchmark) fill one row.
    """
    tasks = sorted({t for rs in groups.values() for r in rs for t in r.scores})
    mats: dict[str, np.ndarray] = {}
    seeds: dict[str, list] = {}
    for label, rs in groups.items():
        by_seed: dict[Any, dict[str, float]] = {}
        for i, r in enumerate(rs):
            row = by_seed.setdefault(r.seed if r.seed is not None else f"#{i}", {})
            for task, sc in r.scores.items():
                if metric not in sc:
                    have = sorted(k for k in sc if not k.startswith(("perf/", "time/")))[:20]
                    raise ValueError(f"{r.path}: no metric {metric!r}; it has {have} (choose one with --metric)")
                row[task] = sc[metric]
        missing = [(s, t) for s, row in by_seed.items() for t in tasks if t not in row]
        if missing:
            raise ValueError(f"configuration {label!r}: seed {missing[0][0]} has no score on task {missing[0][1]!r}; "
                             f"every seed needs every task (stratified bootstrap)")
        seeds[label] = sorted(by_seed, key=lambda x: _sort_key((x,)))
        mats[label] = np.array([[row[t] for t in tasks] for _, row in sorted(by_seed.items(), key=lambda x: _sort_key((x[0],)))])
    return mats, tasks, seeds


def paired_differences(scores: Mapping[str, np.ndarray], seeds: Mapping[str, list], baseline: str, *,
                       reps: int = 2000, seed: int = 0) -> dict:
    """IQM with CI of ``config - baseline`` on the same seed (and task), for each other config."""
    from llmrl.eval.stats import iqm_ci

    if baseline not in scores:
        raise ValueError(f"--baseline {baseline!r} is not a configuration; they are {list(scores)}")
    diffs = {}
    for k in scores:
        if k == baseline:
            continue
        if seeds[k] != seeds[baseline]:
            raise ValueError(f"paired differences need the same seeds: {k!r} has {seeds[k]}, "
                             f"{baseline!r} has {seeds[baseline]}")
        diffs[k] = scores[k] - scores[baseline]
    return iqm_ci(diffs, reps=reps, seed=seed) if diffs else {}


# --------------------------------------------------------------------------- statistics
def _aggregate_fns(gap_threshold: float):
    from rliable import metrics

    return {"mean": metrics.aggregate_mean, "median": metrics.aggregate_median, "iqm": metrics.aggregate_iqm,
            "optimality_gap": lambda x: metrics.aggregate_optimality_gap(x, gap_threshold)}


def _with_seed(seed: int, fn):
    state = np.random.get_state()  # rliable draws from numpy's global RNG
    np.random.seed(seed)
    try:
        return fn()
    finally:
        np.random.set_state(state)


def compare_scores(scores: Mapping[str, np.ndarray], *, reps: int = 2000, confidence: float = 0.95,
                   gap_threshold: float = 1.0, seed: int = 0, profile_taus: Sequence[float] | None = None) -> dict:
    """Aggregates with stratified bootstrap CIs, probability of improvement, performance profiles.

    Args:
        scores: ``{config: [num_seeds, num_tasks]}`` (or ``[num_seeds]``: one task).
        gap_threshold: the optimality gap is ``mean(max(0, gap_threshold - score))`` (1.0 for
            accuracies / pass rates).

    Returns a JSON-ready dict: ``aggregates[config][mean|median|iqm|optimality_gap] =
    {point, ci_low, ci_high}``, ``probability_of_improvement["x > y"]`` for each ordered pair
    (P(X > Y) of a random seed of x over one of y, averaged over tasks; 0.5 = no difference),
    ``performance_profile`` (fraction of runs with score > tau, with CIs).
    """
    from rliable import metrics

    library = _rliable_library()
    mats = {k: _as_matrix(k, v) for k, v in scores.items()}
    if not mats:
        raise ValueError("no configurations to compare")
    fns = _aggregate_fns(gap_threshold)
    func = lambda x: np.array([fns[a](x) for a in AGGREGATES])
    points, cis = _with_seed(seed, lambda: library.get_interval_estimates(
        mats, func, reps=reps, confidence_interval_size=confidence))
    aggregates = {k: {a: {"point": float(points[k][i]), "ci_low": float(cis[k][0, i]), "ci_high": float(cis[k][1, i])}
                      for i, a in enumerate(AGGREGATES)} | {"num_seeds": int(mats[k].shape[0])} for k in mats}
    pairs = {f"{x} > {y}": (mats[x], mats[y]) for x in mats for y in mats if x != y}
    poi = {}
    if pairs:
        p_pts, p_cis = _with_seed(seed, lambda: library.get_interval_estimates(
            pairs, metrics.probability_of_improvement, reps=reps, confidence_interval_size=confidence))
        poi = {k: {"point": float(np.squeeze(p_pts[k])), "ci_low": float(np.squeeze(p_cis[k][0])),
                   "ci_high": float(np.squeeze(p_cis[k][1]))} for k in pairs}
    if profile_taus is None:
        lo = min(float(m.min()) for m in mats.values())
        hi = max(float(m.max()) for m in mats.values())
        profile_taus = np.linspace(lo - 1e-9, hi, 41) if hi > lo else np.array([lo - 1e-9, hi])
    taus = np.asarray(profile_taus, dtype=np.float64)
    prof, prof_ci = _with_seed(seed, lambda: library.create_performance_profile(mats, taus, reps=reps,
                                                                                confidence_interval_size=confidence))
    profile = {"tau": taus.tolist(), **{k: {"fraction": np.asarray(prof[k]).tolist(),
                                            "ci_low": np.asarray(prof_ci[k][0]).tolist(),
                                            "ci_high": np.asarray(prof_ci[k][1]).tolist()} for k in mats}}
    return {"aggregates": aggregates, "probability_of_improvement": poi, "performance_profile": profile,
            "confidence": confidence, "bootstrap_reps": reps, "gap_threshold": gap_threshold}


def learning_curves(groups: Mapping[str, Sequence[Run]], metric: str, *, reps: int = 500, seed: int = 0) -> dict:
    """Per configuration, at each step every run logged ``metric`` at: the IQM over runs with a
    95% stratified bootstrap CI, and the x positions in steps, samples (step x prompts_per_step x
    num_generations) and wall-clock (mean over runs of cumulative ``perf/step_s``)."""
    library = _rliable_library()
    from rliable import metrics

    out: dict[str, dict] = {}
    for label, rs in groups.items():
        series = [dict(r.curves.get(metric, [])) for r in rs]
        steps = sorted(set.intersection(*[set(s) for s in series])) if series and all(series) else []
        if not steps:
            continue
        vals = np.array([[s[t] for t in steps] for s in series])  # [runs, steps]
        pts, cis = _with_seed(seed, lambda: library.get_interval_estimates(
            {"c": vals}, lambda x: np.array([metrics.aggregate_iqm(x[:, [j]]) for j in range(x.shape[1])]),
            reps=reps))
        walls = [np.mean([r.wall_s.get(t, np.nan) for r in rs]) for t in steps]
        sps = rs[0].samples_per_step
        out[label] = {"step": steps, "samples": [t * sps for t in steps] if sps else None,
                      "wall_s": None if all(np.isnan(walls)) or not any(walls) else [float(w) for w in walls],
                      "iqm": pts["c"].tolist(), "ci_low": cis["c"][0].tolist(), "ci_high": cis["c"][1].tolist()}
    return out


# --------------------------------------------------------------------------- output
def render_table(report: dict, *, scale: float = 1.0, digits: int = 3) -> str:
    """Plain-text table: one line per configuration, point [CI] for each aggregate, then the
    probability of improvement of each pair."""
    f = lambda e: f"{e['point'] * scale:.{digits}f} [{e['ci_low'] * scale:.{digits}f}, {e['ci_high'] * scale:.{digits}f}]"
    aggs = report["aggregates"]
    width = max(12, *(len(k) for k in aggs))
    head = f"{'config':<{width}}  {'n':>3}  " + "  ".join(f"{a:<24}" for a in AGGREGATES)
    lines = [f"metric: {report.get('metric', '?')}   ({int(report['confidence'] * 100)}% stratified bootstrap CIs, "
             f"{report['bootstrap_reps']} resamples; tasks: {', '.join(report.get('tasks', []))})", head, "-" * len(head)]
    for k, v in aggs.items():
        lines.append(f"{k:<{width}}  {v['num_seeds']:>3}  " + "  ".join(f"{f(v[a]):<24}" for a in AGGREGATES))
    if report["probability_of_improvement"]:
        lines += ["", "probability of improvement P(X > Y) [CI]:"]
        for k, v in report["probability_of_improvement"].items():
            lines.append(f"  {k:<{2 * width + 3}}  {v['point']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]")
    if report.get("paired_minus_baseline"):
        pb = report["paired_minus_baseline"]
        lines += ["", f"paired difference vs {pb['baseline']} (same seed), IQM [CI]:"]
        for k, v in pb.items():
            if k != "baseline":
                lines.append(f"  {k:<{width}}  {v['iqm'] * scale:+.{digits}f} [{v['ci_low'] * scale:+.{digits}f}, "
                             f"{v['ci_high'] * scale:+.{digits}f}]")
    if report.get("adastop"):
        lines += ["", "AdaStop: " + report["adastop"]["message"]]
    return "\n".join(lines)


def plot_report(report: dict, path: str | Path, *, scale: float = 1.0) -> Path:
    """PNG: aggregates with CIs, performance profiles, probability of improvement, learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    aggs, curves = report["aggregates"], report.get("learning_curves") or {}
    names = list(aggs)
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(names)}
    n_curve = sum(1 for ax in ("step", "samples", "wall_s") if any(c.get(ax) for c in curves.values()))
    fig = plt.figure(figsize=(16, 8.5 + (4 if n_curve else 0)), constrained_layout=True)
    grid = fig.add_gridspec(3 if n_curve else 2, 4)
    fig.suptitle(f"{report.get('metric', '')}: {len(names)} configurations, "
                 f"{int(report['confidence'] * 100)}% stratified bootstrap CIs", fontsize=14)
    for i, a in enumerate(AGGREGATES):
        ax = fig.add_subplot(grid[0, i])
        for j, k in enumerate(names):
            e = aggs[k][a]
            ax.barh(j, (e["ci_high"] - e["ci_low"]) * scale, left=e["ci_low"] * scale, height=0.6,
                    color=colors[k], alpha=0.6)
            ax.plot([e["point"] * scale] * 2, [j - 0.3, j + 0.3], color="k", lw=2)
        ax.set_yticks(range(len(names)), names if i == 0 else [""] * len(names))
        ax.set_title({"median": "median (of task means)", "iqm": "IQM", "optimality_gap": "optimality gap (lower is better)"}
                     .get(a, a))
        ax.grid(axis="x", alpha=0.3)
    prof = report["performance_profile"]
    ax = fig.add_subplot(grid[1, :2])
    tau = np.array(prof["tau"]) * scale
    for k in names:
        ax.plot(tau, prof[k]["fraction"], color=colors[k], label=k, lw=2)
        ax.fill_between(tau, prof[k]["ci_low"], prof[k]["ci_high"], color=colors[k], alpha=0.2)
    ax.set_xlabel(f"{report.get('metric', 'score')} threshold tau")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_title("performance profiles")
    ax.legend()
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[1, 2:])
    poi = report["probability_of_improvement"]
    if poi:
        keys = list(poi)
        for j, k in enumerate(keys):
            e = poi[k]
            ax.barh(j, e["ci_high"] - e["ci_low"], left=e["ci_low"], height=0.6, color="tab:blue", alpha=0.5)
            ax.plot([e["point"]] * 2, [j - 0.3, j + 0.3], color="k", lw=2)
            ax.plot(e["point"], j, "o", color="k", ms=5)  # visible when the CI has no width (P = 0 or 1)
        ax.axvline(0.5, color="gray", ls="--")
        ax.set_yticks(range(len(keys)), [k.replace(" > ", "  >  ") for k in keys])
        ax.set_xlim(-0.02, 1.02)
    ax.set_title("probability of improvement P(X > Y)")
    ax.grid(axis="x", alpha=0.3)
    col, curve_row = 0, grid[2, :].subgridspec(1, n_curve) if n_curve else None
    for axis, label in (("step", "RL step"), ("samples", "samples (completions)"), ("wall_s", "training seconds")):
        if not any(c.get(axis) for c in curves.values()):
            continue
        ax = fig.add_subplot(curve_row[0, col])
        col += 1
        for k, c in curves.items():
            if c.get(axis):
                x = np.array(c[axis])
                ax.plot(x, np.array(c["iqm"]) * scale, color=colors.get(k), label=k, lw=2)
                ax.fill_between(x, np.array(c["ci_low"]) * scale, np.array(c["ci_high"]) * scale,
                                color=colors.get(k), alpha=0.2)
        ax.set_xlabel(label)
        ax.set_ylabel(f"{report.get('curve_metric', '')} IQM")
        ax.set_title(f"learning curve vs {label}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_html(report: dict, png: Path, path: str | Path) -> Path:
    """One self-contained HTML page: the table and the PNG (embedded)."""
    import base64
    import html

    img = base64.b64encode(Path(png).read_bytes()).decode()
    page = (f"<!doctype html><meta charset='utf-8'><title>llmrl compare: {html.escape(report.get('metric', ''))}</title>"
            f"<body style='font-family:sans-serif'><h2>llmrl compare: {html.escape(report.get('metric', ''))}</h2>"
            f"<pre>{html.escape(render_table(report))}</pre><img style='max-width:100%' src='data:image/png;base64,{img}'>"
            f"</body>")
    Path(path).write_text(page)
    return Path(path)
