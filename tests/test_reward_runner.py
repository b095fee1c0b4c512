"""Rewards never kill the step: raising and hanging rewards become scored failures."""
import time

import pytest

from llmrl.config.schema import RewardSpec
from llmrl.rewards.registry import resolve_reward
from llmrl.rewards.runner import build_reward_fns, score


def _fns(*specs):
    return build_reward_fns([RewardSpec(**s) for s in specs])


def test_weighted_sum_and_async_reward():
    fns = _fns({"name": "reward_fixtures:length_reward", "weight": 2.0},
               {"name": "reward_fixtures:async_digit_reward"})
    res = score(["p", "p"], ["abc", "a1"], {}, fns)
    # "abc": 2 * 3/6 + 0 = 1.0 ; "a1": 2 * 2/6 + 1 = 1.6667
    assert res.total.tolist() == pytest.approx([1.0, 5 / 3])
    assert not res.failures


def test_raising_and_hanging_rewards_are_failures_not_crashes():
    fns = _fns({"name": "reward_fixtures:raising_reward", "failure_value": -1.0},
               {"name": "reward_fixtures:hanging_reward", "timeout_s": 0.5},
               {"name": "reward_fixtures:length_reward"})
    t0 = time.perf_counter()
    res = score(["p"], ["abcdef"], {}, fns)
    assert time.perf_counter() - t0 < 5  # the hung reward did not hold up the batch
    assert "RuntimeError" in res.failures["raising_reward"]
    assert "timeout" in res.failures["hanging_reward"]
    # -1 (raising) + 0 (timeout failure value) + 1 (length 6/6)
    assert res.total.tolist() == [0.0]
    assert res.details[0]["hanging_reward"]["error"].startswith("timeout")


def test_none_means_not_applicable():
    fns = _fns({"name": "reward_fixtures:none_reward"}, {"name": "reward_fixtures:length_reward"})
    res = score(["p"], ["abc"], {}, fns)
    assert res.total.tolist() == [0.5]


def test_unknown_reward_name_suggests():
    with pytest.raises(ValueError, match="Did you mean 'math'"):
        resolve_reward("maths")
