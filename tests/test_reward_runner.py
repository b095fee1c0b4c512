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


# ------------------------------------------------------------- TRL 1.16's reward contract
def test_trl_reward_functions_work_unchanged():
    """TRL's own reward (it reads completion_ids) and a step-scheduled one (trainer_state)."""
    trl_rewards = pytest.importorskip("trl.rewards")
    from llmrl.rewards.runner import RewardFn, TrainerState

    overlong = trl_rewards.get_soft_overlong_punishment(max_completion_len=10, soft_punish_cache=4)
    fns = [RewardFn("overlong", overlong), *_fns({"name": "reward_fixtures:step_reward"},
                                                 {"name": "reward_fixtures:narrow_reward"})]
    ids = [[1] * 5, [1] * 8, [1] * 12]
    res = score(["p"] * 3, ["a", "bb", "ccc"], {"answer": ["x"] * 3}, fns, completion_ids=ids,
                trainer_state=TrainerState(global_step=3, max_steps=4))
    assert not res.failures
    assert res.per_reward["overlong"].tolist() == pytest.approx([0.0, -0.5, -1.0])
    assert res.per_reward["step_reward"].tolist() == pytest.approx([0.75] * 3)
    assert res.per_reward["narrow_reward"].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("name, reason", [("string_reward", "row 0 is str"),
                                           ("short_reward", "returned 1 values for 2 completions")])
def test_bad_values_are_a_logged_failure_naming_the_reward(name, reason, caplog):
    fns = _fns({"name": f"reward_fixtures:{name}", "failure_value": -1.0}, {"name": "reward_fixtures:length_reward"})
    res = score(["p", "p"], ["abc", "abcdef"], {}, fns)
    assert reason in res.failures[name]
    assert res.total.tolist() == pytest.approx([-0.5, 0.0])
    assert any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records)


def test_rows_no_reward_applies_to_are_counted_and_warned(caplog):
    fns = _fns({"name": "reward_fixtures:none_reward"})
    res = score(["p", "q"], ["a", "b"], {}, fns)
    assert res.all_none_rows == 2 and res.total.tolist() == [0.0, 0.0]
    msgs = [r.getMessage() for r in caplog.records]
    assert any("none_reward returned None" in m for m in msgs)
    assert any("2 of 2 completions got None from every reward" in m for m in msgs)
    assert score(["p"], ["abc"], {}, _fns({"name": "reward_fixtures:length_reward"})).all_none_rows == 0


def test_async_rewards_share_one_event_loop_across_calls():
    import reward_fixtures

    reward_fixtures._loops.clear()
    fns = _fns({"name": "reward_fixtures:loop_recording_reward"})
    for _ in range(3):
        score(["p"], ["a"], {}, fns)
    assert len(reward_fixtures._loops) == 3 and len({id(loop) for loop in reward_fixtures._loops}) == 1
    assert not reward_fixtures._loops[0].is_closed()


def test_duplicate_reward_names_are_refused():
    with pytest.raises(ValueError, match="two rewards are named 'length_reward'"):
        _fns({"name": "reward_fixtures:length_reward"}, {"name": "reward_fixtures:length_reward", "weight": 2})


def test_every_registered_reward_resolves():
    from llmrl.rewards.registry import REWARDS

    for name in REWARDS:
        assert callable(resolve_reward(name)), name
