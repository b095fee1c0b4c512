"""The local executor: a pool of warm sandbox slots and the trusted verdict logic.

Each slot is one long-lived sandbox (bubblewrap when available) hosting a fork server
(``_worker.py``) that has already imported the interpreter's common modules, and a judge
server; every job runs in a fresh forked child that cannot affect the next one. This process
(the trusted parent) sends the fork server programs and inputs only, and the judge server the
tests, on separate pipes. Verdicts come from the judge server's lines (test code run against
proxies of the program) and the fork server's observations (captured stdout, exit status),
never from anything the program writes. See docs/sandbox.md, "threat model".

>>> from llmrl.sandbox import Job, AssertTests, local_executor
>>> with local_executor(workers=1) as ex:
...     [r] = ex.run([Job("def f(x):\\n    return 2 * x", AssertTests(["assert f(2) == 4"]))])
>>> r.outcome.value, r.passed, r.total
('pass', 1, 1)
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import queue
import secrets
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from llmrl.sandbox import _serial
from llmrl.sandbox.isolation import SlotPython, resolve_mode, slot_plan, slot_python
from llmrl.sandbox.jobs import (
    AssertTests, CallTests, CheckerTests, Job, JobResult, Limits, Outcome, SandboxError,
    StdioTests, TestResult,
)
from llmrl.sandbox.verdict import apps_call_equal, apps_call_inputs, apps_stdio_equal

log = logging.getLogger("llmrl.sandbox")

EXCERPT = 2000
GRACE_S = 2.0  # how long past a job's budget the parent waits before killing the whole slot


class Slot:
    """One sandbox with a fork server and a judge server inside. Killed as a whole (namespace,
    process group) when it stops answering in time; the executor then starts a fresh one."""

    def __init__(self, index: int, mode: str, *, tmpfs_mb: int = 256,
                 extra_ro: list[str] | None = None, start_timeout: float = 30.0,
                 python: str | SlotPython | None = None) -> None:
        self.index = index
        self.mode = mode
        self.plan = slot_plan(mode, index, tmpfs_mb=tmpfs_mb, extra_ro=extra_ro, python=python)
        self._err = tempfile.TemporaryFile()
        # The judge server's own pipes: tests and verdicts never pass through the fork server.
        j_in_child, self._jin = os.pipe()
        self._jout, j_out_child = os.pipe()
        try:
            self.proc = subprocess.Popen(
                self.plan.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
                env=self.plan.env, cwd=self.plan.cwd, start_new_session=True, close_fds=True,
                pass_fds=(j_in_child, j_out_child))
        finally:
            os.close(j_in_child)
            os.close(j_out_child)
        self.alive = True
        self.dirty = False
        self._out = self.proc.stdout.fileno()
        self._in = self.proc.stdin.fileno()
        try:
            self._write_all(self._in, self.plan.boot)  # the slot's code first (_boot.py)
            self._send(self._in, dict(self.plan.cfg, judge_fds=[j_in_child, j_out_child]))
        except OSError:
            pass  # the slot died at once: reported below, with its stderr
        info = self._recv(self._out, time.monotonic() + start_timeout)
        if info is None or info.get("op") != "ready":
            why = self.stderr_tail()
            self.close()
            raise SandboxError(
                f"sandbox slot {index} ({mode}) did not start: {why or 'no answer'}. Run "
                "`llmrl sandbox check` to see which isolation layers work on this machine.")
        self.info: dict = info

    def stderr_tail(self) -> str:
        try:
            self._err.seek(0)
            return self._err.read()[-2000:].decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    @staticmethod
    def _send(fd: int, obj: dict) -> None:
        body = _serial.compact_json(obj).encode()
        Slot._write_all(fd, struct.pack(">I", len(body)) + body)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    @staticmethod
    def _read_exact(fd: int, n: int, deadline: float) -> bytes | None:
        chunks = []
        while n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            b = os.read(fd, min(n, 1 << 20))
            if not b:
                return None
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def _recv(self, fd: int, deadline: float) -> dict | None:
        head = self._read_exact(fd, 4, deadline)
        if head is None:
            return None
        body = self._read_exact(fd, struct.unpack(">I", head)[0], deadline)
        return None if body is None else _serial.parse_json(body)

    def request(self, spec: dict | None, timeout: float, judge: dict | None = None
                ) -> tuple[dict | None, dict | None] | None:
        """Send one run to the fork server (``spec``) and/or the judge server (``judge``);
        None if the slot died or did not answer in time (it is then killed)."""
        deadline = time.monotonic() + timeout
        reply = jreply = None
        try:
            if judge is not None:
                self._send(self._jin, judge)
            if spec is not None:
                self._send(self._in, spec)
                reply = self._recv(self._out, deadline)
                if reply is None:
                    raise OSError("no answer from the fork server")
            if judge is not None:
                jreply = self._recv(self._jout, deadline)
                if jreply is None:
                    raise OSError("no answer from the judge server")
        except (OSError, ValueError):
            self.kill()
            return None
        if reply is not None and (reply.get("dirty") or reply.get("reason") == "internal"):
            self.dirty = True
        if jreply is not None and jreply.get("error"):
            self.dirty = True
        return reply, jreply

    def kill(self) -> None:
        """Deadline enforcement from outside: kill bubblewrap's whole process group; its pid
        namespace (and every process the job made) dies with it."""
        self.alive = False
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                os.close(self._jin)
                self._jin = -1
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        for f in (self.proc.stdout, self.proc.stdin, self._err):
            try:
                f.close()
            except OSError:
                pass
        for fd in (self._jin, self._jout):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._jin = self._jout = -1
        for p in self.plan.cleanup:
            shutil.rmtree(p, ignore_errors=True)


class LocalExecutor:
    """Warm sandbox pool on this machine; see :func:`llmrl.sandbox.local_executor`.

    Thread-safe: concurrent ``run``/``arun`` calls share the slots (bounded concurrency)."""

    def __init__(self, workers: int | None = None, isolation: str = "auto", *,
                 tmpfs_mb: int = 256, extra_ro_paths: Sequence[str] = (), python: str | None = None) -> None:
        self.mode = resolve_mode(isolation)
        self.python = slot_python(python)  # checked here, once: a bad path fails before any slot starts
        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self._tmpfs_mb = tmpfs_mb
        self._extra_ro = [os.path.realpath(p) for p in extra_ro_paths]
        self._idle: queue.Queue[Slot] = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._all: set[Slot] = set()
        # bubblewrap runs with --die-with-parent, and the kernel's parent-death signal fires
        # when the *thread* that started it exits: slots are started only from these
        # long-lived threads, which live as long as the executor.
        self._spawner = ThreadPoolExecutor(min(self.workers, 4), thread_name_prefix="llmrl-sandbox-spawn")
        try:
            slots = list(self._spawner.map(self._new_slot, range(self.workers)))
        except BaseException:
            self._spawner.shutdown(wait=False)
            for s in list(self._all):
                s.close()
            raise
        for s in slots:
            self._idle.put(s)
        self.layers: dict[str, Any] = {"mode": self.mode, **slots[0].info.get("layers", {}),
                                       "landlock": slots[0].info.get("landlock"),
                                       "seccomp": slots[0].info.get("seccomp"),
                                       "probe": slots[0].info.get("probe", {}),
                                       "python": ".".join(map(str, self.python.version))}
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="llmrl-sandbox")
        log.info("sandbox: %d warm slots, isolation %s", self.workers, self.layers)
        if self.mode == "none":
            log.warning("sandbox isolation is OFF (isolation='none'): run trusted code only")

    def _new_slot(self, index: int) -> Slot:
        s = Slot(index, self.mode, tmpfs_mb=self._tmpfs_mb, extra_ro=self._extra_ro, python=self.python)
        with self._lock:
            self._all.add(s)
        return s

    # ------------------------------------------------------------------------ public API
    def run(self, jobs: Sequence[Job]) -> list[JobResult]:
        """Run jobs concurrently on the warm slots; results in job order."""
        self._check_open()
        return list(self._pool.map(self.run_one, jobs))

    async def arun(self, jobs: Sequence[Job]) -> list[JobResult]:
        """Async form of :meth:`run` (the event loop stays free while jobs run)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(
            *(loop.run_in_executor(self._pool, self.run_one, j) for j in jobs)))

    def close(self) -> None:
        """Stop every slot (their namespaces and processes die with them)."""
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        with self._lock:
            slots = list(self._all)
            self._all.clear()
        for s in slots:
            s.close()
        self._spawner.shutdown(wait=True)

    def __enter__(self) -> "LocalExecutor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort; close() is the contract
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001
            pass

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError("this executor is closed; create a new one with local_executor()")

    # ------------------------------------------------------------------------ one job
    def run_one(self, job: Job) -> JobResult:
        """Run a single job on a free slot (blocks until one is free)."""
        t0 = time.monotonic()
        try:
            job.limits.validate()
        except ValueError as e:
            return JobResult.sandbox_error(f"invalid limits: {e}", job_id=job.id)
        slot = self._idle.get()
        try:
            res = _JobRun(job, lambda spec, budget, judge=None: self._call(slot, spec, budget, judge)).run()
        except Exception as e:  # noqa: BLE001 - machinery failure is an outcome, not a crash
            log.exception("sandbox job failed inside the machinery")
            res = JobResult.sandbox_error(f"{type(e).__name__}: {e}")
            slot.dirty = True
        finally:
            self._release(slot)
        res.time_s = round(time.monotonic() - t0, 6)
        res.id = job.id
        return res

    def _call(self, slot: Slot, spec: dict | None, budget: float, judge: dict | None = None):
        for s in (spec, judge):
            if s is not None:
                s["budget_s"] = budget
        return slot.request(spec, budget + GRACE_S, judge)

    def _release(self, slot: Slot) -> None:
        if slot.alive and not slot.dirty:
            self._idle.put(slot)
            return
        with self._lock:
            self._all.discard(slot)
        slot.close()
        if self._closed:
            return
        for attempt in range(3):
            try:
                self._idle.put(self._spawner.submit(self._new_slot, slot.index).result())
                return
            except SandboxError:
                log.exception("restarting sandbox slot %d failed (attempt %d)", slot.index,
                              attempt + 1)
                time.sleep(0.5)
        raise SandboxError(f"sandbox slot {slot.index} cannot be restarted")


# ------------------------------------------------------------------------------ verdicts
def parse_lines(text: str) -> list[dict]:
    """The judge's verdict lines (trusted: written by the judge, relayed by the judge server)."""
    out = []
    for line in text.split("\n"):
        if line:
            try:
                r = _serial.parse_json(line)
            except ValueError:
                continue
            if type(r) is dict and type(r.get("t")) is str:
                out.append(r)
    return out


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


@functools.lru_cache(maxsize=1024)  # the same setup code comes with every sample of a problem
def setup_imports(setup_code: str) -> str:
    """The import statements of the test setup code: the only part of it the program's process
    sees (the setup may build data the tests compare against)."""
    import ast
    try:
        tree = ast.parse(setup_code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return ""
    return "\n".join(ast.unparse(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))


_STOPS = ("timeout", "gone", "exit", "mem", "output", "tamper")
EX_COMPILE, EX_MEMORY = 113, 114  # the stdio child's exit codes for those failures


class _JobRun:
    """Drives one job through one slot: runs, resumes after crashes/timeouts when asked to
    run every test, and composes the JobResult from the judge's lines and the fork server's
    observations (exit status, captured output). Nothing the program writes decides a pass."""

    def __init__(self, job: Job, call: Callable[..., tuple[dict | None, dict | None] | None]) -> None:
        self.job = job
        self.call = call
        self.t0 = time.monotonic()
        self.stdout = ""
        self.stderr = ""
        self.maxrss_kb: int | None = None
        self.lim = job.limits

    def remaining(self) -> float:
        return self.lim.time_total_s - (time.monotonic() - self.t0)

    def exec(self, spec: dict | None, judge: dict | None = None, limits: Limits | None = None
             ) -> tuple[dict, list[dict]] | None:
        """Run on the slot; (fork-server reply, judge lines), or None when out of time."""
        budget = self.remaining()
        if budget <= 0:
            return None
        nonce = secrets.token_hex(16)
        lim = (limits or self.lim).to_dict()
        for s in (spec, judge):
            if s is not None:
                s["nonce"], s["limits"] = nonce, lim
        got = self.call(spec, budget, judge)
        if got is None:
            return ({"reason": "killed", "exit": None}, [])
        reply, jreply = got
        reply = reply or {"reason": "exit", "exit": 0}
        if spec is not None:
            if len(self.stdout) < EXCERPT:
                self.stdout += reply.get("stdout", "")[:EXCERPT - len(self.stdout)]
            if len(self.stderr) < EXCERPT:
                self.stderr += reply.get("stderr", "")[:EXCERPT - len(self.stderr)]
            rss = reply.get("maxrss_kb")
            if isinstance(rss, int):
                self.maxrss_kb = max(self.maxrss_kb or 0, rss)
        lines = parse_lines(jreply.get("lines", "")) if jreply else []
        if jreply and jreply.get("killed"):
            reply = dict(reply, judge_killed=True)
        return reply, lines

    # ------------------------------------------------------------------ outcome helpers
    def _fail_from_reply(self, reply: dict, what: str) -> tuple[Outcome, str]:
        reason = reply.get("reason")
        if reason == "timeout" or reply.get("judge_killed"):
            return Outcome.TIMEOUT, f"{what} exceeded its time limit"
        if reason == "killed":
            return Outcome.TIMEOUT, f"{what}: the sandbox stopped answering and was killed"
        if reason == "output_limit":
            return Outcome.OUTPUT_LIMIT, f"{what} exceeded the output limit"
        if reason == "internal":
            return Outcome.SANDBOX_ERROR, f"sandbox worker error: {reply.get('error')}"
        code = reply.get("exit")
        rss = reply.get("maxrss_kb") or 0
        if code is not None and code < 0 and rss >= 0.9 * self.lim.memory_mb * 1024:
            return Outcome.MEMORY, f"{what} {_signal_name(code)} at the memory limit"
        return Outcome.RUNTIME_ERROR, f"{what} {_signal_name(code)} without a result"

    def _result(self, tests: list[TestResult], total: int, fixed: tuple[Outcome, str] | None
                ) -> JobResult:
        tests.sort(key=lambda t: t.index)
        if self.job.stop_on_first_failure:
            for k, t in enumerate(tests):
                if t.outcome is not Outcome.PASS:
                    tests = tests[:k + 1]
                    break
        passed = sum(t.outcome is Outcome.PASS for t in tests)
        if fixed is not None:
            outcome, detail = fixed
        elif passed == total and len(tests) == total:
            outcome, detail = Outcome.PASS, ""
        else:
            first = next((t for t in tests if t.outcome is not Outcome.PASS), None)
            if first is None:
                outcome, detail = Outcome.TIMEOUT, "the job ran out of time before all tests ran"
            else:
                outcome, detail = first.outcome, f"test {first.index}: {first.detail}"
        return JobResult(outcome=outcome, tests=tests, passed=passed, total=total,
                         stdout=self.stdout, stderr=self.stderr,
                         memory_mb=None if self.maxrss_kb is None else round(self.maxrss_kb / 1024, 2),
                         detail=detail)

    def run(self) -> JobResult:
        t = self.job.tests
        if isinstance(t, (AssertTests, CallTests)):
            return self._run_judged(t)
        if isinstance(t, (StdioTests, CheckerTests)):
            return self._run_stdio(t)
        raise SandboxError(f"unknown tests type {type(t).__name__}")

    # ------------------------------------------------------ asserts and call-based tests
    def _load_outcome(self, r: dict, reply: dict) -> tuple[Outcome, str]:
        s, m = r.get("s"), str(r.get("m", ""))[:500]
        if s == "cerr":
            return Outcome.COMPILE_ERROR, f"{r.get('e')}: {m}"
        if s == "err":
            return Outcome.COMPILE_ERROR, f"the program failed at import: {r.get('e')}: {m}".replace(": : ", ": ")
        if s == "mem":
            return Outcome.MEMORY, "MemoryError while loading the program"
        if s == "exit":
            return Outcome.RUNTIME_ERROR, "the program exited before the tests ran"
        if s == "setup":
            return Outcome.RUNTIME_ERROR, f"test setup code failed: {m}"
        if s == "timeout":
            return Outcome.TIMEOUT, "loading the program exceeded its time limit"
        if s == "output":
            return Outcome.OUTPUT_LIMIT, "the program exceeded the output limit"
        if s == "tamper":
            return Outcome.WRONG_ANSWER, f"the program tampered with the result channel: {m}"
        return self._fail_from_reply(reply, "loading the program")

    def _test_result(self, i: int, r: dict, reply: dict, t: Any) -> TestResult:
        s, m = r.get("s"), str(r.get("m", ""))[:300]
        ts = float(r.get("time_s") or 0.0)
        if s == "value":
            try:
                got = _serial.from_plain(r.get("v"))
            except ValueError as e:
                return TestResult(i, Outcome.WRONG_ANSWER, f"malformed result: {e}", ts)
            ok = apps_call_equal(got, t.outputs[i], t.compare)
            return TestResult(i, Outcome.PASS if ok else Outcome.WRONG_ANSWER,
                              "" if ok else f"got {_short(got)}", ts)
        oc = {"pass": Outcome.PASS, "fail": Outcome.WRONG_ANSWER, "error": Outcome.RUNTIME_ERROR,
              "invalid": Outcome.RUNTIME_ERROR, "timeout": Outcome.TIMEOUT,
              "exit": Outcome.RUNTIME_ERROR, "mem": Outcome.MEMORY,
              "output": Outcome.OUTPUT_LIMIT, "tamper": Outcome.WRONG_ANSWER}.get(s)
        if s == "gone" or oc is None:
            oc, m = self._fail_from_reply(reply, "the test")
        elif s == "exit":
            m = "the program exited during the test"
        elif s == "timeout":
            m = "the test exceeded its time limit"
        return TestResult(i, oc, m, ts)

    def _run_judged(self, t: AssertTests | CallTests) -> JobResult:
        program = self.job.program
        if isinstance(t, AssertTests):
            n = len(t.asserts)
            spec = {"kind": "serve", "program": program, "imports": setup_imports(t.setup_code),
                    "prelude": False}
            judge = {"op": "serve", "mode": "assert", "asserts": list(t.asserts),
                     "setup": t.setup_code, "program": program}
        else:
            if len(t.inputs) != len(t.outputs):
                return JobResult.sandbox_error(
                    f"CallTests has {len(t.inputs)} inputs but {len(t.outputs)} outputs")
            n = len(t.inputs)
            spec = {"kind": "serve", "program": program, "imports": "", "prelude": True}
            judge = {"op": "serve", "mode": "call", "fn_name": t.fn_name,
                     "inputs": [apps_call_inputs(a, t.compare) for a in t.inputs]}
        results: dict[int, TestResult] = {}
        start = 0
        while start < n:
            got = self.exec(dict(spec), dict(judge, start=start,
                                            stop_on_error=self.job.stop_on_first_failure))
            if got is None:
                break  # out of total time
            reply, lines = got
            load = next((r for r in lines if r["t"] == "load"), None)
            if load is not None:
                return self._result([], n, self._load_outcome(load, reply))
            if not any(r["t"] == "loaded" for r in lines):
                return self._result([], n, self._fail_from_reply(reply, "loading the program"))
            last = None
            for r in lines:
                i = r.get("i")
                if r["t"] == "test" and type(i) is int and start <= i < n and i not in results:
                    results[i] = self._test_result(i, r, reply, t)
                    last = r
            if last is None:
                break  # the judge was stopped before any test finished (total time)
            failed = any(x.outcome is not Outcome.PASS for x in results.values())
            if failed and self.job.stop_on_first_failure:
                break
            nxt = last["i"] + 1
            if nxt >= n or last.get("s") not in _STOPS:
                break
            start = nxt
        return self._result(list(results.values()), n, None)

    # --------------------------------------------------------------- stdin/stdout tests
    def _run_stdio(self, t: StdioTests | CheckerTests) -> JobResult:
        n = len(t.inputs)
        if isinstance(t, StdioTests) and len(t.outputs) != n:
            return JobResult.sandbox_error(f"StdioTests has {n} inputs but {len(t.outputs)} outputs")
        if isinstance(t, CheckerTests) and t.data is not None and len(t.data) != n:
            return JobResult.sandbox_error(f"CheckerTests has {n} inputs but {len(t.data)} data items")
        results: dict[int, TestResult] = {}
        to_check: dict[int, str] = {}
        for i in range(n):
            got = self.exec({"kind": "stdio", "program": self.job.program, "stdin": t.inputs[i]})
            if got is None:
                break
            reply, _ = got
            ts = round(float(reply.get("elapsed") or 0.0), 6)
            code = reply.get("exit")
            if reply.get("reason") == "exit" and code == EX_COMPILE:
                return self._result([], n, (Outcome.COMPILE_ERROR, reply.get("stderr", "")[-500:].strip()))
            if reply.get("reason") == "exit" and code == 0:
                # The output was captured by the fork server from the program's stdout pipe.
                out = reply.get("stdout", "")
                if isinstance(t, StdioTests):
                    ok = apps_stdio_equal(out, t.outputs[i], t.compare)
                    results[i] = TestResult(i, Outcome.PASS if ok else Outcome.WRONG_ANSWER,
                                            "" if ok else f"output {_short(out)}", ts)
                else:
                    to_check[i] = out
                    results[i] = TestResult(i, Outcome.SANDBOX_ERROR, "awaiting the checker", ts)
            elif reply.get("reason") == "exit" and code == EX_MEMORY:
                results[i] = TestResult(i, Outcome.MEMORY, "MemoryError", ts)
            elif reply.get("reason") == "exit" and code is not None and code > 0:
                tail = reply.get("stderr", "").strip().splitlines()
                results[i] = TestResult(i, Outcome.RUNTIME_ERROR,
                                        (tail[-1] if tail else f"exit code {code}")[:300], ts)
            else:
                oc, why = self._fail_from_reply(reply, "the program")
                results[i] = TestResult(i, oc, why, ts)
            if results[i].outcome not in (Outcome.PASS, Outcome.SANDBOX_ERROR) and \
                    self.job.stop_on_first_failure:
                break
        if to_check and isinstance(t, CheckerTests):
            items = [{"i": i, "input": t.inputs[i], "output": out,
                      "data": None if t.data is None else t.data[i]} for i, out in to_check.items()]
            got = self.exec(None, {"op": "check", "checker": t.checker, "items": items},
                            Limits(time_per_test_s=max(5.0, self.lim.time_per_test_s) * len(items),
                                   time_total_s=self.lim.time_total_s,
                                   memory_mb=max(512, self.lim.memory_mb)))
            verdicts = {}
            if got is not None:
                for r in got[1]:
                    if r["t"] == "test" and type(r.get("i")) is int:
                        verdicts.setdefault(r["i"], r)
            for i in to_check:
                v = verdicts.get(i)
                ts = results[i].time_s
                if v is None:
                    results[i] = TestResult(i, Outcome.SANDBOX_ERROR, "the checker gave no verdict", ts)
                elif v.get("s") == "pass":
                    results[i] = TestResult(i, Outcome.PASS, "", ts)
                else:
                    results[i] = TestResult(i, Outcome.WRONG_ANSWER,
                                            str(v.get("m") or "checker rejected the output"), ts)
        return self._result(list(results.values()), n, None)


def _short(x: Any, n: int = 200) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."
