"""AdaStop (arXiv 2306.10882) through llmrl.eval.adastop: error rate under no difference, early
stop on a large effect, state kept between `llmrl compare --adastop` calls."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmrl.cli import app
from llmrl.eval.adastop import AdaStop

N, K, ALPHA, B = 5, 4, 0.05, 2000


def simulate(effect: float, sims: int, seed: int) -> tuple[float, list[int], list[dict]]:
    rng = np.random.default_rng(seed)
    wrong, used, results = 0, [], []
    for i in range(sims):
        test = AdaStop(["a", "b"], n=N, K=K, alpha=ALPHA, B=B, seed=i)
        res = test.run(lambda c, m: rng.normal(effect if c == "b" else 0.0, 1.0, m))
        wrong += res["decisions"]["a vs b"] != "equal"
        used.append(res["seeds_used"]["a"])
        results.append(res)
    return wrong / sims, used, results


def test_false_positive_rate_within_alpha_over_200_comparisons():
    rate, used, _ = simulate(0.0, 200, seed=0)
    print(f"AdaStop false-positive rate over 200 comparisons with no difference: {rate:.3f} (alpha {ALPHA})")
    # binomial(200, 0.05) has sd 0.015; alpha + 2 sd allows for Monte Carlo noise of a test at level alpha
    assert rate <= ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / 200)
    assert max(used) == N * K  # with no difference it mostly runs the whole budget


def test_large_effect_is_found_with_fewer_seeds_than_the_budget():
    _, used, results = simulate(2.0, 20, seed=1)  # b is 2 standard deviations better
    assert all(r["decisions"]["a vs b"] == "smaller" for r in results)  # a < b, every time
    print(f"AdaStop on a 2-sd effect: seeds per config {sorted(used)} (budget {N * K})")
    assert np.mean(used) < N * K / 2
    assert all(r["finished"] and not r["need_more"] for r in results)


def write_runs(root: Path, config: str, seeds: range, mean: float, rng) -> None:
    for s in seeds:
        d = root / f"{config}_seed{s}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"eval/accuracy": float(rng.normal(mean, 0.01))}))


def test_state_between_calls_equals_one_run(tmp_path):
    rng = np.random.default_rng(5)
    runs, state = tmp_path / "runs", tmp_path / "adastop.json"
    args = ["compare", str(runs), "--adastop", str(state), "--adastop-n", str(N), "--adastop-k", str(K),
            "--reps", "200", "--metric", "eval/accuracy"]
    write_runs(runs, "a", range(3), 0.50, rng)
    write_runs(runs, "b", range(3), 0.51, rng)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "run 2 more seed(s) of a, 2 more seed(s) of b" in res.output  # 3 of the 5 of interim 1
    assert json.loads(state.read_text())["interims"] == []
    write_runs(runs, "a", range(3, 5), 0.50, rng)
    write_runs(runs, "b", range(3, 5), 0.51, rng)
    res = CliRunner().invoke(app, args)
    saved = json.loads(state.read_text())
    assert len(saved["interims"]) == 1 and len(saved["interims"][0]["a"]) == N
    seeds = 5
    while "run " in res.output.splitlines()[-1]:
        write_runs(runs, "a", range(seeds, seeds + N), 0.50, rng)
        write_runs(runs, "b", range(seeds, seeds + N), 0.51, rng)
        seeds += N
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
    saved = json.loads(state.read_text())
    # the same scores through one in-process test give the same decision and seed count
    scores = {c: [s for it in saved["interims"] for _, s in it[c]] for c in ("a", "b")}
    one = AdaStop(["a", "b"], n=N, K=K, alpha=ALPHA, B=10_000, seed=0)
    r = one.run(lambda c, m, it={c: iter(scores[c]) for c in scores}: [next(it[c]) for _ in range(m)])
    assert f"a vs b: {r['decisions']['a vs b']}" in res.output
    assert r["seeds_used"]["a"] == sum(len(it["a"]) for it in saved["interims"])
    # a 1-point difference at sd 0.01 is a 1-sd effect: found before the budget runs out, as 'smaller'
    assert r["decisions"]["a vs b"] == "smaller"
    assert AdaStop.from_json(saved).result() == one.result()
