"""Unit-test rewards for code: run the completion's program against hidden tests in the sandbox.

Spec: ``../shared/specs/rewards.md`` ("Code"). The program is the last fenced ```python block
of the completion, else the whole completion, appended to an optional per-row
``program_prefix`` (HumanEval prompts, the tiny task's ``def f(x):\\n    return ``). Each
program becomes one sandbox :class:`~llmrl.sandbox.Job`; verdicts are decided by the
sandbox's trusted parent (expected values never enter the untrusted process), and mapped to a
score by ``mode``:

* ``coderl`` (default; Le et al., 2022, "CodeRL", Sec. 3.2): pass +1.0, wrong answer -0.3,
  runtime error or timeout -0.6, compile error -1.0. The map is configurable (``levels``).
* ``fraction``: share of tests passed (APPS "test case average" as a reward).
* ``binary``: 1.0 if every test passes, else 0.0.

``relative_to_baseline`` subtracts the reward of a baseline program for the same row (CodeRL's
greedy-decoding baseline), read from the ``baseline_reward`` column or scored here from the
``baseline_completion`` column.

Dataset columns this reward reads (TRL passes them as keyword arguments):

* ``tests`` (required): the row's tests as ``Tests.to_dict()`` (a dict or its JSON string).
* ``program_prefix`` (optional): text placed before the extracted program.
* ``baseline_completion`` / ``baseline_reward`` (only with ``relative_to_baseline``).

Why it looks like this: the reward is called on a worker thread with a timeout by the trainer
(``llmrl.rewards.runner``), so it is a plain sync function; programs of one batch run
concurrently in the executor's warm pool; identical (program, tests) pairs run once (a sharpened
policy repeats itself a lot), and syntax errors are caught by ``compile`` in this process
without a sandbox round trip (compiling never executes the code).

Example (runs the real sandbox):
    >>> import json
    >>> from llmrl.sandbox import AssertTests
    >>> t = json.dumps(AssertTests(["assert f(2) == 4"]).to_dict())
    >>> code_reward(["p"] * 3, ["return x*2", "return x+3", "return ("], tests=[t] * 3,
    ...             program_prefix=["def f(x):\\n    "] * 3)
    [1.0, -0.3, -1.0]
"""
from __future__ import annotations

import atexit
import json
import re
import threading
import warnings
from collections import OrderedDict
from typing import Any, Literal, Mapping, Sequence

from llmrl.rewards.types import Scores, completion_text
from llmrl.sandbox.jobs import (
    Executor, Job, JobResult, Limits, Outcome, Tests,
)
from llmrl.sandbox.jobs import tests_from_dict as _tests_from_dict  # aliased: pytest collects test*

__all__ = [
    "CODERL_LEVELS", "code_reward", "extract_program", "build_program", "score_result",
    "result_details", "run_programs", "get_executor", "parse_tests", "ProgramCache",
]

Mode = Literal["coderl", "fraction", "binary"]

#: CodeRL outcome levels (CodeRL Sec. 3.2). MEMORY and OUTPUT_LIMIT are runtime failures of the
#: program, so they share the runtime-error level; SANDBOX_ERROR is the machinery's fault, not
#: the program's, so it scores None (the sample is left out) after one retry.
CODERL_LEVELS: dict[str, float] = {
    Outcome.PASS.value: 1.0,
    Outcome.WRONG_ANSWER.value: -0.3,
    Outcome.RUNTIME_ERROR.value: -0.6,
    Outcome.TIMEOUT.value: -0.6,
    Outcome.MEMORY.value: -0.6,
    Outcome.OUTPUT_LIMIT.value: -0.6,
    Outcome.COMPILE_ERROR.value: -1.0,
}

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3"}
_STDERR_EXCERPT = 400


# --------------------------------------------------------------------------- programs
def extract_program(completion: Any) -> str:
    """The program in a completion: the last fenced python block, else the whole text.

    A fence with no language tag counts as python; a block cut off by the length limit (no
    closing fence) is taken up to the end. Chat-format completions use the last message.

    >>> extract_program("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    >>> extract_program("x + 1")
    'x + 1'
    >>> extract_program("```python\\na = 1\\n```\\n```\\nb = 2\\n```")
    'b = 2\\n'
    """
    text = completion_text(completion)
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    return blocks[-1] if blocks else text


def build_program(completion: Any, prefix: str | None = None) -> str:
    """``prefix + extract_program(completion)``: what the sandbox runs.

    >>> build_program("x*2", "def f(x):\\n    return ")
    'def f(x):\\n    return x*2'
    """
    return (prefix or "") + extract_program(completion)


def parse_tests(tests: Any) -> Tests:
    """A row's ``tests`` column (``Tests``, dict, or JSON string) as a ``Tests`` object."""
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the 'tests' column holds a string that is not JSON ({exc}); store "
                             "json.dumps(tests.to_dict()) there") from None
    if isinstance(tests, dict):
        return _tests_from_dict(tests)
    if hasattr(tests, "to_dict"):
        return tests
    raise ValueError(f"the 'tests' column must hold Tests.to_dict() (dict or JSON string), got "
                     f"{type(tests).__name__}")


def _compile_error(program: str) -> str | None:
    """The SyntaxError message if ``program`` does not compile (nothing is executed)."""
    try:
        with warnings.catch_warnings():  # e.g. "invalid escape sequence": the sandbox's business
            warnings.simplefilter("ignore")
            compile(program, "<program>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------- executor
_EXECUTOR: Executor | None = None
_EXECUTOR_KEY: tuple | None = None
_EXECUTOR_LOCK = threading.Lock()


def get_executor(sandbox: str | Sequence[str] | Executor | None = None, *, workers: int | None = None,
                 token: str | None = None, unavailable_after_s: float = 30.0) -> Executor:
    """The process-wide executor (created once, reused across reward calls, closed at exit).

    Args:
        sandbox: an ``Executor`` (used as is), ``None``/``"local"`` (the warm local pool), or
            our ``llmrl sandbox serve`` servers: an ``http(s)://`` URL, several separated by
            commas, or a list of URLs (jobs fan out over them with failover, see
            :class:`~llmrl.sandbox.HTTPExecutor`).
        workers: local pool size (default: the executor's own default, one per CPU).
        token: bearer token of the servers (default: ``$LLMRL_SANDBOX_TOKEN``).
        unavailable_after_s: servers only: how long all of them may be down before a batch fails.
    """
    global _EXECUTOR, _EXECUTOR_KEY
    if sandbox is not None and not isinstance(sandbox, (str, list, tuple)):
        return sandbox
    urls = None if sandbox in (None, "local") else tuple(_server_urls(sandbox))
    key = (urls or "local", workers, token, unavailable_after_s)
    with _EXECUTOR_LOCK:
        if _EXECUTOR is not None and _EXECUTOR_KEY == key:
            return _EXECUTOR
        if _EXECUTOR is not None:
            _EXECUTOR.close()
        if urls is None:
            from llmrl.sandbox import local_executor

            _EXECUTOR = local_executor(workers=workers)
        else:
            from llmrl.sandbox import HTTPExecutor

            _EXECUTOR = HTTPExecutor(list(urls), token=token, unavailable_after_s=unavailable_after_s)
        _EXECUTOR_KEY = key
        return _EXECUTOR


def _server_urls(sandbox: str | Sequence[str]) -> list[str]:
    from llmrl.sandbox.hosts import parse_server_urls

    return parse_server_urls(sandbox, key="rewards.args.sandbox")


def check_code_args(args: Mapping[str, Any]) -> list[str]:
    """Problems with ``rewards.args`` values of the code reward, found when the recipe loads
    (the executor is built at the first reward call, after the model loaded)."""
    problems = []
    sandbox = args.get("sandbox")
    if sandbox is not None and sandbox != "local":
        if not isinstance(sandbox, (str, list, tuple)):
            problems.append(f"sandbox: {sandbox!r} must be 'local', an http(s):// URL, several separated by "
                            "commas, or a list of URLs")
        else:
            try:
                _server_urls(sandbox)
            except ValueError as exc:
                problems.append(str(exc).removeprefix("rewards.args."))
    wait = args.get("sandbox_unavailable_after_s", 30.0)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait <= 0:
        problems.append(f"sandbox_unavailable_after_s: {wait!r} must be a number of seconds > 0")
    return problems


@atexit.register
def _close_executor() -> None:
    global _EXECUTOR
    if _EXECUTOR is not None:
        try:
            _EXECUTOR.close()
        finally:
            _EXECUTOR = None


class ProgramCache:
    """Bounded LRU of verdicts keyed by (program, tests, limits). Thread-safe.

    Programs are judged deterministically by their tests, so a repeated (program, tests) pair
    needs no second run; a sharpened policy repeats its completions a lot. Sandbox errors and
    timeouts are never cached (they may depend on machine load)."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict[str, JobResult] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(job: Job) -> str:
        return json.dumps([job.program, job.tests.to_dict(), job.limits.to_dict(), job.stop_on_first_failure],
                          sort_keys=True, default=str)

    def get(self, key: str) -> JobResult | None:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key: str, result: JobResult) -> None:
        if self.size <= 0 or result.outcome in (Outcome.SANDBOX_ERROR, Outcome.TIMEOUT):
            return
        with self._lock:
            self._d[key] = result
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_CACHES: dict[int, ProgramCache] = {}


def _cache(size: int) -> ProgramCache | None:
    if size <= 0:
        return None
    if size not in _CACHES:
        _CACHES[size] = ProgramCache(size)
    return _CACHES[size]


def run_programs(jobs: Sequence[Job], executor: Executor, *, cache: ProgramCache | None = None,
                 retries: int = 1) -> list[JobResult]:
    """Run jobs, in order: compile errors decided here, duplicates run once, cache consulted,
    sandbox errors retried ``retries`` times (they are the machinery's fault)."""
    results: list[JobResult | None] = [None] * len(jobs)
    pending: dict[str, list[int]] = {}
    for i, job in enumerate(jobs):
        err = _compile_error(job.program)
        if err is not None:
            results[i] = JobResult(outcome=Outcome.COMPILE_ERROR, total=_num_tests(job.tests), detail=err,
                                   stderr=err, id=job.id)
            continue
        key = ProgramCache.key(job)
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            results[i] = hit
        else:
            pending.setdefault(key, []).append(i)
    for _attempt in range(retries + 1):
        if not pending:
            break
        keys = list(pending)
        try:
            out = executor.run([jobs[pending[k][0]] for k in keys])
        except Exception as exc:  # noqa: BLE001 - the machinery failed: every job is a sandbox error
            if getattr(exc, "fatal", False):  # e.g. a refused sandbox token: no retry can fix it
                raise
            out = [JobResult.sandbox_error(f"executor failed: {type(exc).__name__}: {exc}") for _ in keys]
        retry: dict[str, list[int]] = {}
        for k, res in zip(keys, out, strict=True):
            for i in pending[k]:
                results[i] = res
            if res.outcome is Outcome.SANDBOX_ERROR:
                retry[k] = pending[k]
            elif cache is not None:
                cache.put(k, res)
        pending = retry
    return [r if r is not None else JobResult.sandbox_error("not run") for r in results]


def _num_tests(tests: Tests) -> int:
    for name in ("asserts", "inputs"):
        if hasattr(tests, name):
            return len(getattr(tests, name))
    return 0


# --------------------------------------------------------------------------- scoring
def score_result(result: JobResult, mode: Mode = "coderl", levels: Mapping[str, float] | None = None) -> float | None:
    """Reward of one verdict; ``None`` for a sandbox error (not the program's fault).

    >>> score_result(JobResult(Outcome.WRONG_ANSWER, passed=2, total=4))
    -0.3
    >>> score_result(JobResult(Outcome.WRONG_ANSWER, passed=2, total=4), "fraction")
    0.5
    >>> score_result(JobResult(Outcome.PASS, passed=4, total=4), "binary")
    1.0
    """
    if result.outcome is Outcome.SANDBOX_ERROR:
        return None
    if mode == "binary":
        return 1.0 if result.outcome is Outcome.PASS else 0.0
    if mode == "fraction":
        if result.outcome is Outcome.PASS:
            return 1.0
        return result.passed / result.total if result.total else 0.0
    if mode == "coderl":
        table = {**CODERL_LEVELS, **(levels or {})}
        return float(table[result.outcome.value])
    raise ValueError(f"rewards.args.mode: {mode!r} is not one of coderl, fraction, binary")


def result_details(result: JobResult) -> dict[str, Any]:
    """What samples.jsonl shows for one sample: outcome, tests passed, the first failing test
    and a stderr excerpt (the tail, where the traceback's last line is)."""
    d: dict[str, Any] = {"outcome": result.outcome.value, "passed": result.passed, "total": result.total}
    failing = next((t for t in result.tests if t.outcome is not Outcome.PASS), None)
    if failing is not None:
        d["failing_test"] = failing.index
        if failing.detail:
            d["failing_detail"] = failing.detail[:_STDERR_EXCERPT]
    if result.detail and "failing_detail" not in d:
        d["detail"] = result.detail[:_STDERR_EXCERPT]
    if result.stderr:
        d["stderr"] = result.stderr[-_STDERR_EXCERPT:]
    return d


def _validate_levels(levels: Mapping[str, float] | None) -> None:
    if levels is None:
        return
    unknown = set(levels) - set(CODERL_LEVELS)
    if unknown:
        raise ValueError(f"rewards.args.levels: unknown outcome(s) {sorted(unknown)}; known: {sorted(CODERL_LEVELS)}")


# Recipe-only options (column names like "tests"/"test" are left out: a dataset may have both).
_OPTIONS = ("mode", "levels", "relative_to_baseline", "sandbox", "sandbox_token", "sandbox_unavailable_after_s",
            "workers", "time_per_test_s",
            "time_total_s", "memory_mb", "stop_on_first_failure", "cache_size")


def _check_option_typos(extra: Mapping[str, Any]) -> None:
    """Dataset columns and recipe args arrive as the same keyword arguments, so unknown names
    must be accepted; but one that is a near-spelling of an option is almost surely a typo in
    ``rewards.args`` that would otherwise be ignored silently."""
    import difflib

    for name in extra:
        # swapped letters (mdoe), a missing/extra plural s (worker), or a long near-miss
        close = [o for o in _OPTIONS if sorted(o) == sorted(name) or o in (name + "s", name[:-1])
                 or (len(name) >= 8 and difflib.SequenceMatcher(None, name, o).ratio() >= 0.9)]
        if close:
            raise ValueError(f"code_reward got {name!r}, which is not an option; did you mean {close[0]!r}? "
                             "Fix the key under rewards.args (or rename the dataset column).")


def code_reward(
    prompts: list,
    completions: list,
    *,
    tests: Sequence[Any],
    program_prefix: Sequence[str | None] | None = None,
    mode: Mode = "coderl",
    levels: Mapping[str, float] | None = None,
    relative_to_baseline: bool = False,
    baseline_completion: Sequence[Any] | None = None,
    baseline_reward: Sequence[float] | None = None,
    sandbox: str | Sequence[str] | Executor | None = None,
    sandbox_token: str | None = None,
    sandbox_unavailable_after_s: float = 30.0,
    workers: int | None = None,
    time_per_test_s: float = 4.0,
    time_total_s: float = 30.0,
    memory_mb: int = 1024,
    stop_on_first_failure: bool | None = None,
    cache_size: int = 0,
    **_unused_columns: Any,
) -> Scores:
    """Score each completion by running its program against the row's hidden tests.

    Args:
        prompts, completions: TRL reward signature; completions are strings or chat messages.
        tests: per row, ``Tests.to_dict()`` (dict or JSON string); see module docstring.
        program_prefix: per row, text placed before the extracted program (or None).
        mode: ``coderl`` (outcome levels), ``fraction`` (share of tests passed) or ``binary``.
        levels: overrides of :data:`CODERL_LEVELS` by outcome name (``{"wrong_answer": 0.0}``).
        relative_to_baseline: subtract the baseline program's reward (``baseline_reward``
            column, else ``baseline_completion`` scored here).
        sandbox: ``"local"`` (default), ``llmrl sandbox serve`` servers (a URL, several
            separated by commas, or a list: jobs fan out over them with failover), or an
            ``Executor``.
        sandbox_token: bearer token of those servers (default: ``$LLMRL_SANDBOX_TOKEN``); a
            refused token raises ``SandboxAuthError`` instead of scoring sandbox errors.
        sandbox_unavailable_after_s: how long every server may be down before the reward
            fails for the batch (``SandboxUnavailable`` naming the URLs); keep it below the
            reward's ``timeout_s``.
        workers: local pool size.
        time_per_test_s, time_total_s, memory_mb: sandbox limits per program.
        stop_on_first_failure: default True except in ``fraction`` mode, which needs every test.
        cache_size: remember this many verdicts across calls (0 = off).

    Returns:
        ``Scores``: one float per completion (None for a sandbox failure), with ``details``
        (outcome, passed/total, failing test, stderr excerpt) per sample.
    """
    _check_option_typos(_unused_columns)
    n = len(completions)
    if len(tests) != n:
        raise ValueError(f"code_reward got {n} completions but {len(tests)} 'tests' values; the dataset's "
                         "'tests' column must have one entry per row")
    if mode not in ("coderl", "fraction", "binary"):
        raise ValueError(f"rewards.args.mode: {mode!r} is not one of coderl, fraction, binary")
    _validate_levels(levels)
    prefixes = list(program_prefix) if program_prefix is not None else [None] * n
    limits = Limits(time_per_test_s=time_per_test_s, time_total_s=time_total_s, memory_mb=memory_mb).validate()
    stop = (mode != "fraction") if stop_on_first_failure is None else stop_on_first_failure
    # G completions per prompt share one tests value: parse each distinct value once. Keyed by
    # value, never by id(): a lazy column (datasets' Column) yields fresh objects whose ids repeat.
    parsed: dict[str, Tests] = {}
    row_tests = []
    for t in tests:
        k = t if isinstance(t, str) else json.dumps(t.to_dict() if hasattr(t, "to_dict") else t, sort_keys=True,
                                                    default=str)
        if k not in parsed:
            parsed[k] = parse_tests(t)
        row_tests.append(parsed[k])

    jobs = [Job(program=build_program(c, p), tests=t, limits=limits, stop_on_first_failure=stop, id=str(i))
            for i, (c, p, t) in enumerate(zip(completions, prefixes, row_tests, strict=True))]
    baseline_jobs: list[Job] = []
    if relative_to_baseline and baseline_reward is None:
        if baseline_completion is None:
            raise ValueError(
                "rewards.args.relative_to_baseline needs a 'baseline_reward' or 'baseline_completion' column "
                "(the greedy sample for each row); add one to the dataset or set relative_to_baseline: false")
        baseline_jobs = [Job(program=build_program(c, p), tests=t, limits=limits, stop_on_first_failure=stop,
                             id=f"baseline-{i}")
                         for i, (c, p, t) in enumerate(zip(baseline_completion, prefixes, row_tests, strict=True))]

    executor = get_executor(sandbox, workers=workers, token=sandbox_token,
                            unavailable_after_s=sandbox_unavailable_after_s)
    results = run_programs(jobs + baseline_jobs, executor, cache=_cache(cache_size))
    main, base = results[:n], results[n:]

    values: list[float | None] = []
    details: list[dict[str, Any]] = []
    for i, res in enumerate(main):
        v = score_result(res, mode, levels)
        d = result_details(res)
        if relative_to_baseline:
            b = float(baseline_reward[i]) if baseline_reward is not None else score_result(base[i], mode, levels)
            d["baseline"] = b
            v = None if v is None or b is None else v - b
        values.append(v)
        details.append(d)
    return Scores(values, details=details)


code_reward.check_args = check_code_args  # type: ignore[attr-defined]
