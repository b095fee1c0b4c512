"""`llmrl sandbox ...`: check which isolation layers work, serve the HTTP API, run job files."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Run, serve and check the code sandbox.")

ISOLATION_HELP = "auto | bwrap | light | none"


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _isolation(value: str) -> str:
    from llmrl.sandbox.isolation import ISOLATION_MODES
    if value not in ISOLATION_MODES:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(ISOLATION_MODES)}")
    return value


_ISOLATION = typer.Option("auto", help=ISOLATION_HELP, callback=_isolation)
_TOKEN_HELP = "bearer token of the servers (default: $LLMRL_SANDBOX_TOKEN)"
_PYTHON = typer.Option(None, envvar="LLMRL_SANDBOX_PYTHON",
                       help="interpreter that runs the slots and the programs: any CPython >= 3.10 "
                            "(default: the one running llmrl)")


def _checked_python(python: Optional[str]) -> Optional[str]:
    from llmrl.sandbox.isolation import slot_python
    try:
        slot_python(python)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--python") from None
    return python


@app.command()
def check(isolation: str = _ISOLATION, python: Optional[str] = _PYTHON,
          as_json: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """Probe this machine and a real sandbox slot; print which isolation layers are active."""
    from llmrl.sandbox.isolation import isolation_report
    rep = isolation_report(isolation, python=_checked_python(python))
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
    else:
        width = max(len(k) for k in rep)
        for k, v in rep.items():
            mark = "yes" if v is True else "NO" if v is False else str(v)
            typer.echo(f"{k:<{width}}  {mark}")
    if rep.get("mode") == "unavailable":
        raise typer.Exit(1)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="interface to bind (keep it private)"),
          port: int = typer.Option(8910, min=1, max=65535, help="TCP port"),
          workers: Optional[int] = typer.Option(None, min=1, help="concurrent jobs (default: CPUs)"),
          isolation: str = _ISOLATION,
          python: Optional[str] = _PYTHON,
          token: Optional[str] = typer.Option(None, envvar="LLMRL_SANDBOX_TOKEN",
                                              help="require 'Authorization: Bearer TOKEN'"),
          max_body_mb: int = typer.Option(16, help="largest request body accepted (MiB)"),
          max_jobs_per_request: int = typer.Option(1024, help="largest batch per request"),
          max_queued_jobs: Optional[int] = typer.Option(None, help="jobs in flight before 503 "
                                                        "(default 64 x workers)"),
          max_time_per_test_s: float = typer.Option(60.0, help="cap on any job's time_per_test_s"),
          max_time_total_s: float = typer.Option(300.0, help="cap on any job's time_total_s"),
          max_memory_mb: int = typer.Option(2048, help="cap on any job's memory_mb"),
          max_processes: int = typer.Option(64, help="cap on any job's max_processes"),
          max_output_mb: int = typer.Option(16, help="cap on any job's stdout+stderr (MiB)"),
          max_file_mb: int = typer.Option(64, help="cap on any file a job writes (MiB)")) -> None:
    """Serve the sandbox over HTTP (JSON API: GET /health, POST /run; see docs/sandbox.md).

    Per-job limits sent by clients are lowered to the --max-* caps."""
    import socket

    python = _checked_python(python)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from llmrl.sandbox.jobs import Limits
    from llmrl.sandbox.server import serve as _serve
    try:
        caps = Limits(time_per_test_s=max_time_per_test_s, time_total_s=max_time_total_s, memory_mb=max_memory_mb,
                      max_processes=max_processes, max_output_bytes=max_output_mb << 20,
                      max_file_bytes=max_file_mb << 20).validate()
    except ValueError as e:
        _fail(f"--max-* caps: {e}")
    # Bind-check first: a busy port or bad host is the user's to fix, not a traceback.
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        _fail(f"cannot listen on {host}:{port} ({e.strerror or e}); the port may be in use by another "
              f"server, or the host is not an address of this machine. Choose another --port / --host.")
    try:
        _serve(host, port, workers=workers, isolation=isolation, token=token, python=python,
               max_body_bytes=max_body_mb << 20, max_jobs_per_request=max_jobs_per_request,
               max_queued_jobs=max_queued_jobs, max_limits=caps)
    except OSError as e:  # lost a race for the port between the check and the bind
        _fail(f"cannot serve on {host}:{port}: {e}")


@app.command()
def run(jobs_file: Path = typer.Argument(..., help="JSONL, one Job.to_dict() per line; - for stdin"),
        workers: Optional[int] = typer.Option(None, min=1, help="concurrent jobs"),
        isolation: str = _ISOLATION,
        python: Optional[str] = _PYTHON,
        server: Optional[list[str]] = typer.Option(None, help="run on these servers instead"),
        token: Optional[str] = typer.Option(None, envvar="LLMRL_SANDBOX_TOKEN", help=_TOKEN_HELP),
        give_up_after: float = typer.Option(30.0, min=0.0, help="with --server: seconds every server may be down "
                                            "before the run fails")) -> None:
    """Run jobs from a JSONL file and print one JobResult JSON per line.

    Exits 1 if any job could not be run (outcome sandbox_error, or no server up at all), 2 if a
    server refuses the token."""
    from llmrl.sandbox import HTTPExecutor, Job, Outcome, local_executor
    from llmrl.sandbox.client import SandboxAuthError, SandboxUnavailable
    try:
        lines = (sys.stdin if str(jobs_file) == "-" else jobs_file.open()).read().splitlines()
    except OSError as e:
        _fail(f"cannot read {jobs_file}: {e.strerror or e}")
    try:
        jobs = [Job.from_dict(json.loads(l)) for l in lines if l.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"{jobs_file}: {e}") from None
    ex = (HTTPExecutor(server, token=token, unavailable_after_s=give_up_after) if server
          else local_executor(workers=workers, isolation=isolation, python=_checked_python(python)))
    try:
        with ex:
            results = ex.run(jobs)
    except SandboxAuthError as e:
        _fail(str(e))
    except SandboxUnavailable as e:
        _fail(f"no job could be run: {e}", code=1)
    for r in results:
        typer.echo(json.dumps(r.to_dict()))
    failed = [r for r in results if r.outcome is Outcome.SANDBOX_ERROR]
    if failed:
        typer.secho(f"error: {len(failed)} of {len(results)} jobs could not be run (sandbox_error), e.g. "
                    f"{failed[0].detail[:200]}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
