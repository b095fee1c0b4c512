"""Benchmark loaders, prompt formats, and the reference solutions through the real harness:
MBPP 974/974, HumanEval 164/164, APPS 5/5 (CodeRL problems, first solution). Tests that read the
benchmarks' local copies carry ``requires_data`` (tests/conftest.py)."""
from __future__ import annotations

import json
import time

import pytest

from llmrl.eval.benchmarks import (apps_prompt, apps_tests, humaneval_tests, load_apps, load_humaneval, load_mbpp,
                                   mbpp_dataset, truncate_completion)
from llmrl.eval.harness import ProblemSamples, evaluate_completions, read_results
from llmrl.sandbox import CallTests, Limits, StdioTests, local_executor


@pytest.fixture(scope="module")
def executor():
    with local_executor() as ex:
        yield ex


def canonical(problems):
    return [ProblemSamples(p, [p.solutions[0]]) for p in problems]


# --------------------------------------------------------------------------- loaders
@pytest.mark.requires_data("mbpp")
def test_mbpp_standard_splits_and_prompt():
    # task_id ranges: 1-10 prompt, 11-510 test, 511-600 validation, 601-974 train
    sizes = {s: len(load_mbpp(s)) for s in ("prompt", "test", "validation", "train")}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    # sanitized: 7 / 257 / 43 / 120 (data README)
    assert [len(load_mbpp(s, variant="sanitized")) for s in ("prompt", "test", "validation", "train")] == [7, 257, 43, 120]
    p = load_mbpp("test")[0]
    assert p.task_id == "mbpp/11" and len(p.tests.asserts) == 3
    assert p.prompt.startswith("Write a python function to remove first and last occurrence")
    assert "\nYour code should satisfy these tests:\nassert remove_Occ(" in p.prompt
    assert "```python" in load_mbpp("test", style="instruct")[0].prompt


def test_apps_prompt_and_test_formats():
    # generate_gpt_codes.py: "\nQUESTION:\n" + question + "\n" + starter + "\nUse Call-Based format\nANSWER:\n"
    assert apps_prompt("Q?", "def f(x):", True) == "\nQUESTION:\nQ?\ndef f(x):\nUse Call-Based format\nANSWER:\n"
    assert apps_prompt("Q?", "", False) == "\nQUESTION:\nQ?\nUse Standard Input format\nANSWER:\n"
    t = apps_tests('{"fn_name": "g", "inputs": [[1, 2]], "outputs": [[3]]}')
    assert isinstance(t, CallTests) and t.fn_name == "g" and t.inputs == [[1, 2]]
    t = apps_tests({"inputs": [["1", "2"]], "outputs": ["3\n"]})  # list-of-lines input is joined
    assert isinstance(t, StdioTests) and t.inputs == ["1\n2"]


@pytest.mark.requires_data("apps")
def test_apps_offline_files():
    probs = load_apps(file="coderl5")
    assert [(p.task_id, p.difficulty, p.meta["io_format"]) for p in probs] == [
        ("apps/train/1", "interview", "stdin"), ("apps/train/111", "interview", "stdin"),
        ("apps/train/2287", "competition", "stdin"), ("apps/train/2404", "introductory", "call"),
        ("apps/train/4184", "introductory", "call")]
    assert len(load_apps()) == 128 and len(load_apps(difficulty="competition")) == 47
    with pytest.raises(ValueError, match="hub"):
        load_apps("test", source="local")


def test_humaneval_check_becomes_parent_judged_asserts():
    t = humaneval_tests("M = 1\n\ndef check(candidate):\n    assert candidate(1) == 2\n    assert candidate(2) == 3\n",
                        "inc")
    assert t.asserts == ["assert inc(1) == 2", "assert inc(2) == 3"] and t.setup_code == "M = 1"
    loop = "def check(candidate):\n    for i in range(3):\n        assert candidate(i) == i + 1\n"
    assert humaneval_tests(loop, "inc").asserts == ["check(inc)"]
    assert truncate_completion("    return 1\n\n\ndef g():\n    pass") == "    return 1\n\n"


@pytest.mark.requires_data("humaneval")
def test_humaneval_offline_count():
    assert len(load_humaneval()) == 164


@pytest.mark.requires_data("mbpp")
def test_dataset_builder_has_reward_columns():
    ds = mbpp_dataset(split="train", n=4, seed=0)
    assert set(ds.column_names) >= {"prompt", "tests", "program_prefix", "answer", "task_id"}
    assert json.loads(ds[0]["tests"])["kind"] == "assert"


# --------------------------------------------------------------------------- reference solutions
@pytest.mark.requires_data("mbpp")
def test_mbpp_canonical_solutions_all_pass_fast(executor, tmp_path):
    problems = load_mbpp("all")
    t0 = time.perf_counter()
    s = evaluate_completions(canonical(problems), total=len(problems), executor=executor, out_dir=tmp_path,
                             ks=[1], limits=Limits(time_per_test_s=20.0, time_total_s=60.0), chunk_size=1000, progress=False,
                             benchmark="mbpp")  # generous limits: mbpp/123 needs ~1 s idle, more under load
    seconds = time.perf_counter() - t0
    failed = {r["task_id"]: r["samples"][0] for r in read_results(tmp_path).values() if r["num_correct"] == 0}
    assert s["num_problems"] == 974
    print(f"MBPP canonical 974 problems: {seconds:.1f} s")  # speed is bench/sandbox_throughput.py's job
    assert not failed, failed  # every reference solution, including Counter/defaultdict returns and sys asserts
    assert s["pass@k"]["1"] == 1.0


@pytest.mark.requires_data("humaneval")
def test_humaneval_canonical_solutions_all_pass(executor, tmp_path):
    problems = load_humaneval()
    s = evaluate_completions(canonical(problems), total=164, executor=executor, out_dir=tmp_path, ks=[1],
                             limits=Limits(), progress=False)
    assert (s["num_problems"], s["pass@k"]["1"]) == (164, 1.0), s["outcomes"]


@pytest.mark.requires_data("apps")
def test_apps_reference_solutions_pass(executor, tmp_path):
    problems = load_apps(file="coderl5")
    s = evaluate_completions(canonical(problems), total=5, executor=executor, out_dir=tmp_path, ks=[1],
                             limits=Limits(), stop_on_first_failure=False, progress=False)
    assert s["num_problems"] == 5 and s["strict_accuracy"] == 1.0 and s["test_case_average"] == 1.0
    assert set(s["by_difficulty"]) == {"introductory", "interview", "competition"}
