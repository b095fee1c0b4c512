"""Remote executors with the local executor's API.

* :class:`HTTPExecutor` talks to ``llmrl sandbox serve`` servers and spreads a batch over them
  (one queue of chunks; a failed server is taken out until its health probe succeeds and its
  chunks are re-sent to the others; all servers down -> :class:`SandboxUnavailable`).
* :class:`SandboxFusionExecutor` runs jobs on a SandboxFusion deployment through its
  ``/run_code`` endpoint. The verdict stays on this side: the code sent is the program plus a
  harness that prints nonce-tagged, strictly serialised *results* of calls; expected values
  are never sent. SandboxFusion cannot host a separate judge, so test code other than
  ``CALL == LITERAL`` / ``is`` asserts is refused unless the caller allows forgeable
  in-process asserts.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import aiohttp

from llmrl.sandbox import _serial
from llmrl.sandbox.hosts import Host, HostPool
from llmrl.sandbox.jobs import (
    AssertTests, CallTests, CheckerTests, Job, JobResult, Outcome, SandboxError, StdioTests,
    TestResult,
)
from llmrl.sandbox.verdict import (
    apps_call_equal, apps_call_inputs, apps_stdio_equal, plan_asserts, values_equal,
)


def _run_sync(coro: Any) -> Any:
    """Run a coroutine from sync code, also when the caller is inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    th = threading.Thread(target=target)
    th.start()
    th.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


class HTTPExecutor:
    """Client for one or more ``llmrl sandbox serve`` servers, with failover.

    A batch is cut into chunks on one shared queue; every server has ``max_requests_per_server``
    slots that take the next chunk while the server is up. A request that fails (connection
    refused or reset, HTTP 5xx, timeout, a wrong answer count) marks its server down
    (:mod:`llmrl.sandbox.hosts`: no work until its ``/health`` probe succeeds, probes spaced by
    an exponential backoff) and puts the chunk back on the queue, so a host that dies mid-batch
    loses nothing: its in-flight chunks are re-sent to the healthy ones. A chunk is retried at
    most ``retries`` times after failures that may have reached a server (a refused connection
    never did, and does not count), then its jobs score ``sandbox_error``. When no server is up
    for ``unavailable_after_s`` seconds, :class:`SandboxUnavailable` names every URL and its
    last error, instead of waiting forever.

    Args:
        urls: base URLs, e.g. ``["http://10.0.0.5:8910", "http://10.0.0.6:8910"]``.
        token: bearer token the servers were started with (default: ``$LLMRL_SANDBOX_TOKEN``).
            A server that refuses it (401) raises :class:`SandboxAuthError`: a wrong token is a
            setup error, never a per-job ``sandbox_error`` that would train on missing rewards.
        chunk_size: jobs per request (a batch is cut into chunks spread over the servers).
        max_requests_per_server: concurrent requests per server.
        timeout_s: per-request timeout (must exceed the slowest job's time_total_s).
        retries: how often a failed chunk is re-sent (to whichever server is up).
        unavailable_after_s: how long every server may be down before the batch fails.
        backoff_s, max_backoff_s: first and longest wait before probing a down server again.
        health_timeout_s: timeout of one health probe.
    """

    def __init__(self, urls: list[str] | str, *, token: str | None = None, chunk_size: int = 16,
                 max_requests_per_server: int = 4, timeout_s: float = 600.0, retries: int = 2,
                 unavailable_after_s: float = 30.0, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 health_timeout_s: float = 5.0) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        if not self.urls:
            raise ValueError("HTTPExecutor needs at least one server URL")
        self.token = token if token is not None else (os.environ.get(TOKEN_ENV) or None)
        self.chunk_size = max(1, chunk_size)
        self.max_requests_per_server = max(1, max_requests_per_server)
        self.timeout_s = timeout_s
        self.retries = retries
        self.unavailable_after_s = unavailable_after_s
        self.health_timeout_s = health_timeout_s
        self.pool = HostPool(self.urls, backoff_s=backoff_s, max_backoff_s=max_backoff_s)

    def run(self, jobs: Sequence[Job]) -> list[JobResult]:
        return _run_sync(self.arun(jobs))

    def host_stats(self) -> dict[str, dict]:
        """Per server: up, chunks, jobs, failures, marked_down, request_s_mean, last_error."""
        return self.pool.stats()

    async def arun(self, jobs: Sequence[Job]) -> list[JobResult]:
        jobs = list(jobs)
        results: list[JobResult | None] = [None] * len(jobs)
        queue: asyncio.Queue[_Chunk] = asyncio.Queue()
        for i in range(0, len(jobs), self.chunk_size):
            queue.put_nowait(_Chunk(i, jobs[i:i + self.chunk_size]))
        left = {"chunks": queue.qsize()}
        finished = asyncio.get_running_loop().create_future()
        if not left["chunks"]:
            return []
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}

        def finish(chunk: _Chunk, out: list[JobResult]) -> None:
            results[chunk.start:chunk.start + len(out)] = out
            left["chunks"] -= 1
            if left["chunks"] == 0 and not finished.done():
                finished.set_result(None)

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                         headers=headers) as session:
            probing = {id(h): asyncio.Lock() for h in self.pool.hosts}

            async def slot(host: Host) -> None:
                while True:
                    if not host.up:
                        async with probing[id(host)]:   # one probe per host, the host's other slots wait
                            if not host.up:
                                await asyncio.sleep(max(0.0, host.retry_at - time.monotonic()))
                                await self._probe(session, host)
                        continue
                    chunk = await queue.get()
                    if not host.up:     # went down while this slot waited for work
                        queue.put_nowait(chunk)
                        continue
                    t0 = time.monotonic()
                    try:
                        out = await self._post(session, host.url, chunk.jobs)
                    except _Fatal as e:   # a refusal no server can fix (SandboxAuthError propagates)
                        finish(chunk, [JobResult.sandbox_error(str(e), job_id=j.id) for j in chunk.jobs])
                    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                        error = f"{type(e).__name__}: {e}"
                        self.pool.mark_down(host, error)
                        reached = not isinstance(e, aiohttp.ClientConnectorError)  # refused: never ran
                        chunk.attempts += reached
                        if chunk.attempts > self.retries:
                            finish(chunk, [JobResult.sandbox_error(
                                f"no sandbox server could run this job ({chunk.attempts} attempts; last: "
                                f"{host.url}: {error})", job_id=j.id) for j in chunk.jobs])
                        else:
                            chunk.resent += 1
                            queue.put_nowait(chunk)
                    else:
                        self.pool.record(host, len(out), time.monotonic() - t0)
                        finish(chunk, out)

            slots = [asyncio.create_task(slot(h)) for h in self.pool.hosts
                     for _ in range(self.max_requests_per_server)]
            try:
                await self._watch(finished, slots)
            finally:
                for t in slots:
                    t.cancel()
                await asyncio.gather(*slots, return_exceptions=True)
        return [r for r in results if r is not None]

    async def _watch(self, finished: asyncio.Future, slots: list[asyncio.Task]) -> None:
        """Wait for the batch; raise a slot's error (a refused token), or
        :class:`SandboxUnavailable` once no server was up for ``unavailable_after_s``."""
        down_since: float | None = None
        while True:
            await asyncio.wait([finished, *slots], timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
            if finished.done():
                return
            for t in slots:
                if t.done() and not t.cancelled() and t.exception() is not None:
                    raise t.exception()
            if self.pool.any_up():
                down_since = None
            elif down_since is None:
                down_since = time.monotonic()
            elif time.monotonic() - down_since > self.unavailable_after_s:
                raise SandboxUnavailable(
                    f"no sandbox server was up for {self.unavailable_after_s:g}s, so the batch cannot run: "
                    f"{self.pool.describe()}. Start `llmrl sandbox serve` on those hosts, check the URLs "
                    "(rewards.args.sandbox) and the network, or use sandbox: local")

    async def _probe(self, session: aiohttp.ClientSession, host: Host) -> None:
        """``GET /health``: up on an ``ok`` answer, else down again with a longer backoff."""
        try:
            async with session.get(host.url.rstrip("/") + "/health",
                                   timeout=aiohttp.ClientTimeout(total=self.health_timeout_s)) as r:
                body = await r.json() if r.status == 200 else {}
            if body.get("status") == "ok":
                self.pool.mark_up(host)
                return
            error = f"health check answered HTTP {r.status} {str(body)[:100]}"
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
            error = f"health check failed: {type(e).__name__}: {e}"
        self.pool.mark_down(host, error)

    async def _post(self, session: aiohttp.ClientSession, url: str, chunk: list[Job]) -> list[JobResult]:
        async with session.post(url.rstrip("/") + "/run",
                                json={"jobs": [j.to_dict() for j in chunk]}) as resp:
            if resp.status == 401:
                how = ("the token sent was refused" if self.token else
                       "no token was sent but the server requires one")
                raise SandboxAuthError(
                    f"{url} answered 401 Unauthorized: {how}. Pass the token the server was started with "
                    f"(HTTPExecutor(token=...), `llmrl sandbox run --token`, rewards.args.sandbox_token) "
                    f"or set {TOKEN_ENV}.")
            if resp.status in (400, 413):
                raise _Fatal(f"{url} refused the request ({resp.status}): "
                             f"{(await resp.text())[:300]}")
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, resp.history,
                                                  status=resp.status, message=await resp.text())
            body = await resp.json()
        out = [JobResult.from_dict(d) for d in body["results"]]
        if len(out) != len(chunk):
            raise ValueError(f"{url} returned {len(out)} results for {len(chunk)} jobs")
        return out

    async def health(self) -> list[dict]:
        """``/health`` of every server (an ``error`` entry for unreachable ones)."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            out = []
            for u in self.urls:
                try:
                    async with s.get(u.rstrip("/") + "/health") as r:
                        out.append(await r.json())
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                    out.append({"url": u, "error": str(e)})
            return out

    def close(self) -> None:
        """Nothing to release (sessions live per call)."""

    def __enter__(self) -> "HTTPExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


TOKEN_ENV = "LLMRL_SANDBOX_TOKEN"


class SandboxAuthError(RuntimeError):
    """A sandbox server refused our token (HTTP 401). Retrying or scoring the jobs as sandbox
    errors cannot fix it, so it propagates; ``fatal`` tells catch-all handlers to re-raise."""

    fatal = True


class SandboxUnavailable(RuntimeError):
    """No sandbox server was up for ``unavailable_after_s``: the batch cannot be scored. Not a
    per-job outcome (nothing the policy did), so it propagates like a refused token."""

    fatal = True


class _Fatal(Exception):
    """A refusal that retrying elsewhere cannot fix (bad token, malformed job, too large)."""


@dataclass
class _Chunk:
    """Jobs ``start .. start+len(jobs)`` of a batch, sent together; ``attempts`` counts failed
    requests that may have reached a server, ``resent`` how often it went back on the queue."""

    start: int
    jobs: list[Job]
    attempts: int = 0
    resent: int = 0


# --------------------------------------------------------------------------- SandboxFusion
_SERIAL_SRC = Path(__file__).with_name("_serial.py").read_text()
_HARNESS = r'''
import json as _j, sys as _s, types as _t
_ser = _t.ModuleType("_serial"); exec(compile(_SERIAL_SRC, "_serial", "exec"), _ser.__dict__)
def _rec(**kw):
    _s.__stdout__.write("\n" + _NONCE + " " + _j.dumps(kw, separators=(",", ":")) + "\n"); _s.__stdout__.flush()
_ns = {"__name__": "solution", "__builtins__": __builtins__}
try:
    exec(compile(_PROGRAM, "solution.py", "exec"), _ns)
except SyntaxError as e:
    _rec(t="cerr", e="SyntaxError", m=str(e)[:300]); raise SystemExit(0)
except BaseException as e:
    _rec(t="err", e=type(e).__name__, m=str(e)[:300], phase="load"); raise SystemExit(0)
if _SETUP:
    exec(compile(_SETUP, "setup.py", "exec"), _ns)
_rec(t="loaded")
for _i, _st in enumerate(_STEPS):
    _rec(t="start", i=_i)
    try:
        if _st["k"] == "expr":
            _v = eval(compile(_st["src"], "test", "eval"), _ns)
        elif _st["k"] == "call":
            _sol = _ns.get("Solution")
            _f = getattr(_sol(), _st["fn"]) if isinstance(_sol, type) else _ns[_st["fn"]]
            _v = _f(*_j.loads(_st["args"]))
        else:
            exec(compile(_st["src"], "test", "exec"), _ns); _rec(t="ok", i=_i); continue
        try:
            _rec(t="val", i=_i, v=_ser.to_plain(_v))
        except Exception as e:
            _rec(t="val", i=_i, bad=str(e)[:300])
    except AssertionError:
        _rec(t="fail", i=_i)
    except BaseException as e:
        _rec(t="err", i=_i, e=type(e).__name__, m=str(e)[:300])
_rec(t="done")
'''


def _parse_records(text: str, nonce: str) -> list[dict]:
    """Records carrying this run's nonce; anything else the program printed is ignored."""
    prefix = nonce + " "
    out = []
    for line in text.split("\n"):
        if line.startswith(prefix):
            try:
                r = json.loads(line[len(prefix):])
            except (ValueError, RecursionError):
                continue
            if type(r) is dict and type(r.get("t")) is str:
                out.append(r)
    return out


class SandboxFusionExecutor:
    """Jobs on a SandboxFusion server (``POST {url}/run_code``), judged on this side.

    Assert tests: ``==``/``is`` asserts are evaluated remotely as calls and compared here
    (expected values never leave this side). Any other test code (``check(candidate)``, loops,
    tolerances) would have to run *inside* the remote program's process, where the program
    can forge its records, and SandboxFusion's one-shot ``run_code`` cannot host a separate
    judge: such tests score ``sandbox_error`` unless ``allow_in_process_asserts=True`` (then
    they are forgeable: do not use that for RL rewards). Call-based and stdio tests are
    compared here with the APPS rules. SandboxFusion isolates only when deployed in its
    container.
    """

    def __init__(self, url: str, *, concurrency: int = 8, timeout_s: float = 120.0,
                 language: str = "python", allow_in_process_asserts: bool = False) -> None:
        self.allow_in_process_asserts = allow_in_process_asserts
        self.url = url.rstrip("/")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.language = language

    def run(self, jobs: Sequence[Job]) -> list[JobResult]:
        return _run_sync(self.arun(jobs))

    async def arun(self, jobs: Sequence[Job]) -> list[JobResult]:
        sem = asyncio.Semaphore(self.concurrency)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as s:
            async def one(job: Job) -> JobResult:
                async with sem:
                    try:
                        r = await self._job(s, job)
                    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as e:
                        r = JobResult.sandbox_error(f"SandboxFusion call failed: {type(e).__name__}: {e}")
                    r.id = job.id
                    return r
            return list(await asyncio.gather(*(one(j) for j in jobs)))

    async def _run_code(self, s: aiohttp.ClientSession, code: str, stdin: str, timeout: float) -> dict:
        payload = {"code": code, "language": self.language, "run_timeout": timeout,
                   "compile_timeout": timeout, "stdin": stdin}
        async with s.post(self.url + "/run_code", json=payload) as resp:
            if resp.status != 200:
                raise ValueError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            return await resp.json()

    @staticmethod
    def _run_status(res: dict) -> tuple[str, str, str]:
        run = res.get("run_result") or {}
        return str(run.get("status", res.get("status", ""))), str(run.get("stdout") or ""), \
            str(run.get("stderr") or "")

    async def _job(self, s: aiohttp.ClientSession, job: Job) -> JobResult:
        t, lim = job.tests, job.limits
        if isinstance(t, (StdioTests, CheckerTests)):
            if isinstance(t, CheckerTests):
                return JobResult.sandbox_error("CheckerTests are not supported on SandboxFusion")
            tests = []
            for i, (inp, exp) in enumerate(zip(t.inputs, t.outputs)):
                res = await self._run_code(s, job.program, inp, lim.time_per_test_s)
                status, out, err = self._run_status(res)
                if status == "TimeLimitExceeded":
                    tr = TestResult(i, Outcome.TIMEOUT, "time limit exceeded")
                elif status != "Finished" or (res.get("run_result") or {}).get("return_code") != 0:
                    tr = TestResult(i, Outcome.RUNTIME_ERROR, f"{status}: {err[-300:]}")
                else:
                    ok = apps_stdio_equal(out, exp, t.compare)
                    tr = TestResult(i, Outcome.PASS if ok else Outcome.WRONG_ANSWER)
                tests.append(tr)
                if tr.outcome is not Outcome.PASS and job.stop_on_first_failure:
                    break
            return _compose(tests, len(t.inputs), out if tests else "", "")
        if isinstance(t, AssertTests):
            plans = plan_asserts(t.asserts, t.setup_code, job.program)
            if not self.allow_in_process_asserts and any(p.kind not in ("pair", "is") for p in plans):
                return JobResult.sandbox_error(
                    "these asserts need a trusted judge, which SandboxFusion cannot host (the "
                    "program could forge them); use the local or HTTP executor, or "
                    "allow_in_process_asserts=True", total=len(plans))
            steps = [p.step if p.kind in ("pair", "is") else {"k": "stmt", "src": p.src} for p in plans]
            setup = t.setup_code
        else:
            plans = None
            steps = [{"k": "call", "fn": t.fn_name, "args": json.dumps(apps_call_inputs(a, t.compare))}
                     for a in t.inputs]
            setup = ""
        nonce = secrets.token_hex(16)
        code = (f"_NONCE = {nonce!r}\n_SERIAL_SRC = {_SERIAL_SRC!r}\n_PROGRAM = {job.program!r}\n"
                f"_SETUP = {setup!r}\n_STEPS = {steps!r}\n" + _HARNESS)
        res = await self._run_code(s, code, "", lim.time_total_s)
        status, out, err = self._run_status(res)
        recs = _parse_records(out, nonce)
        first = {}
        for r in recs:
            if type(r.get("i")) is int and r["t"] != "start":
                first.setdefault(r["i"], r)
        kinds = {r["t"]: r for r in recs if "i" not in r}
        if "cerr" in kinds or ("err" in kinds and kinds["err"].get("phase") == "load"):
            r = kinds.get("cerr") or kinds["err"]
            return _compose([], len(steps), out, err, (Outcome.COMPILE_ERROR, f"{r.get('e')}: {r.get('m')}"))
        tests = []
        for i in range(len(steps)):
            r = first.get(i)
            if r is None:
                oc = Outcome.TIMEOUT if status == "TimeLimitExceeded" else Outcome.RUNTIME_ERROR
                tests.append(TestResult(i, oc, f"no result reported ({status})"))
                break
            if r["t"] == "err":
                tests.append(TestResult(i, Outcome.RUNTIME_ERROR, f"{r.get('e')}: {r.get('m')}"))
            elif r["t"] == "fail":
                tests.append(TestResult(i, Outcome.WRONG_ANSWER, "assertion failed"))
            elif r["t"] == "ok":
                tests.append(TestResult(i, Outcome.PASS, "assert evaluated remotely"))
            elif r["t"] == "val" and "v" in r:
                try:
                    got = _serial.from_plain(r["v"])
                except ValueError:
                    tests.append(TestResult(i, Outcome.WRONG_ANSWER, "malformed value"))
                    continue
                if plans is None:
                    ok = apps_call_equal(got, t.outputs[i], t.compare)
                elif plans[i].kind == "is":
                    ok = got is plans[i].expected
                else:
                    ok = values_equal(got, plans[i].expected)
                tests.append(TestResult(i, Outcome.PASS if ok else Outcome.WRONG_ANSWER))
            else:
                tests.append(TestResult(i, Outcome.WRONG_ANSWER, "uncomparable value"))
        return _compose(tests, len(steps), out, err)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> "SandboxFusionExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _compose(tests: list[TestResult], total: int, out: str, err: str,
             fixed: tuple[Outcome, str] | None = None) -> JobResult:
    passed = sum(t.outcome is Outcome.PASS for t in tests)
    if fixed:
        oc, detail = fixed
    elif passed == total and len(tests) == total:
        oc, detail = Outcome.PASS, ""
    else:
        first = next((t for t in tests if t.outcome is not Outcome.PASS), None)
        oc, detail = (first.outcome, first.detail) if first else (Outcome.TIMEOUT, "not all tests ran")
    return JobResult(outcome=oc, tests=tests, passed=passed, total=total, stdout=out[:2000],
                     stderr=err[:2000], detail=detail)


__all__ = ["HTTPExecutor", "SandboxFusionExecutor", "SandboxError", "SandboxUnavailable"]
