"""What a sandbox job is and what comes back: the contract shared by every executor.

A *job* is one untrusted program plus the tests that judge it. Every executor (the local
warm-worker pool, the HTTP client, the SandboxFusion client) takes a batch of jobs and returns
one :class:`JobResult` per job, in job order. Failures of the program are *outcomes*, never
exceptions: a reward step must be able to score a fork bomb as "runtime_error" and move on.

Why the types look the way they do:

* Tests come in the forms the benchmarks use (MBPP/HumanEval asserts, APPS stdin/stdout, APPS
  call-based, a custom checker), because each needs a different verdict path on the trusted
  side: test code and expected values never enter the untrusted process.
* Everything is JSON-serialisable (``to_dict`` / ``from_dict``) so the HTTP service and its
  client move the very same objects.

>>> job = Job(program="def add(a, b):\\n    return a + b", tests=AssertTests(["assert add(1, 2) == 3"]))
>>> Job.from_dict(job.to_dict()) == job
True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, Sequence, Union, runtime_checkable

__all__ = [
    "Outcome", "AssertTests", "StdioTests", "CallTests", "CheckerTests", "Tests", "Limits",
    "Job", "TestResult", "JobResult", "Executor", "SandboxError",
]


class SandboxError(RuntimeError):
    """The sandbox itself cannot work (no isolation available, server unreachable, bad config).

    Raised only for problems of the *machinery*; a hostile or broken program is never an
    exception, it is an :class:`Outcome`.
    """


class Outcome(str, Enum):
    """How a job (or one test of it) ended. Ordered roughly from best to worst for rewards."""

    PASS = "pass"
    WRONG_ANSWER = "wrong_answer"
    RUNTIME_ERROR = "runtime_error"
    COMPILE_ERROR = "compile_error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    OUTPUT_LIMIT = "output_limit"
    SANDBOX_ERROR = "sandbox_error"  # the machinery failed (not the program's fault); retry


@dataclass(frozen=True)
class AssertTests:
    """MBPP / HumanEval style tests: ``assert`` statements (or any test code, for example
    ``check(entry_point)`` with HumanEval's ``check`` in ``setup_code``) run against the program.

    The test code runs in the sandbox's trusted judge, never in the program's process; each
    name the program defines is a proxy there whose calls return strictly serialised values
    (see docs/sandbox.md). ``setup_code`` (MBPP ``test_setup_code``, HumanEval helpers and
    ``check``) runs in the judge before the asserts; the program's process only gets its
    import statements.
    """

    asserts: list[str]
    setup_code: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "assert", "asserts": list(self.asserts), "setup_code": self.setup_code}


@dataclass(frozen=True)
class StdioTests:
    """APPS standard-input format: run the program once per case with ``inputs[i]`` on stdin.

    ``compare="apps"`` (default) judges the captured stdout exactly as the original APPS
    harness does, late fallbacks included (floats with allclose, then line- and token-order-
    insensitive sets of tokens, then tokens rounded to 3 decimals), so scores are comparable
    with published ones. ``compare="apps_fixed"`` is order-sensitive: lines with trailing
    whitespace stripped, then tokens, then float tokens with allclose (docs/code.md).
    """

    inputs: list[str]
    outputs: list[str]
    compare: str = "apps"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "stdio", "inputs": list(self.inputs), "outputs": list(self.outputs)}
        if self.compare != "apps":
            d["compare"] = self.compare
        return d


@dataclass(frozen=True)
class CallTests:
    """APPS call-based format: ``Solution().<fn_name>(*inputs[i])`` if the program defines a
    class ``Solution``, else ``<fn_name>(*inputs[i])``. ``compare="apps"`` (default) is the
    original harness: a first dict argument / expected dict gets int keys, a returned tuple is
    compared as a list, with ``expected`` or ``expected[0]``; ``compare="apps_fixed"`` converts
    tuples at every depth and keeps every argument (docs/code.md)."""

    fn_name: str
    inputs: list[list]
    outputs: list
    compare: str = "apps"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "call", "fn_name": self.fn_name, "inputs": list(self.inputs),
                             "outputs": list(self.outputs)}
        if self.compare != "apps":
            d["compare"] = self.compare
        return d


@dataclass(frozen=True)
class CheckerTests:
    """A custom checker: the program runs once per input (on stdin); ``checker`` is trusted
    Python source defining ``check(input: str, output: str, data) -> bool`` that decides each
    case. It runs in a separate judge process that never executes untrusted code; ``data[i]``
    (for example a reference answer) is passed to it and never to the program."""

    inputs: list[str]
    checker: str
    data: list[Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "checker", "inputs": list(self.inputs), "checker": self.checker,
                "data": None if self.data is None else list(self.data)}


Tests = Union[AssertTests, StdioTests, CallTests, CheckerTests]


def tests_from_dict(d: dict[str, Any]) -> Tests:
    """Inverse of ``Tests.to_dict``; raises ``ValueError`` naming the bad key."""
    if not isinstance(d, dict):
        raise ValueError(f"tests must be a JSON object, got {type(d).__name__}")
    kind = d.get("kind")
    try:
        if kind == "assert":
            return AssertTests(asserts=_str_list(d["asserts"], "asserts"),
                               setup_code=_str(d.get("setup_code", ""), "setup_code"))
        if kind == "stdio":
            return StdioTests(inputs=_str_list(d["inputs"], "inputs"),
                              outputs=_str_list(d["outputs"], "outputs"), compare=_compare(d))
        if kind == "call":
            inputs = d["inputs"]
            if not isinstance(inputs, list) or not all(isinstance(x, list) for x in inputs):
                raise ValueError("tests.inputs must be a list of argument lists")
            if not isinstance(d["outputs"], list):
                raise ValueError("tests.outputs must be a list")
            return CallTests(fn_name=_str(d["fn_name"], "fn_name"), inputs=inputs,
                             outputs=d["outputs"], compare=_compare(d))
        if kind == "checker":
            data = d.get("data")
            if data is not None and not isinstance(data, list):
                raise ValueError("tests.data must be a list or null")
            return CheckerTests(inputs=_str_list(d["inputs"], "inputs"),
                                checker=_str(d["checker"], "checker"), data=data)
    except KeyError as e:
        raise ValueError(f"tests of kind {kind!r} need the key {e.args[0]!r}") from None
    raise ValueError(f"tests.kind must be one of assert, stdio, call, checker; got {kind!r}")


def _compare(d: dict[str, Any]) -> str:
    c = d.get("compare", "apps")
    if c not in ("apps", "apps_fixed"):
        raise ValueError(f"tests.compare must be 'apps' or 'apps_fixed', got {c!r}")
    return c


def _str(x: Any, name: str) -> str:
    if not isinstance(x, str):
        raise ValueError(f"{name} must be a string, got {type(x).__name__}")
    return x


def _str_list(x: Any, name: str) -> list[str]:
    if not isinstance(x, list) or not all(isinstance(s, str) for s in x):
        raise ValueError(f"{name} must be a list of strings")
    return list(x)


@dataclass(frozen=True)
class Limits:
    """Resource limits of one job. Times are wall-clock seconds enforced from outside the
    untrusted process (the sandbox kills the whole process group and, if the worker does not
    answer, the parent kills the worker's whole namespace)."""

    time_per_test_s: float = 4.0
    time_total_s: float = 30.0
    memory_mb: int = 1024          # address-space limit (RLIMIT_AS) of the program
    max_processes: int = 16        # processes/threads the program may create (RLIMIT_NPROC)
    max_output_bytes: int = 1 << 20  # stdout + stderr per run; more -> OUTPUT_LIMIT
    max_file_bytes: int = 16 << 20   # largest file the program may write (RLIMIT_FSIZE)

    def validate(self) -> "Limits":
        """Reject nonsense early (negative times, zero memory) with a message naming the field."""
        for name in ("time_per_test_s", "time_total_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not (0 < v <= 3600):
                raise ValueError(f"Limits.{name} must be in (0, 3600] seconds, got {v!r}")
        for name, lo in (("memory_mb", 16), ("max_processes", 1), ("max_output_bytes", 1),
                         ("max_file_bytes", 0)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"Limits.{name} must be an integer >= {lo}, got {v!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        # (not dataclasses.asdict, which deep-copies each field: this runs once per job run)
        return {name: getattr(self, name) for name in _LIMIT_FIELDS}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Limits":
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ValueError("limits must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown limits keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d).validate()


_LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(Limits))


@dataclass(frozen=True)
class Job:
    """One program and its tests. ``stop_on_first_failure=False`` runs every test even after a
    failure (APPS "test case average"); the job outcome is still decided by the first failing
    test."""

    program: str
    tests: Tests
    limits: Limits = field(default_factory=Limits)
    stop_on_first_failure: bool = True
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"program": self.program, "tests": self.tests.to_dict(),
                "limits": self.limits.to_dict(),
                "stop_on_first_failure": self.stop_on_first_failure, "id": self.id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Job":
        if not isinstance(d, dict):
            raise ValueError(f"a job must be a JSON object, got {type(d).__name__}")
        if "program" not in d or "tests" not in d:
            raise ValueError("a job needs the keys 'program' and 'tests'")
        sofff = d.get("stop_on_first_failure", True)
        if not isinstance(sofff, bool):
            raise ValueError("stop_on_first_failure must be true or false")
        jid = d.get("id")
        if jid is not None and not isinstance(jid, str):
            raise ValueError("id must be a string or null")
        return cls(program=_str(d["program"], "program"), tests=tests_from_dict(d["tests"]),
                   limits=Limits.from_dict(d.get("limits")), stop_on_first_failure=sofff, id=jid)


@dataclass
class TestResult:
    """Verdict of one test case (``index`` into the job's tests)."""

    __test__ = False  # not a pytest class

    index: int
    outcome: Outcome
    detail: str = ""
    time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "outcome": self.outcome.value, "detail": self.detail,
                "time_s": self.time_s}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TestResult":
        return cls(index=int(d["index"]), outcome=Outcome(d["outcome"]),
                   detail=str(d.get("detail", "")), time_s=float(d.get("time_s", 0.0)))


@dataclass
class JobResult:
    """Verdict of one job. ``outcome`` is PASS only if every test passed; otherwise the outcome
    of the first failing test (COMPILE_ERROR if the program does not even compile/import).
    ``stdout``/``stderr`` are excerpts (truncated), ``memory_mb`` the peak resident set of the
    program when the OS reported it."""

    outcome: Outcome
    tests: list[TestResult] = field(default_factory=list)
    passed: int = 0
    total: int = 0
    stdout: str = ""
    stderr: str = ""
    time_s: float = 0.0
    memory_mb: float | None = None
    detail: str = ""
    id: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.PASS

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "tests": [t.to_dict() for t in self.tests],
                "passed": self.passed, "total": self.total, "stdout": self.stdout,
                "stderr": self.stderr, "time_s": self.time_s, "memory_mb": self.memory_mb,
                "detail": self.detail, "id": self.id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JobResult":
        return cls(outcome=Outcome(d["outcome"]),
                   tests=[TestResult.from_dict(t) for t in d.get("tests", [])],
                   passed=int(d.get("passed", 0)), total=int(d.get("total", 0)),
                   stdout=str(d.get("stdout", "")), stderr=str(d.get("stderr", "")),
                   time_s=float(d.get("time_s", 0.0)),
                   memory_mb=None if d.get("memory_mb") is None else float(d["memory_mb"]),
                   detail=str(d.get("detail", "")), id=d.get("id"))

    @classmethod
    def sandbox_error(cls, detail: str, total: int = 0, job_id: str | None = None) -> "JobResult":
        """A result for a job the machinery could not run (never the program's fault)."""
        return cls(outcome=Outcome.SANDBOX_ERROR, total=total, detail=detail, id=job_id)


@runtime_checkable
class Executor(Protocol):
    """Runs batches of jobs. All executors (local pool, HTTP, SandboxFusion) share it, so a
    reward function works unchanged from a laptop to a fleet of sandbox servers."""

    def run(self, jobs: Sequence[Job]) -> list[JobResult]:
        """Run ``jobs`` (concurrently, bounded) and return their results in job order."""
        ...

    async def arun(self, jobs: Sequence[Job]) -> list[JobResult]:
        """Async form of :meth:`run`, for reward functions that run inside an event loop."""
        ...

    def close(self) -> None:
        """Release workers / connections. Executors are also context managers."""
        ...

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc: object) -> None: ...
