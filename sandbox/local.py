"""The local executor: a pool of warm sandbox slots and the trusted verdict logic.

Each slot is one long-lived sandbox (bubblewrap when available) hosting a fork server
(``_worker.py``) that has already imported the interpreter's common modules; every job runs in
a fresh forked child that cannot affect the next one. This process (the trusted parent) sends
programs and *inputs* only, receives raw output and nonce-tagged records, and decides every
verdict itself: expected values never enter a sandbox, and an exit code is never evidence.

>>> from llmrl.sandbox import Job, AssertTests, local_executor
>>> with local_executor(workers=1) as ex:
...     [r] = ex.run([Job("def f(x):\\n    return 2 * x", AssertTests(["assert f(2) == 4"]))])
>>> r.outcome.value, r.passed, r.total
('pass', 1, 1)
"""
from __future__ import annotations

import asyncio
import json
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
from llmrl.sandbox.isolation import resolve_mode, slot_plan
from llmrl.sandbox.jobs import (
    AssertTests, CallTests, CheckerTests, Job, JobResult, Limits, Outcome, SandboxError,
    StdioTests, TestResult,
)
from llmrl.sandbox.verdict import AssertPlan, apps_call_equal, apps_stdio_equal, plan_asserts, values_equal

log = logging.getLogger("llmrl.sandbox")

EXCERPT = 2000
GRACE_S = 2.0  # how long past a job's budget the parent waits before killing the whole slot


class Slot:
    """One sandbox with a fork server inside. Killed as a whole (namespace, process group)
    when it stops answering in time; the executor then starts a fresh one."""

    def __init__(self, index: int, mode: str, *, tmpfs_mb: int = 256,
                 extra_ro: list[str] | None = None, start_timeout: float = 30.0) -> None:
        self.index = index
        self.mode = mode
        self.plan = slot_plan(mode, index, tmpfs_mb=tmpfs_mb, extra_ro=extra_ro)
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.plan.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err,
            env=self.plan.env, cwd=self.plan.cwd, start_new_session=True, close_fds=True)
        self.alive = True
        self.dirty = False
        self._out = self.proc.stdout.fileno()
        self._in = self.proc.stdin.fileno()
        self._send(self.plan.cfg)
        info = self._recv(time.monotonic() + start_timeout)
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

    def _send(self, obj: dict) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        data = memoryview(struct.pack(">I", len(body)) + body)
        while data:
            n = os.write(self._in, data)
            data = data[n:]

    def _read_exact(self, n: int, deadline: float) -> bytes | None:
        chunks = []
        while n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self._out], [], [], left)
            if not r:
                return None
            b = os.read(self._out, min(n, 1 << 20))
            if not b:
                return None
            chunks.append(b)
            n -= len(b)
        return b"".join(chunks)

    def _recv(self, deadline: float) -> dict | None:
        head = self._read_exact(4, deadline)
        if head is None:
            return None
        body = self._read_exact(struct.unpack(">I", head)[0], deadline)
        return None if body is None else json.loads(body)

    def request(self, spec: dict, timeout: float) -> dict | None:
        """Send one run; None if the slot died or did not answer in time (it is then killed)."""
        try:
            self._send(spec)
            reply = self._recv(time.monotonic() + timeout)
        except (OSError, ValueError):
            reply = None
        if reply is None:
            self.kill()
            return None
        if reply.get("dirty") or reply.get("reason") == "internal":
            self.dirty = True
        return reply

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
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()
        for f in (self.proc.stdout, self.proc.stdin, self._err):
            try:
                f.close()
            except OSError:
                pass
        for p in self.plan.cleanup:
            shutil.rmtree(p, ignore_errors=True)


class LocalExecutor:
    """Warm sandbox pool on this machine; see :func:`llmrl.sandbox.local_executor`.

    Thread-safe: concurrent ``run``/``arun`` calls share the slots (bounded concurrency)."""

    def __init__(self, workers: int | None = None, isolation: str = "auto", *,
                 tmpfs_mb: int = 256, extra_ro_paths: Sequence[str] = ()) -> None:
        self.mode = resolve_mode(isolation)
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
                                       "probe": slots[0].info.get("probe", {})}
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="llmrl-sandbox")
        log.info("sandbox: %d warm slots, isolation %s", self.workers, self.layers)
        if self.mode == "none":
            log.warning("sandbox isolation is OFF (isolation='none'): run trusted code only")

    def _new_slot(self, index: int) -> Slot:
        s = Slot(index, self.mode, tmpfs_mb=self._tmpfs_mb, extra_ro=self._extra_ro)
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
            res = _JobRun(job, lambda spec, budget: self._call(slot, spec, budget)).run()
        except Exception as e:  # noqa: BLE001 - machinery failure is an outcome, not a crash
            log.exception("sandbox job failed inside the machinery")
            res = JobResult.sandbox_error(f"{type(e).__name__}: {e}")
            slot.dirty = True
        finally:
            self._release(slot)
        res.time_s = round(time.monotonic() - t0, 6)
        res.id = job.id
        return res

    def _call(self, slot: Slot, spec: dict, budget: float) -> dict | None:
        spec["budget_s"] = budget
        return slot.request(spec, budget + GRACE_S)

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
def parse_records(text: str, nonce: str) -> list[dict]:
    """Records carrying this run's nonce; anything else the program wrote is ignored."""
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


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown status"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _JobRun:
    """Drives one job through one slot: runs, resumes after crashes/timeouts when asked to
    run every test, replays asserts in a judge, and composes the JobResult."""

    def __init__(self, job: Job, call: Callable[[dict, float], dict | None]) -> None:
        self.job = job
        self.call = call
        self.t0 = time.monotonic()
        self.stdout = ""
        self.stderr = ""
        self.maxrss_kb: int | None = None
        self.lim = job.limits

    def remaining(self) -> float:
        return self.lim.time_total_s - (time.monotonic() - self.t0)

    def exec(self, spec: dict, limits: Limits | None = None) -> tuple[dict, list[dict]] | None:
        budget = self.remaining()
        if budget <= 0:
            return None
        nonce = secrets.token_hex(16)
        spec["nonce"] = nonce
        spec["limits"] = (limits or self.lim).to_dict()
        reply = self.call(spec, budget)
        if reply is None:
            return ({"reason": "killed", "step": -1, "exit": None}, [])
        if spec.get("kind") != "judge":
            if len(self.stdout) < EXCERPT:
                self.stdout += reply.get("stdout", "")[:EXCERPT - len(self.stdout)]
            if len(self.stderr) < EXCERPT:
                self.stderr += reply.get("stderr", "")[:EXCERPT - len(self.stderr)]
            rss = reply.get("maxrss_kb")
            if isinstance(rss, int):
                self.maxrss_kb = max(self.maxrss_kb or 0, rss)
        return reply, parse_records(reply.get("records", ""), nonce)

    # ------------------------------------------------------------------ outcome helpers
    def _fail_from_reply(self, reply: dict, what: str) -> tuple[Outcome, str]:
        reason = reply.get("reason")
        if reason == "timeout":
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
        return Outcome.RUNTIME_ERROR, f"{what} {_signal_name(code)} without reporting a result"

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
        if isinstance(t, AssertTests):
            return self._run_steps(t)
        if isinstance(t, CallTests):
            return self._run_steps(t)
        if isinstance(t, (StdioTests, CheckerTests)):
            return self._run_stdio(t)
        raise SandboxError(f"unknown tests type {type(t).__name__}")

    # ------------------------------------------------------ asserts and call-based tests
    def _run_steps(self, t: AssertTests | CallTests) -> JobResult:
        if isinstance(t, AssertTests):
            plans = plan_asserts(t.asserts, t.setup_code, self.job.program)
            steps = [p.step if p.kind != "invalid" else {"k": "stmt", "src": "pass"} for p in plans]
            setup, prelude = t.setup_code, False
        else:
            if len(t.inputs) != len(t.outputs):
                return JobResult.sandbox_error(
                    f"CallTests has {len(t.inputs)} inputs but {len(t.outputs)} outputs")
            plans = None
            steps = [{"k": "call", "fn": t.fn_name, "args": json.dumps(a)} for a in t.inputs]
            setup, prelude = "", True
        n = len(steps)
        results: dict[int, TestResult] = {}
        replay: dict[int, list] = {}
        start = 0
        while start < n:
            spec = {"kind": "steps", "program": self.job.program, "setup": setup,
                    "steps": steps, "start": start, "prelude": prelude,
                    "stop_on_error": self.job.stop_on_first_failure}
            got = self.exec(spec)
            if got is None:
                break  # out of total time
            reply, recs = got
            fatal = self._load_outcome(reply, recs)
            if fatal is not None:
                return self._result([], n, fatal)
            by_i: dict[int, dict] = {}
            conflict: set[int] = set()
            started: dict[int, float] = {}
            for r in recs:
                i = r.get("i")
                if type(i) is not int or not (0 <= i < n):
                    continue
                if r["t"] == "start":
                    started.setdefault(i, 0.0)
                    continue
                if i in by_i:
                    conflict.add(i)
                else:
                    by_i[i] = r
            next_start = n
            for i in range(start, n):
                if i in conflict:
                    results[i] = TestResult(i, Outcome.WRONG_ANSWER,
                                            "several results were reported for this test "
                                            "(the program tampered with the result channel)")
                elif i in by_i:
                    results[i] = self._decide(i, by_i[i], plans, t, replay)
                elif i in started or i == reply.get("step"):
                    oc, why = self._fail_from_reply(reply, "the test")
                    results[i] = TestResult(i, oc, why)
                    next_start = i + 1
                    break
                else:
                    next_start = i
                    break
            failed = any(r.outcome is not Outcome.PASS for r in results.values())
            if next_start >= n or (failed and self.job.stop_on_first_failure):
                break
            if next_start == start:  # no progress: nothing more can be learned
                break
            start = next_start
        if replay:
            self._judge_replays(t, plans, replay, results)
        return self._result(list(results.values()), n, None)

    def _load_outcome(self, reply: dict, recs: list[dict]) -> tuple[Outcome, str] | None:
        for r in recs:
            if "i" in r:
                continue
            kind = r["t"]
            if kind == "loaded":
                return None
            if kind == "cerr":
                return Outcome.COMPILE_ERROR, f"{r.get('e')}: {r.get('m')}"
            if kind == "err":
                if r.get("phase") == "setup":
                    return Outcome.RUNTIME_ERROR, f"test setup code failed: {r.get('e')}: {r.get('m')}"
                return Outcome.COMPILE_ERROR, f"the program failed at import: {r.get('e')}: {r.get('m')}"
            if kind == "mem":
                return Outcome.MEMORY, "MemoryError while loading the program"
            if kind == "exit":
                return Outcome.RUNTIME_ERROR, "the program exited before the tests ran"
        return self._fail_from_reply(reply, "loading the program")

    def _decide(self, i: int, r: dict, plans: list[AssertPlan] | None, t: Any,
                replay: dict[int, list]) -> TestResult:
        kind = r["t"]
        if kind == "err":
            return TestResult(i, Outcome.RUNTIME_ERROR, f"{r.get('e')}: {str(r.get('m'))[:300]}")
        if kind == "mem":
            return TestResult(i, Outcome.MEMORY, "MemoryError")
        if kind == "exit":
            return TestResult(i, Outcome.RUNTIME_ERROR, "the program exited during the test")
        plan = plans[i] if plans is not None else None
        if plan is not None and plan.kind == "invalid":
            return TestResult(i, Outcome.RUNTIME_ERROR, plan.error)
        if kind == "val" and (plan is None or plan.kind in ("pair", "is")):
            if "v" not in r:
                return TestResult(i, Outcome.WRONG_ANSWER,
                                  f"returned a value that cannot be compared safely: {r.get('bad')}")
            try:
                got = _serial.from_plain(r["v"])
            except ValueError as e:
                return TestResult(i, Outcome.WRONG_ANSWER, f"malformed result: {e}")
            if plan is None:
                ok = apps_call_equal(got, t.outputs[i])
            elif plan.kind == "is":
                ok = got is plan.expected
            else:
                ok = values_equal(got, plan.expected)
            return TestResult(i, Outcome.PASS if ok else Outcome.WRONG_ANSWER,
                              "" if ok else f"got {_short(got)}")
        if kind == "calls" and plan is not None and plan.kind == "replay":
            calls = r.get("c")
            if type(calls) is not list:
                return TestResult(i, Outcome.WRONG_ANSWER, "malformed call record")
            replay[i] = calls
            return TestResult(i, Outcome.SANDBOX_ERROR, "awaiting judge")
        if plan is not None and plan.kind == "stmt":
            if kind == "ok":
                return TestResult(i, Outcome.PASS, "assert evaluated inside the sandbox")
            if kind == "fail":
                return TestResult(i, Outcome.WRONG_ANSWER, "assertion failed")
        return TestResult(i, Outcome.WRONG_ANSWER, f"unexpected record {kind!r} for this test")

    def _judge_replays(self, t: Any, plans: list[AssertPlan], replay: dict[int, list],
                       results: dict[int, TestResult]) -> None:
        items = [{"i": i, "src": plans[i].src, "names": plans[i].names, "calls": c,
                  "imports": plans[i].imports}
                 for i, c in sorted(replay.items())]
        spec = {"kind": "judge", "setup": t.setup_code, "items": items}
        lim = Limits(time_per_test_s=max(5.0, self.lim.time_per_test_s) * max(1, len(items)),
                     time_total_s=self.lim.time_total_s, memory_mb=max(512, self.lim.memory_mb))
        got = self.exec(spec, lim)
        verdicts: dict[int, dict] = {}
        reply: dict = {}
        if got is not None:
            reply, recs = got
            for r in recs:
                if r["t"] == "verdict" and type(r.get("i")) is int:
                    verdicts.setdefault(r["i"], r)
        for i in replay:
            v = verdicts.get(i)
            if v is None:
                oc, why = self._fail_from_reply(reply, "the judge") if got else (
                    Outcome.TIMEOUT, "the job ran out of time before the judge ran")
                results[i] = TestResult(i, oc, why)
            elif v.get("ok") is True:
                results[i] = TestResult(i, Outcome.PASS, "")
            else:
                results[i] = TestResult(i, Outcome.WRONG_ANSWER, str(v.get("m", ""))[:300])

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
            reply, recs = got
            kinds = {r["t"]: r for r in recs if "i" not in r}
            if "cerr" in kinds:
                r = kinds["cerr"]
                return self._result([], n, (Outcome.COMPILE_ERROR, f"{r.get('e')}: {r.get('m')}"))
            done = "done" in kinds or ("exit" in kinds and kinds["exit"].get("code") == 0)
            if done and reply.get("reason") == "exit":
                out = reply.get("stdout", "")
                if isinstance(t, StdioTests):
                    ok = apps_stdio_equal(out, t.outputs[i])
                    results[i] = TestResult(i, Outcome.PASS if ok else Outcome.WRONG_ANSWER,
                                            "" if ok else f"output {_short(out)}")
                else:
                    to_check[i] = out
                    results[i] = TestResult(i, Outcome.PASS, "")
            elif "mem" in kinds:
                results[i] = TestResult(i, Outcome.MEMORY, "MemoryError")
            elif "err" in kinds:
                r = kinds["err"]
                results[i] = TestResult(i, Outcome.RUNTIME_ERROR, f"{r.get('e')}: {str(r.get('m'))[:300]}")
            elif "exit" in kinds:
                results[i] = TestResult(i, Outcome.RUNTIME_ERROR,
                                        f"exit code {kinds['exit'].get('code')}")
            else:
                oc, why = self._fail_from_reply(reply, "the program")
                results[i] = TestResult(i, oc, why)
            if results[i].outcome is not Outcome.PASS and self.job.stop_on_first_failure:
                break
        if to_check and isinstance(t, CheckerTests):
            items = [{"i": i, "input": t.inputs[i], "output": out,
                      "data": None if t.data is None else t.data[i]} for i, out in to_check.items()]
            got = self.exec({"kind": "judge", "setup": "", "checker": t.checker, "items": items},
                            Limits(time_per_test_s=max(5.0, self.lim.time_per_test_s) * len(items),
                                   time_total_s=self.lim.time_total_s,
                                   memory_mb=max(512, self.lim.memory_mb)))
            verdicts = {}
            if got is not None:
                for r in got[1]:
                    if r["t"] == "verdict" and type(r.get("i")) is int:
                        verdicts.setdefault(r["i"], r)
            for i in to_check:
                v = verdicts.get(i)
                if v is None:
                    results[i] = TestResult(i, Outcome.SANDBOX_ERROR, "the checker gave no verdict")
                elif v.get("ok") is not True:
                    results[i] = TestResult(i, Outcome.WRONG_ANSWER, str(v.get("m") or "checker rejected the output"))
        return self._result(list(results.values()), n, None)


def _short(x: Any, n: int = 200) -> str:
    s = repr(x)
    return s if len(s) <= n else s[:n] + "..."
