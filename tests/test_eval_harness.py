"""The eval harness end to end on the real sandbox: samples file -> results.jsonl, summary with
pass@k, outcome counts, resume; and the APPS stdin comparator's edge cases."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmrl.eval.cli import app
from llmrl.eval.harness import summarize
from llmrl.rewards.code import run_programs
from llmrl.sandbox import Job, Outcome, StdioTests, local_executor


def test_summarize_hand_computed():
    records = [  # problem A: 2 of 4 correct; problem B: 0 of 4
        {"task_id": "A", "difficulty": "introductory", "n": 4, "num_correct": 2, "test_case_average": 0.75,
         "outcomes": ["pass", "pass", "wrong_answer", "timeout"]},
        {"task_id": "B", "difficulty": "competition", "n": 4, "num_correct": 0, "test_case_average": 0.0,
         "outcomes": ["compile_error"] * 4},
    ]
    s = summarize(records, [1, 2, 10])
    # pass@1: (2/4 + 0) / 2 = 0.25; pass@2 of A: 1 - C(2,2)/C(4,2) = 1 - 1/6 = 5/6 -> (5/6 + 0) / 2
    assert s["pass@k"]["1"] == pytest.approx(0.25) and s["pass@k"]["2"] == pytest.approx(5 / 12)
    assert s["ks_skipped"] == [10]                       # k > n = 4 is not reported
    assert s["strict_accuracy"] == pytest.approx(0.25)   # mean share of all-pass samples
    assert s["test_case_average"] == pytest.approx(0.375)
    assert s["outcomes"] == {"compile_error": 4, "pass": 2, "wrong_answer": 1, "timeout": 1}
    assert s["by_difficulty"]["introductory"]["pass@k"]["1"] == pytest.approx(0.5)


@pytest.mark.requires_data("mbpp")
def test_cli_scores_a_samples_file_and_resumes(tmp_path):
    # MBPP task 11 (remove_Occ): one right and one wrong sample; task 12: one exception.
    right = ("def remove_Occ(s,ch):\n    i = s.find(ch)\n    if i >= 0: s = s[:i] + s[i+1:]\n"
             "    j = s.rfind(ch)\n    if j >= 0: s = s[:j] + s[j+1:]\n    return s")
    samples = tmp_path / "samples.jsonl"
    samples.write_text("\n".join(json.dumps(r) for r in [
        {"task_id": 11, "completion": f"```python\n{right}\n```"},
        {"task_id": "mbpp/11", "completion": "def remove_Occ(s, ch):\n    return s"},
        {"task_id": "mbpp/12", "completion": "def sort_matrix(m):\n    raise ValueError('no')"},
    ]) + "\n")
    out = tmp_path / "out"
    runner = CliRunner()
    res = runner.invoke(app, ["mbpp", "--samples", str(samples), "--k", "1,2,5", "--out", str(out),
                              "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    # task 11: n=2, c=1 -> pass@1 = 0.5; task 12: n=1, c=0. pass@1 = (0.5 + 0) / 2; k=2,5 > min n = 1
    assert summary["num_problems"] == 2 and summary["pass@k"] == {"1": pytest.approx(0.25)}
    assert summary["ks_skipped"] == [2, 5]
    assert summary["outcomes"] == {"pass": 1, "wrong_answer": 1, "runtime_error": 1}
    assert "pass@1" in res.output and "runtime_error" in res.output
    rec = {r["task_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert "ValueError" in json.dumps(rec["mbpp/12"]["samples"][0])
    # resume: nothing left to score, the file is not duplicated
    res = runner.invoke(app, ["mbpp", "--samples", str(samples), "--out", str(out), "--no-progress"])
    assert res.exit_code == 0 and "2 problems already scored" in res.output
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_cli_errors_name_the_fix(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["mbpp", "--no-progress"])
    assert res.exit_code == 2 and "exactly one of --model" in res.output


@pytest.mark.requires_data("humaneval")
def test_cli_unknown_task_id_exits_2(tmp_path):
    runner = CliRunner()
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"task_id": "nope/1", "completion": ""}\n')
    res = runner.invoke(app, ["humaneval", "--samples", str(bad), "--no-progress"])
    assert res.exit_code == 2 and "not in humaneval" in res.output


# APPS stdin comparison (original harness, testing_util.py): trailing whitespace per line and
# trailing newlines ignored; token-wise fallback; numbers compared with a float tolerance.
STDIO_CASES = [
    ("1 2\n3\n", "1 2\n3\n", True),             # identical
    ("1 2   \n3", "1 2\n3\n", True),            # trailing spaces and missing final newline
    ("1 2\n3\n\n\n", "1 2\n3", True),           # extra trailing blank lines
    ("  1 2\n3", "1 2\n3", True),               # leading spaces (original: lstrip per line)
    ("0.3333333333\n", "0.333333333333\n", True),  # float within tolerance
    ("0.5\n", "0.6\n", False),                  # float outside tolerance
    ("1 2\n4\n", "1 2\n3\n", False),            # a wrong number
    ("YES\n", "yes\n", False),                  # case matters
    ("", "1\n", False),                         # no output
]


@pytest.mark.parametrize("output, expected, same", STDIO_CASES)
def test_apps_stdin_comparator_edge_cases(output, expected, same):
    program = f"import sys\nsys.stdout.write({output!r})"
    with local_executor() as ex:
        [res] = run_programs([Job(program=program, tests=StdioTests(inputs=[""], outputs=[expected]))], ex)
    assert (res.outcome is Outcome.PASS) == same, res
