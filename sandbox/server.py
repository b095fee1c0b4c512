"""HTTP service around the local executor (``llmrl sandbox serve``).

JSON API (documented in docs/sandbox.md):

* ``GET /health`` -> ``{"status": "ok", "workers": n, "mode": ..., "layers": {...},
  "in_flight_jobs": k, "max_queued_jobs": q}``
* ``POST /run`` with ``{"jobs": [Job.to_dict(), ...]}`` -> ``{"results": [JobResult.to_dict(),
  ...]}`` in job order. With a token configured, requests need ``Authorization: Bearer TOKEN``.

Errors are 4xx with ``{"error": "what, why, fix"}``: 400 malformed JSON / job, 401 bad token,
413 body or batch too large, 503 too many queued jobs (retry later). A hostile program is never
an HTTP error: it is a result.

Every per-job limit a client asks for is capped by the server's ``max_limits`` (see
:data:`DEFAULT_MAX_LIMITS`; ``llmrl sandbox serve --max-memory-mb ...``): a job asking for more
runs with the cap, and ``/health`` reports the caps.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from llmrl.sandbox.jobs import Job, Limits
from llmrl.sandbox.local import LocalExecutor

log = logging.getLogger("llmrl.sandbox.server")

DEFAULT_MAX_BODY = 16 << 20
DEFAULT_MAX_JOBS_PER_REQUEST = 1024
# The most any one job may use on this server, whatever the client asks for.
DEFAULT_MAX_LIMITS = Limits(time_per_test_s=60.0, time_total_s=300.0, memory_mb=2048, max_processes=64,
                            max_output_bytes=16 << 20, max_file_bytes=64 << 20)


def cap_limits(limits: Limits, caps: Limits) -> Limits:
    """``limits`` with every field lowered to the server's cap.

    >>> cap_limits(Limits(memory_mb=3072, time_per_test_s=1.0), DEFAULT_MAX_LIMITS).memory_mb
    2048
    """
    return dataclasses.replace(limits, **{f.name: min(getattr(limits, f.name), getattr(caps, f.name))
                                          for f in dataclasses.fields(Limits)})


def make_app(executor: LocalExecutor, *, token: str | None = None,
             max_body_bytes: int = DEFAULT_MAX_BODY, max_jobs_per_request: int = DEFAULT_MAX_JOBS_PER_REQUEST,
             max_queued_jobs: int | None = None, max_limits: Limits = DEFAULT_MAX_LIMITS) -> web.Application:
    """Build the aiohttp application (the caller owns ``executor`` and closes it)."""
    max_limits = max_limits.validate()
    max_queued = max_queued_jobs if max_queued_jobs is not None else 64 * executor.workers
    state = {"in_flight": 0}

    def err(status: int, msg: str) -> web.Response:
        return web.json_response({"error": msg}, status=status)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if token is not None and request.path != "/health":
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {token}".encode()):
                return err(401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                "with the token the server was started with (--token)")
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status == 413:
                return err(413, f"request body larger than {max_body_bytes} bytes; split the "
                                "batch into smaller requests")
            raise

    async def health(request: web.Request) -> web.Response:
        return web.json_response({
            "status": "ok", "workers": executor.workers, "mode": executor.mode,
            "layers": executor.layers, "in_flight_jobs": state["in_flight"],
            "max_queued_jobs": max_queued, "max_limits": max_limits.to_dict()})

    async def run(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_body_bytes:
            return err(413, f"request body of {request.content_length} bytes exceeds the limit "
                            f"of {max_body_bytes}; split the batch")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return err(413, f"request body exceeds the limit of {max_body_bytes} bytes")
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as e:
            return err(400, f"body is not valid JSON ({str(e)[:100]}); send {{\"jobs\": [...]}}")
        if not isinstance(body, dict) or not isinstance(body.get("jobs"), list):
            return err(400, "body must be a JSON object with a list under 'jobs'")
        items = body["jobs"]
        if len(items) > max_jobs_per_request:
            return err(413, f"{len(items)} jobs in one request; the limit is "
                            f"{max_jobs_per_request}. Split the batch.")
        jobs = []
        for k, d in enumerate(items):
            try:
                job = Job.from_dict(d)
                jobs.append(dataclasses.replace(job, limits=cap_limits(job.limits, max_limits)))
            except (ValueError, TypeError, KeyError) as e:
                return err(400, f"job {k} is malformed: {e}")
        if state["in_flight"] + len(jobs) > max_queued:
            return web.json_response(
                {"error": f"server busy: {state['in_flight']} jobs queued (limit {max_queued}); "
                          "retry later or add servers"}, status=503, headers={"Retry-After": "1"})
        state["in_flight"] += len(jobs)
        try:
            results = await executor.arun(jobs)
        finally:
            state["in_flight"] -= len(jobs)
        return web.json_response({"results": [r.to_dict() for r in results]})

    app = web.Application(client_max_size=max_body_bytes, middlewares=[guard])
    app.router.add_get("/health", health)
    app.router.add_post("/run", run)
    return app


def serve(host: str = "127.0.0.1", port: int = 8910, *, workers: int | None = None,
          isolation: str = "auto", token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY,
          max_jobs_per_request: int = DEFAULT_MAX_JOBS_PER_REQUEST,
          max_queued_jobs: int | None = None, max_limits: Limits = DEFAULT_MAX_LIMITS,
          python: str | None = None) -> None:
    """Run the service until interrupted (blocking)."""
    executor = LocalExecutor(workers=workers, isolation=isolation, python=python)
    try:
        app = make_app(executor, token=token, max_body_bytes=max_body_bytes,
                       max_jobs_per_request=max_jobs_per_request, max_queued_jobs=max_queued_jobs,
                       max_limits=max_limits)
        log.info("sandbox server on http://%s:%d, %d workers, isolation %s", host, port,
                 executor.workers, executor.layers)
        web.run_app(app, host=host, port=port, print=None, handle_signals=True)
    finally:
        executor.close()


async def start_background(executor: LocalExecutor, host: str = "127.0.0.1", port: int = 0,
                           **kw: Any) -> tuple[web.AppRunner, int]:
    """Start the app on an event loop that is already running; returns (runner, bound port).
    Used by tests and benchmarks (port 0 = a free port)."""
    runner = web.AppRunner(make_app(executor, **kw), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


def run_in_thread(executor: LocalExecutor, host: str = "127.0.0.1", **kw: Any):
    """Serve on a free port from a daemon thread; returns (url, stop) for tests and benches."""
    import threading
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        runner, port = loop.run_until_complete(start_background(executor, host, 0, **kw))
        ready["runner"], ready["port"] = runner, port
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    th = threading.Thread(target=main, daemon=True, name="llmrl-sandbox-http")
    th.start()
    started.wait(30)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        th.join(30)

    return f"http://{host}:{ready['port']}", stop


def spawn_servers(n: int, *, workers: int = 1, ports: list[int] | None = None,
                  timeout_s: float = 60.0) -> tuple[list[str], list]:
    """Start ``n`` ``llmrl sandbox serve`` subprocesses on 127.0.0.1 (free ports, or ``ports``)
    and wait until each answers ``/health``; returns (urls, processes). Each runs in its own session, so
    :func:`kill_server` takes its sandbox workers down with it, like a host that dies. For
    tests and benchmarks of the HTTP fan-out."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    urls, procs = [], []
    for i in range(n):
        if ports is not None:
            port = ports[i]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        procs.append(subprocess.Popen([sys.executable, "-m", "llmrl", "sandbox", "serve", "--port", str(port),
                                       "--workers", str(workers)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
        urls.append(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + timeout_s
    for url, proc in zip(urls, procs):
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    for p in procs:
                        kill_server(p)
                    raise RuntimeError(f"sandbox server {url} did not come up (exit code {proc.poll()})") from None
                time.sleep(0.05)
    return urls, procs


def kill_server(proc) -> None:
    """SIGKILL a server from :func:`spawn_servers` and its whole process group."""
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
