"""`llmrl compare`: interval estimates equal rliable's, bench/thr_steering.py folders read back to
the bench's own figures, eval pass@k folders as strata, a readable report."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from llmrl.cli import app
from llmrl.eval.compare import compare_scores, group_runs, load_runs, score_matrices
from llmrl.eval.stats import _rliable_library

REPO = Path(__file__).resolve().parent.parent
PS = [-0.5, 0.0, 0.5]
SEEDS = [0, 1, 2, 3, 4]


def fake_steering_runs(root: Path, *, steps: int = 150, eval_every: int = 25) -> list[dict]:
    """Folders as bench/thr_steering.py leaves them: <out>/seed{s}_p{p:+g}/ with result.json
    ({"settings", "result"}), the run's recipe.yaml and metrics.jsonl, plus warm/ and before_*/
    folders that are not runs of a p."""
    rng = np.random.default_rng(0)
    runs = []
    (root / "warm").mkdir(parents=True)
    (root / "before_model").mkdir()
    (root / "before_model" / "result.json").write_text(json.dumps({"settings": {}, "result": {"greedy": 0.27}}))
    for s in SEEDS:
        for p in PS:
            d = root / f"seed{s}_p{p:+g}"
            d.mkdir()
            recipe = {"data": {"name": "arithmetic"}, "rollout": {"num_generations": 8},
                      "trainer": {"seed": s, "prompts_per_step": 64},
                      "algorithm": {"token_weighting": {"type": "thr", "p": p}}}
            (d / "recipe.yaml").write_text(yaml.safe_dump(recipe))
            top = 0.39 + 0.03 * (p >= 0) + rng.normal(0, 0.01)
            evals = [(t, round(0.27 + (top - 0.27) * t / steps + rng.normal(0, 0.005), 4))
                     for t in range(eval_every, steps + 1, eval_every)]
            rows = [{"step": t, "reward/mean": 0.3, "perf/step_s": 0.5 + 0.1 * s,
                     **({"eval/accuracy": dict(evals)[t]} if t in dict(evals) else {})} for t in range(1, steps + 1)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            res = {"seed": s, "p": p, "greedy": float(np.mean([a for _, a in evals[-3:]])),
                   "greedy_final": evals[-1][1], "evals": evals, "pass@8": 0.83 + 0.02 * (p >= 0) + rng.normal(0, 0.005),
                   "pass@1": 0.35 + rng.normal(0, 0.01), "train_s": 60.0}
            (d / "result.json").write_text(json.dumps({"settings": {"steps": steps}, "result": res}))
            runs.append(res)
    return runs


def test_aggregates_and_probability_of_improvement_equal_rliable():
    from rliable import metrics

    library = _rliable_library()
    rng = np.random.default_rng(1)
    scores = {"a": rng.uniform(0, 1, (7, 3)), "b": rng.uniform(0.2, 1, (7, 3)), "c": rng.beta(2, 5, (7, 3))}
    rep = compare_scores(scores, reps=500, seed=3)
    for name, fn in [("iqm", metrics.aggregate_iqm), ("mean", metrics.aggregate_mean),
                     ("median", metrics.aggregate_median),
                     ("optimality_gap", lambda x: metrics.aggregate_optimality_gap(x, 1.0))]:
        np.random.seed(3)  # rliable's own call, same global-RNG seed
        pts, cis = library.get_interval_estimates(scores, lambda x: np.array([fn(x)]), reps=500)
        for k in scores:
            got = rep["aggregates"][k][name]
            assert got["point"] == pytest.approx(pts[k][0], abs=1e-12), (k, name)
            assert (got["ci_low"], got["ci_high"]) == pytest.approx((cis[k][0, 0], cis[k][1, 0]), abs=1e-12), (k, name)
    pairs = {f"{x} > {y}": (scores[x], scores[y]) for x in scores for y in scores if x != y}
    np.random.seed(3)
    pts, cis = library.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=500)
    for k in pairs:
        got = rep["probability_of_improvement"][k]
        assert got["point"] == pytest.approx(float(np.squeeze(pts[k])), abs=1e-12)
        assert (got["ci_low"], got["ci_high"]) == pytest.approx(
            (float(np.squeeze(cis[k][0])), float(np.squeeze(cis[k][1]))), abs=1e-12)
    # P(X > Y) + P(Y > X) = 1 (ties count half)
    assert rep["probability_of_improvement"]["a > b"]["point"] + rep["probability_of_improvement"]["b > a"]["point"] \
        == pytest.approx(1.0)


def test_compare_reads_thr_steering_folders_and_reproduces_the_bench_summary(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import thr_steering
    finally:
        sys.path.remove(str(REPO / "bench"))
    runs = fake_steering_runs(tmp_path / "steer")
    before = {s: {"greedy": 0.27, "pass@8": 0.73, "pass@1": 0.2} for s in SEEDS}
    bench = thr_steering.summarise(runs, before, PS, SEEDS, 8)  # what the bench prints (and the docs table shows)
    out = tmp_path / "cmp.json"
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "steer"), "--metric", "greedy",
                                   "--group-by", "algorithm.token_weighting.p", "--baseline", "p=+0",
                                   "--json", str(out), "--png", str(tmp_path / "r.png"), "--percent"])
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert list(rep["aggregates"]) == ["p=-0.5", "p=+0", "p=+0.5"]
    for name, e in bench["greedy"]["score"].items():
        got = rep["aggregates"][name]
        assert got["num_seeds"] == 5
        assert round(got["iqm"]["point"], 4) == e["iqm"]
        assert (round(got["iqm"]["ci_low"], 4), round(got["iqm"]["ci_high"], 4)) == (e["ci_low"], e["ci_high"])
    for name, e in bench["greedy"]["paired_minus_p0"].items():
        got = rep["paired_minus_baseline"][name]
        assert (round(got["iqm"], 4), round(got["ci_low"], 4), round(got["ci_high"], 4)) == \
            (e["iqm"], e["ci_low"], e["ci_high"])
    # the table a person reads shows the same figure (in points)
    e = bench["greedy"]["score"]["p=+0.5"]
    assert f"{100 * e['iqm']:.1f} [{100 * e['ci_low']:.1f}, {100 * e['ci_high']:.1f}]" in res.output
    # learning curves: eval/accuracy at the eval steps, in samples (64 x 8 per step) and seconds
    c = rep["learning_curves"]["p=+0"]
    assert c["step"] == [25, 50, 75, 100, 125, 150]
    assert c["samples"][0] == 25 * 64 * 8
    assert c["wall_s"][-1] == pytest.approx(np.mean([150 * (0.5 + 0.1 * s) for s in SEEDS]))
    assert all(lo <= m <= hi for lo, m, hi in zip(c["ci_low"], c["iqm"], c["ci_high"]))
    assert (tmp_path / "r.png").stat().st_size > 20_000


def test_eval_pass_at_k_folders_are_strata(tmp_path):
    """`llmrl eval` summaries (one folder per model seed and benchmark): the benchmark is the task,
    seeds are resampled within each benchmark."""
    rng = np.random.default_rng(2)
    truth = {}
    for cfg, base in (("grpo", 0.3), ("ppo", 0.4)):
        for s in range(4):
            for bench, off in (("mbpp", 0.0), ("apps", -0.2)):
                v = base + off + rng.normal(0, 0.02)
                truth[cfg, s, bench] = v
                d = tmp_path / f"{cfg}_seed{s}_{bench}"
                d.mkdir()
                (d / "summary.json").write_text(json.dumps({"benchmark": bench, "num_problems": 10,
                                                            "pass@k": {"1": v, "8": min(1.0, 2 * v)}}))
    groups = group_runs(load_runs([tmp_path]))
    mats, tasks, seeds = score_matrices(groups, "pass@1")
    assert list(groups) == ["grpo", "ppo"] and tasks == ["apps", "mbpp"] and seeds["ppo"] == [0, 1, 2, 3]
    assert mats["ppo"].shape == (4, 2)
    assert mats["ppo"][2, 1] == truth["ppo", 2, "mbpp"]
    rep = compare_scores(mats, reps=300)
    assert rep["probability_of_improvement"]["ppo > grpo"]["point"] == 1.0  # ppo better on every benchmark
    # the bootstrap is stratified: it never mixes benchmarks, so a CI of the mean stays within the
    # range of the per-benchmark means of resampled seeds
    lo, hi = rep["aggregates"]["ppo"]["mean"]["ci_low"], rep["aggregates"]["ppo"]["mean"]["ci_high"]
    col_min, col_max = mats["ppo"].min(0).mean(), mats["ppo"].max(0).mean()
    assert col_min <= lo <= hi <= col_max


def test_errors_name_the_fix(tmp_path):
    fake_steering_runs(tmp_path / "s")
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--metric", "nope"])
    assert res.exit_code == 2 and "no metric 'nope'" in res.output and "greedy" in res.output
    res = CliRunner().invoke(app, ["compare", str(tmp_path / "s"), "--metric", "greedy", "--group-by", "x.y"])
    assert res.exit_code == 2 and "--group-by 'x.y'" in res.output


def test_seed_bench_summary_comes_with_its_interval(tmp_path, capsys):
    """bench/code_learning.py --summarize-only (the shared bench/_seeds.py loop) reads finished seeds
    and reports the delta with an IQM and CI; `llmrl compare` reads the same folders."""
    from llmrl.eval.stats import iqm_ci

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import code_learning
    finally:
        sys.path.remove(str(REPO / "bench"))
    evals = {0: [(0, 0.30), (24, 0.35), (48, 0.40)], 1: [(0, 0.28), (24, 0.31), (48, 0.39)],
             2: [(0, 0.33), (24, 0.33), (48, 0.45)]}
    for s, ev in evals.items():
        d = tmp_path / f"seed{s}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"seed": s, "before": ev[0][1], "after_final": ev[-1][1],
                                                   "evals": ev, "rl_train_seconds": 1.0}))
    out = code_learning.main(["--seeds", "0", "1", "2", "--summarize-only", "--out", str(tmp_path),
                              "--last-evals", "2"])
    want = [round(100 * ((ev[1][1] + ev[2][1]) / 2 - ev[0][1]), 2) for ev in evals.values()]
    assert [r["delta_points"] for r in out["seeds"]] == want
    assert out["delta_iqm_ci"] == iqm_ci({"d": np.array(want)})["d"]
    res = CliRunner().invoke(app, ["compare", str(tmp_path), "--metric", "after_final", "--reps", "200"])
    assert res.exit_code == 0, res.output
    assert "n" in res.output and "  3  " in res.output  # one configuration, three seeds


@pytest.mark.parametrize("name", ["llmrl.eval.compare", "llmrl.eval.adastop"])
def test_doctests(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
