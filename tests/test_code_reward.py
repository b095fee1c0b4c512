"""The code reward on the real sandbox: extraction, CodeRL levels, modes, baseline, and hostile
programs that must never score as passing. Expected values are derived in the comments."""
from __future__ import annotations

import json
import time

import pytest

from llmrl.rewards.code import CODERL_LEVELS, code_reward, extract_program, score_result
from llmrl.rewards.runner import RewardFn, score
from llmrl.sandbox import AssertTests
from llmrl.sandbox.jobs import JobResult, Outcome

# f(x) = 2x: tests f(2) == 4, f(3) == 6, f(-1) == -2
TESTS = json.dumps(AssertTests(["assert f(2) == 4", "assert f(3) == 6", "assert f(-1) == -2"]).to_dict())
PASS, WRONG, RUNTIME, COMPILE = 1.0, -0.3, -0.6, -1.0  # CodeRL (Le et al., 2022, Sec. 3.2)


def reward(programs: list[str], **kw) -> list:
    kw.setdefault("time_per_test_s", 1.0)
    kw.setdefault("time_total_s", 5.0)
    return code_reward(["prompt"] * len(programs), programs, tests=[TESTS] * len(programs), **kw)


# --------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("completion, program", [
    ("def f(x):\n    return 2*x", "def f(x):\n    return 2*x"),                          # no fence: whole text
    ("Sure!\n```python\ndef f(x):\n    return 2*x\n```\nThis doubles.", "def f(x):\n    return 2*x\n"),
    ("```py\na = 1\n```\ntext\n```python\nb = 2\n```", "b = 2\n"),                        # the LAST block
    ("```\nc = 3\n```", "c = 3\n"),                                                        # untagged fence = python
    ("```python\nd = 4\n", "d = 4\n"),                                                     # cut off: no closing fence
    ("```bash\nls\n```", "```bash\nls\n```"),                                              # no python block: whole text
    ([{"role": "assistant", "content": "```python\ne = 5\n```"}], "e = 5\n"),              # chat format
])
def test_extract_program(completion, program):
    assert extract_program(completion) == program


# --------------------------------------------------------------------------- outcome levels
def test_coderl_levels_for_each_outcome():
    programs = [
        "def f(x):\n    return 2*x",            # all 3 pass                       -> +1.0
        "def f(x):\n    return x+2",            # f(2)=4 ok, f(3)=5 != 6           -> wrong answer -0.3
        "def f(x):\n    return 1/0",            # ZeroDivisionError                -> runtime error -0.6
        "def f(x):\n    while True: pass",      # never returns (1 s limit)        -> timeout -0.6
        "def f(x):\n    return (x",             # unclosed paren                   -> compile error -1.0
        "def f(x):\n    return [0] * 10**10",   # ~80 GB list, over the memory cap -> memory/runtime -0.6
    ]
    r = reward(programs)
    assert list(r) == [PASS, WRONG, RUNTIME, RUNTIME, COMPILE, RUNTIME]
    outcomes = [d["outcome"] for d in r.details]
    assert outcomes[:5] == ["pass", "wrong_answer", "runtime_error", "timeout", "compile_error"]
    assert outcomes[5] in ("memory", "runtime_error")
    # details: the failing test and an error excerpt for the logs
    assert r.details[1]["failing_test"] == 1 and r.details[1]["passed"] == 1
    assert "ZeroDivisionError" in json.dumps(r.details[2])
    assert "never closed" in r.details[4]["stderr"]


def test_fraction_and_binary_modes():
    # x*x passes f(2)==4 only (9 != 6, 1 != -2): fraction 1/3, binary 0; 2*x: 1.0 in both.
    programs = ["def f(x):\n    return x*x", "def f(x):\n    return 2*x", "def f(x):\n    return ("]
    frac = reward(programs, mode="fraction")
    assert list(frac) == pytest.approx([1 / 3, 1.0, 0.0])
    assert list(reward(programs, mode="binary")) == [0.0, 1.0, 0.0]


def test_custom_levels_override_the_default_map():
    r = reward(["def f(x):\n    return x+2"], levels={"wrong_answer": 0.0})
    assert list(r) == [0.0]
    with pytest.raises(ValueError, match="unknown outcome"):
        reward(["x"], levels={"wrong": 0.0})


def test_relative_to_greedy_baseline():
    # sample passes (+1.0), greedy baseline is a wrong answer (-0.3): 1.0 - (-0.3) = 1.3;
    # sample compile error (-1.0) vs baseline pass (+1.0): -2.0.
    r = reward(["def f(x):\n    return 2*x", "def f(x):\n    return ("], relative_to_baseline=True,
               baseline_completion=["def f(x):\n    return x+2", "def f(x):\n    return x*2"])
    assert list(r) == pytest.approx([1.3, -2.0])
    # or a precomputed baseline_reward column: 1.0 - 0.5 = 0.5
    assert list(reward(["def f(x):\n    return 2*x"], relative_to_baseline=True, baseline_reward=[0.5])) == [0.5]
    with pytest.raises(ValueError, match="baseline"):
        reward(["def f(x):\n    return 2*x"], relative_to_baseline=True)


def test_score_result_sandbox_error_is_not_the_programs_fault():
    assert score_result(JobResult(Outcome.SANDBOX_ERROR)) is None
    assert set(CODERL_LEVELS) == {o.value for o in Outcome} - {"sandbox_error"}


def test_program_prefix_and_chat_completions():
    # HumanEval-style: the completion is the body, appended to the prompt's def line.
    r = code_reward(["p"], [[{"role": "assistant", "content": "    return 2*x\n"}]], tests=[TESTS],
                    program_prefix=["def f(x):\n"])
    assert list(r) == [PASS]


# --------------------------------------------------------------------------- hostile programs
HOSTILE = {
    # exits before the asserts can run: no test ever passes -> runtime error
    "exit_before_asserts": ("import sys\nsys.exit(0)\ndef f(x):\n    return 2*x", RUNTIME),
    "os_exit_before_asserts": ("import os\nos._exit(0)\ndef f(x):\n    return 2*x", RUNTIME),
    # exits inside the call made by a test: the test did not complete -> runtime error
    "sys_exit_inside_test": ("import sys\ndef f(x):\n    sys.exit(0)", RUNTIME),
    "exit_builtin_inside_test": ("def f(x):\n    exit(0)", RUNTIME),
    # prints what a naive harness looks for, returns wrong values -> wrong answer
    "prints_passed": ("def f(x):\n    print('PASSED'); print('all tests passed'); return 0", WRONG),
    # disables AssertionError / assert helpers: verdicts are taken in the trusted parent -> wrong answer
    "overrides_assertionerror": ("import builtins\nclass N(Exception): pass\nbuiltins.AssertionError = N\n"
                                 "AssertionError = N\ndef f(x):\n    return 0", WRONG),
    # an always-equal object: rejected by the strict serialiser -> not a pass (wrong answer)
    "always_equal_object": ("class E:\n    def __eq__(self, o): return True\n    __hash__ = object.__hash__\n"
                            "def f(x):\n    return E()", WRONG),
    "int_subclass_equal": ("class I(int):\n    def __eq__(self, o): return True\n"
                           "def f(x):\n    return I(0)", WRONG),
    # monkeypatches the checker machinery it can reach: print, sys.stdout, the exit path
    "monkeypatches_checker": ("import sys, builtins\nsys.excepthook = lambda *a: None\n"
                              "builtins.print = lambda *a, **k: None\n"
                              "sys.stdout.write = lambda *a: 0\n"
                              "import atexit\natexit.register(lambda: print('PASS'))\n"
                              "def f(x):\n    return 0", WRONG),
    # kills its own process mid-test, after printing a fake verdict
    "fake_verdict_then_kill": ("import os, signal\ndef f(x):\n    print('{\"outcome\": \"pass\"}')\n"
                               "    os.kill(os.getpid(), signal.SIGKILL)", RUNTIME),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_never_pass(name):
    program, level = HOSTILE[name]
    [value] = reward([program])
    assert value != PASS
    assert value == level, reward([program]).details


def test_hostile_batch_is_scored_concurrently_and_bounded():
    # 8 infinite loops with a 1 s per-test limit on a 2-worker pool: at most ~4 s of sandbox
    # time (8 x 1 s / 2); the bound below leaves room for a loaded machine.
    programs = ["def f(x):\n    while True: pass"] * 4 + ["def f(x):\n    while 1: x += 1"] * 4
    t0 = time.perf_counter()
    r = reward(programs)
    assert list(r) == [RUNTIME] * 8 and all(d["outcome"] == "timeout" for d in r.details)
    assert time.perf_counter() - t0 < 30


def test_through_the_trainer_runner_with_its_timeout():
    # The trainer calls rewards on a worker thread with a timeout: a correct batch scores
    # normally; the per-call timeout is what bounds a reward stuck on a slow sandbox.
    fn = RewardFn("code", lambda prompts, completions, **cols: code_reward(prompts, completions, **cols),
                  timeout_s=60.0)
    res = score(["p", "p"], ["def f(x):\n    return 2*x", "def f(x):\n    return 3"],
                {"tests": [TESTS, TESTS]}, [fn])
    assert res.per_reward["code"].tolist() == pytest.approx([1.0, -0.3])
    assert res.details[1]["code"]["outcome"] == "wrong_answer"

    slow = RewardFn("code", lambda prompts, completions, **cols: code_reward(
        prompts, completions, time_per_test_s=30.0, time_total_s=60.0, **cols), timeout_s=1.0, failure_value=-1.0)
    t0 = time.perf_counter()
    res = score(["p"], ["def f(x):\n    while True: pass"], {"tests": [TESTS]}, [slow])
    assert time.perf_counter() - t0 < 5  # the step goes on after 1 s
    assert res.per_reward["code"].tolist() == [-1.0] and "timeout" in res.failures["code"]


def test_duplicate_programs_run_once_and_cache():
    # 50 copies of one program: one sandbox job; results identical.
    r = reward(["def f(x):\n    return 2*x"] * 50, cache_size=10)
    assert list(r) == [PASS] * 50


def test_bad_tests_column_says_what_to_store():
    with pytest.raises(ValueError, match="json.dumps"):
        code_reward(["p"], ["x"], tests=["not json"])
    with pytest.raises(ValueError, match="one entry per row"):
        code_reward(["p", "p"], ["x", "y"], tests=[TESTS])
    # a misspelt recipe arg is caught; other dataset columns pass through unused
    with pytest.raises(ValueError, match="did you mean 'mode'"):
        reward(["def f(x):\n    return 2*x"], mdoe="binary")
    assert list(reward(["def f(x):\n    return 2*x"], answer=["2*x"], task_id=["t"])) == [PASS]
