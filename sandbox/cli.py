"""`llmrl sandbox ...`: check which isolation layers work, serve the HTTP API, run job files."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Run, serve and check the code sandbox.")


@app.command()
def check(isolation: str = typer.Option("auto", help="auto | bwrap | light | none"),
          as_json: bool = typer.Option(False, "--json", help="print the report as JSON")) -> None:
    """Probe this machine and a real sandbox slot; print which isolation layers are active."""
    from llmrl.sandbox.isolation import isolation_report
    rep = isolation_report(isolation)
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
          port: int = typer.Option(8910, help="TCP port"),
          workers: Optional[int] = typer.Option(None, help="concurrent jobs (default: CPUs)"),
          isolation: str = typer.Option("auto", help="auto | bwrap | light | none"),
          token: Optional[str] = typer.Option(None, envvar="LLMRL_SANDBOX_TOKEN",
                                              help="require 'Authorization: Bearer TOKEN'"),
          max_body_mb: int = typer.Option(16, help="largest request body accepted (MiB)"),
          max_jobs_per_request: int = typer.Option(1024, help="largest batch per request"),
          max_queued_jobs: Optional[int] = typer.Option(None, help="jobs in flight before 503 "
                                                        "(default 64 x workers)")) -> None:
    """Serve the sandbox over HTTP (JSON API: GET /health, POST /run; see docs/sandbox.md)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from llmrl.sandbox.server import serve as _serve
    _serve(host, port, workers=workers, isolation=isolation, token=token,
           max_body_bytes=max_body_mb << 20, max_jobs_per_request=max_jobs_per_request,
           max_queued_jobs=max_queued_jobs)


@app.command()
def run(jobs_file: Path = typer.Argument(..., help="JSONL, one Job.to_dict() per line; - for stdin"),
        workers: Optional[int] = typer.Option(None, help="concurrent jobs"),
        isolation: str = typer.Option("auto", help="auto | bwrap | light | none"),
        server: Optional[list[str]] = typer.Option(None, help="run on these servers instead")) -> None:
    """Run jobs from a JSONL file and print one JobResult JSON per line."""
    from llmrl.sandbox import HTTPExecutor, Job, local_executor
    lines = (sys.stdin if str(jobs_file) == "-" else jobs_file.open()).read().splitlines()
    try:
        jobs = [Job.from_dict(json.loads(l)) for l in lines if l.strip()]
    except ValueError as e:
        raise typer.BadParameter(f"{jobs_file}: {e}") from None
    ex = HTTPExecutor(server) if server else local_executor(workers=workers, isolation=isolation)
    with ex:
        for r in ex.run(jobs):
            typer.echo(json.dumps(r.to_dict()))
