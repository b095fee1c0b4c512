"""llmrl.sandbox: run untrusted, model-generated code against tests, isolated and fast.

One API for every backend (see :mod:`llmrl.sandbox.jobs` for the types)::

    from llmrl.sandbox import Job, AssertTests, local_executor
    with local_executor() as ex:
        [res] = ex.run([Job("def f(x):\\n    return x + 1", AssertTests(["assert f(1) == 2"]))])
        assert res.outcome == "pass"

Backends: :func:`local_executor` (warm fork-server pool inside bubblewrap sandboxes),
:class:`HTTPExecutor` (our ``llmrl sandbox serve`` servers, batch spread over several),
:class:`SandboxFusionExecutor` (a SandboxFusion deployment's ``/run_code``).
:func:`isolation_report` says which isolation layers work on this machine.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmrl.sandbox.jobs import (
    AssertTests, CallTests, CheckerTests, Executor, Job, JobResult, Limits, Outcome,
    SandboxError, StdioTests, TestResult, Tests,
)

if TYPE_CHECKING:  # heavy / optional imports stay lazy so `import llmrl.sandbox` is cheap
    from llmrl.sandbox.client import HTTPExecutor, SandboxFusionExecutor
    from llmrl.sandbox.local import LocalExecutor

__all__ = [
    "AssertTests", "CallTests", "CheckerTests", "Executor", "Job", "JobResult", "Limits",
    "Outcome", "SandboxError", "StdioTests", "TestResult", "Tests", "local_executor",
    "LocalExecutor", "HTTPExecutor", "SandboxFusionExecutor", "isolation_report",
]


def local_executor(*, workers: int | None = None, isolation: str = "auto",
                   python: str | None = None) -> "LocalExecutor":
    """A pool of warm sandboxed workers on this machine.

    Args:
        workers: concurrent jobs (default: number of CPUs).
        isolation: "auto" (strongest the machine allows: bubblewrap namespaces, else Landlock +
            seccomp + rlimits), "bwrap" (require namespaces; error if unavailable), "light"
            (no namespaces: rlimits, Landlock, seccomp), or "none" (rlimits and process groups
            only; never chosen automatically).
        python: the interpreter that runs the slots and the programs (a path or a command on
            PATH; default: ``$LLMRL_SANDBOX_PYTHON``, else the one running llmrl). Any CPython
            >= 3.10: the slots use only its standard library (e.g. the version a data set expects).
    """
    from llmrl.sandbox.local import LocalExecutor
    return LocalExecutor(workers=workers, isolation=isolation, python=python)


def isolation_report() -> dict[str, bool | str]:
    """Which isolation layers work on this machine (probed, not guessed)."""
    from llmrl.sandbox.isolation import isolation_report as _report
    return _report()


def __getattr__(name: str) -> Any:
    if name in ("HTTPExecutor", "SandboxFusionExecutor"):
        from llmrl.sandbox import client
        return getattr(client, name)
    if name == "LocalExecutor":
        from llmrl.sandbox.local import LocalExecutor
        return LocalExecutor
    raise AttributeError(f"module 'llmrl.sandbox' has no attribute {name!r}")
