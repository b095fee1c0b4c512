"""pass@k against the binomial definition, and the statistics helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from llmrl.eval.passk import mean_pass_at_k, parse_ks, pass_at_k, valid_ks
from llmrl.eval.stats import iqm, iqm_ci


@pytest.mark.parametrize("n", [1, 2, 5, 10, 20, 50, 100])
def test_pass_at_k_matches_math_comb_on_a_grid(n):
    # definition (Chen et al., 2021, eq. 1): 1 - C(n-c, k) / C(n, k), with C(a, b) = 0 for b > a
    for c in range(n + 1):
        for k in range(1, n + 1):
            exact = 1.0 - math.comb(n - c, k) / math.comb(n, k)
            assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-9, abs=1e-12), (n, c, k)


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)         # c/n for k = 1
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)          # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 1, 5) == 1.0
    # stable at large n where binomials overflow floats: 1 - (1 - 1/1000) ** 0 ... c=1, k=1 -> 1/1000
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    assert 0.0 < pass_at_k(2000, 3, 100) < 1.0


def test_pass_at_k_refuses_k_above_n_and_bad_counts():
    with pytest.raises(ValueError, match="k must be in"):
        pass_at_k(5, 1, 10)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)
    assert valid_ks([1, 10, 100], 10) == [1, 10]
    assert mean_pass_at_k([(2, 1), (2, 0)], 1) == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert parse_ks("10, 1,1") == [1, 10]
    with pytest.raises(ValueError, match="positive integer"):
        parse_ks("1,x")


def test_iqm_and_bootstrap_ci():
    # IQM of 0, 1, 2, 100: drop the lowest and highest quarter -> mean(1, 2) = 1.5
    assert iqm(np.array([0.0, 1.0, 2.0, 100.0])) == pytest.approx(1.5)
    scores = {"a": np.array([0.10, 0.12, 0.14, 0.16]), "b": np.array([0.30, 0.31, 0.33, 0.35])}
    r = iqm_ci(scores, reps=200, seed=0)
    # IQM of a: mean of the middle two = (0.12 + 0.14) / 2 = 0.13
    assert r["a"]["iqm"] == pytest.approx(0.13)
    assert r["a"]["mean"] == pytest.approx(0.13)
    for k in r:
        assert r[k]["ci_low"] <= r[k]["iqm"] <= r[k]["ci_high"] and r[k]["num_seeds"] == 4
    assert r["a"]["ci_high"] < r["b"]["ci_low"]  # clearly separated runs have disjoint CIs
    assert iqm_ci({"a": scores["a"]}, reps=200, seed=0)["a"] == r["a"]  # reproducible
    with pytest.raises(ValueError, match="NaN"):
        iqm_ci({"x": np.array([0.1, np.nan])})
