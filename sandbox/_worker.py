"""The fork server that runs inside one sandbox slot (started by ``llmrl.sandbox.local``).

It imports the interpreter's common modules once, then for every request forks a *fresh* child
that drops privileges, applies the per-process layers (rlimits, Landlock, seccomp), runs the
untrusted program and its test steps, and writes nonce-tagged records on fd 3. This process
never runs untrusted code itself. After each child it kills every other process of the sandbox
(daemons included), wipes the work dir, and relays stdout/stderr/records *unparsed* to the
trusted parent, which alone decides verdicts.

Standard library only: started as ``python -I -S _worker.py`` (no site-packages, no env).
Protocol on fds 0/1 (moved to private fds at start): frames of 4-byte big-endian length + JSON.
"""
from __future__ import annotations

import builtins
import gc
import io
import json
import os
import resource
import select
import signal
import struct
import sys
import time
import types

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
import _oslayers  # noqa: E402
import _serial  # noqa: E402

sys.path.remove(_HERE)

# Modules test programs commonly use, imported once so that each job costs a fork only.
# Kept small on purpose: every preloaded page makes each fork dearer (measured: ~18 MB of
# preloads roughly doubled the fork cost against ~11 MB). These are what MBPP programs and the
# APPS prelude use most.
for _m in ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "typing", "operator", "copy", "fractions", "random"):
    try:
        __import__(_m)
    except ImportError:
        pass

# The APPS harness prepends these to every stdio / call-based program; we do the same, from
# already-imported modules.
APPS_PRELUDE = (
    "import sys\nimport time\nimport itertools\nfrom itertools import accumulate, product, "
    "permutations, combinations\nimport collections\nfrom collections import Counter, "
    "OrderedDict, deque, defaultdict, ChainMap\nfrom functools import lru_cache\nimport math\n"
    "from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2\n"
    "import fractions\nfrom typing import List, Tuple, Dict, Optional, Set\nimport random\n"
    "import heapq\nfrom heapq import *\nimport bisect\nimport string\nimport re\n"
)
_prelude_code = compile(APPS_PRELUDE, "<prelude>", "exec")

CTRL_IN = os.dup(0)
CTRL_OUT = os.dup(1)
_devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(_devnull, 0)
os.dup2(_devnull, 1)
os.close(_devnull)
os.set_inheritable(CTRL_IN, False)
os.set_inheritable(CTRL_OUT, False)


def read_frame() -> dict | None:
    head = _read_exact(CTRL_IN, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = _read_exact(CTRL_IN, n)
    if body is None:
        return None
    return json.loads(body)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        b = os.read(fd, min(n, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        n -= len(b)
    return b"".join(chunks)


def write_frame(obj: dict) -> None:
    body = json.dumps(obj, separators=(",", ":")).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        n = os.write(CTRL_OUT, data)
        data = data[n:]


# ------------------------------------------------------------------------------- the config
CFG: dict = {}
LL_FD = -1
SECCOMP: bytes | None = None
LAYERS: dict = {}
INHERITED = False  # layers applied once in the fork server (bubblewrap mode)


def setup(cfg: dict) -> None:
    global LL_FD, SECCOMP
    CFG.update(cfg)
    work = cfg["workdir"]
    os.makedirs(work, exist_ok=True)
    uid = cfg.get("uid")
    if uid is not None:
        os.chown(work, uid, cfg.get("gid", uid))
    os.chmod(work, 0o700)
    if cfg.get("landlock"):
        fd, feats = _oslayers.landlock_ruleset(cfg["read_paths"], [work],
                                               ["/dev/null", "/dev/zero", "/dev/urandom"])
        LL_FD = fd
        LAYERS.update(feats)
        if fd >= 0:
            os.set_inheritable(fd, True)
    if cfg.get("seccomp"):
        protect = [1, os.getpid(), -os.getpgrp()] + list(cfg.get("protect_pids", []))
        SECCOMP = _oslayers.seccomp_program(deny_inet=not cfg.get("netns"),
                                            protect_pids=protect,
                                            deny_setsid=not cfg.get("pidns"))
    _oslayers.set_dumpable(False)  # siblings with our uid cannot ptrace / read our memory
    if cfg.get("pidns"):
        # Inside bubblewrap the fork server itself takes Landlock and seccomp once, and every
        # child inherits them (kernel-enforced, irreversible): a fork then costs no BPF
        # compilation or ruleset setup. The server needs nothing those layers forbid (it
        # signals leftovers by pid, never with kill(-1), which the filter refuses).
        global INHERITED
        _oslayers.no_new_privs()
        if LL_FD >= 0:
            _oslayers.landlock_restrict(LL_FD)
            os.close(LL_FD)
            LL_FD = -1
            LAYERS["landlock_inherited"] = True
        if SECCOMP is not None:
            _oslayers.seccomp_install(SECCOMP)
            LAYERS["seccomp_inherited"] = True
        INHERITED = True
    gc.collect()
    gc.freeze()  # keep the preloaded heap shared copy-on-write across forks


# --------------------------------------------------------------------- in the forked child
def child_enter(spec: dict, in_r: int, out_w: int, err_w: int, rec_w: int) -> None:
    """Become the sandboxed child: fds, session, uid, limits, Landlock, seccomp."""
    os.setsid()
    os.dup2(in_r, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.dup2(rec_w, 3)
    keep = {0, 1, 2, 3}
    ll = -1
    if LL_FD >= 0:
        ll = 4
        if LL_FD != 4:
            os.dup2(LL_FD, 4)
        keep.add(4)
    os.closerange(max(keep) + 1, 65536)  # the control pipe and everything else
    os.chdir(CFG["workdir"])
    lim = spec["limits"]
    uid = CFG.get("uid")
    if uid is not None:  # root outside: never run untrusted code as uid 0
        gid = CFG.get("gid", uid)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    mem = int(lim["memory_mb"]) << 20
    cpu = int(lim["time_total_s"]) + 2
    for res, val in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CORE, 0),
                     (resource.RLIMIT_FSIZE, int(lim["max_file_bytes"])),
                     (resource.RLIMIT_NOFILE, 256), (resource.RLIMIT_CPU, cpu),
                     (resource.RLIMIT_NPROC, int(lim["max_processes"]) + CFG.get("nproc_base", 0)),
                     (resource.RLIMIT_MEMLOCK, 0), (resource.RLIMIT_MSGQUEUE, 0)):
        try:
            resource.setrlimit(res, (val, val))
        except (ValueError, OSError):
            pass
    _oslayers.no_new_privs()
    if ll >= 0:
        _oslayers.landlock_restrict(ll)
        os.close(ll)
    if SECCOMP is not None and not INHERITED:
        _oslayers.seccomp_install(SECCOMP)
    # Fresh Python-level state: streams on the new fds, clean __main__, no harness on sys.path.
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                                 encoding="utf-8", errors="replace")
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                                  encoding="utf-8", errors="backslashreplace")
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                                  encoding="utf-8", errors="backslashreplace",
                                  line_buffering=True)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    sys.argv = ["solution.py"]
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    # (the preloaded heap stays frozen: a short-lived child never needs to collect it)


class _Rec:
    """Writes nonce-tagged records on fd 3. The nonce is not a secret from a determined
    program (it lives in this process); it only keeps stray output from counting. What makes
    forging useless is that expected values never enter this process."""

    def __init__(self, nonce: str) -> None:
        self.prefix = nonce.encode() + b" "

    def __call__(self, **kw: object) -> None:
        try:
            line = self.prefix + json.dumps(kw, separators=(",", ":")).encode() + b"\n"
        except (TypeError, ValueError):
            line = self.prefix + b'{"t":"internal","m":"record not JSON"}\n'
        while line:
            try:
                n = os.write(3, line)
            except InterruptedError:
                continue
            except OSError:
                return
            line = line[n:]


def _exc_record(rec: _Rec, e: BaseException, **kw: object) -> None:
    name = type(e).__name__ if type(type(e).__name__) is str else "Exception"
    try:
        msg = str(e)[:500]
    except BaseException:
        msg = "<unprintable>"
    rec(t="err", e=name, m=msg if type(msg) is str else "", **kw)


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass


def _load_program(spec: dict, ns: dict, rec: _Rec, prelude: bool) -> bool:
    if prelude:
        exec(_prelude_code, ns)
    try:
        code = compile(spec["program"], "solution.py", "exec")
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        rec(t="cerr", e=type(e).__name__, m=str(e)[:500])
        return False
    try:
        exec(code, ns)
    except SystemExit as e:
        _flush()
        rec(t="exit", code=e.code if type(e.code) is int else (0 if e.code is None else 1))
        return False
    except BaseException as e:  # noqa: BLE001 - any failure at import is the program's
        _flush()
        if isinstance(e, MemoryError):
            rec(t="mem")
        else:
            _exc_record(rec, e, phase="load")
        return False
    return True


def _call_key(args: tuple, kwargs: dict) -> object:
    try:
        return _serial.to_plain((args, kwargs))
    except (ValueError, RecursionError):
        return ["?", [type(a).__name__ for a in args], sorted(kwargs)]


def _result_plain(value: object) -> dict:
    try:
        return {"v": _serial.to_plain(value)}
    except (ValueError, RecursionError) as e:
        return {"bad": str(e)[:300]}


def run_steps(spec: dict, rec: _Rec) -> None:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    ns = main.__dict__
    kind = spec["kind"]
    if kind == "stdio":
        _run_stdio(spec, ns, rec)
        return
    if kind == "judge":
        _run_judge(spec, ns, rec)
        return
    ns["__name__"] = "solution"
    if not _load_program(spec, ns, rec, prelude=spec.get("prelude", False)):
        return
    before = set(ns)
    if spec.get("setup"):
        try:
            exec(compile(spec["setup"], "setup.py", "exec"), ns)
        except BaseException as e:  # noqa: BLE001
            _flush()
            _exc_record(rec, e, phase="setup")
            return
    del before
    rec(t="loaded")
    stop = spec.get("stop_on_error", True)
    for i, step in enumerate(spec["steps"]):
        if i < spec.get("start", 0):
            continue
        rec(t="start", i=i)
        k = step["k"]
        try:
            if k == "expr":
                value = eval(compile(step["src"], f"test_{i}", "eval"), ns)
                rec(t="val", i=i, **_result_plain(value))
            elif k == "call":
                fn = step["fn"]
                sol = ns.get("Solution")
                target = getattr(sol(), fn) if isinstance(sol, type) else ns[fn]
                value = target(*json.loads(step["args"]))
                rec(t="val", i=i, **_result_plain(value))
            elif k == "rec":
                calls: list = []
                ans = dict(ns)
                for name in step["names"]:
                    f = ns.get(name)
                    if callable(f):
                        ans[name] = _recorder(name, f, calls)
                try:
                    for src in step["calls"]:
                        eval(compile(src, f"test_{i}", "eval"), ans)
                except _Uncomparable:
                    pass  # recorded as "bad": the judge scores it as a wrong answer
                rec(t="calls", i=i, c=calls)
            elif k == "stmt":
                exec(compile(step["src"], f"test_{i}", "exec"), ns)
                rec(t="ok", i=i)
        except AssertionError as e:
            rec(t="fail", i=i, m=str(e)[:300] if type(e) is AssertionError else "")
            if stop:
                break
        except MemoryError:
            rec(t="mem", i=i)
            if stop:
                break
        except SystemExit as e:
            rec(t="exit", i=i, code=e.code if type(e.code) is int else 0)
            break
        except BaseException as e:  # noqa: BLE001
            _exc_record(rec, e, i=i)
            if stop:
                break
    _flush()
    rec(t="done")


class _Uncomparable(Exception):
    pass


def _recorder(name: str, f, calls: list):
    def wrapped(*args, **kwargs):
        key = _call_key(args, kwargs)
        try:
            value = f(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001
            calls.append([name, key, {"err": type(e).__name__}])
            raise
        res = _result_plain(value)
        calls.append([name, key, res])
        if "bad" in res:
            raise _Uncomparable(res["bad"])
        return _serial.from_plain(res["v"])  # a fresh, behaviour-free copy
    return wrapped


def _run_stdio(spec: dict, ns: dict, rec: _Rec) -> None:
    ns["__name__"] = "__main__"
    ok = _load_program(spec, ns, rec, prelude=True)
    if ok:
        _flush()
        rec(t="done")
    # a SystemExit(0) at top level is a normal end for a stdin/stdout program
    # (_load_program recorded it as "exit" with its code; the parent treats code 0 as done)


def _run_judge(spec: dict, ns: dict, rec: _Rec) -> None:
    """Trusted replay: no untrusted code ever ran in this process."""
    ns["__name__"] = "judge"
    try:
        if spec.get("setup"):
            exec(compile(spec["setup"], "setup.py", "exec"), ns)
        checker = spec.get("checker")
        if checker:
            exec(compile(checker, "checker.py", "exec"), ns)
    except BaseException as e:  # noqa: BLE001
        _exc_record(rec, e, phase="judge_setup")
        return
    for item in spec["items"]:
        i = item["i"]
        try:
            if checker:
                ok = ns["check"](item["input"], item["output"], item.get("data"))
                rec(t="verdict", i=i, ok=bool(ok) is True, m="")
                continue
            table: dict = {}
            for name, key, res in item["calls"]:
                table.setdefault(name, []).append([key, res])
            local = dict(ns)
            for stmt in item.get("imports", []):
                try:
                    exec(compile(stmt, "imports", "exec"), local)
                except Exception:  # noqa: BLE001 - a module missing here fails the assert later
                    pass
            for name in item["names"]:
                local[name] = _replayer(name, table.get(name, []))
            exec(compile(item["src"], f"test_{i}", "exec"), local)
            rec(t="verdict", i=i, ok=True, m="")
        except AssertionError as e:
            rec(t="verdict", i=i, ok=False, m=("assertion failed " + str(e))[:300])
        except BaseException as e:  # noqa: BLE001
            rec(t="verdict", i=i, ok=False, m=f"{type(e).__name__}: {str(e)[:300]}")
    rec(t="done")


class _NotRecorded(Exception):
    pass


def _replayer(name: str, entries: list):
    def stub(*args, **kwargs):
        key = _call_key(args, kwargs)
        for j, (k, res) in enumerate(entries):
            if k == key:
                del entries[j]
                if "err" in res:
                    raise RuntimeError(f"{name} raised {res['err']} in the sandbox")
                if "bad" in res:
                    raise TypeError(f"{name} returned an uncomparable value: {res['bad']}")
                return _serial.from_plain(res["v"])
        raise _NotRecorded(f"call {name}(...) has no recorded result from the sandbox")
    return stub


def child_main(spec: dict, fds: tuple[int, int, int, int]) -> None:
    code = 0
    try:
        child_enter(spec, *fds)
        run_steps(spec, _Rec(spec["nonce"]))
    except SystemExit:
        pass
    except BaseException:  # noqa: BLE001 - never let the harness raise into the fork server
        code = 70
    finally:
        _flush()
        os._exit(code)


# ----------------------------------------------------------------------- in the fork server
def run_request(spec: dict) -> dict:
    lim = spec["limits"]
    per_test = float(lim["time_per_test_s"])
    budget = float(spec.get("budget_s", lim["time_total_s"]))
    max_out = int(lim["max_output_bytes"])
    max_rec = max(8 << 20, 4 * max_out)
    nonce = spec["nonce"].encode()
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    rec_r, rec_w = os.pipe()
    stdin_data = spec.get("stdin", "").encode()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child_main(spec, (in_r, out_w, err_w, rec_w))
    for fd in (in_r, out_w, err_w, rec_w):
        os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    bufs = {out_r: bytearray(), err_r: bytearray(), rec_r: bytearray()}
    open_fds = {out_r, err_r, rec_r}
    poller = select.poll()
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    if stdin_data:
        os.set_blocking(in_w, False)
        poller.register(in_w, select.POLLOUT)
    else:
        os.close(in_w)
        in_w = -1
    deadline_total = t0 + budget
    step_deadline = t0 + per_test
    step = -1
    reason = "exit"
    scan_from = 0
    exited = False
    status = 0
    rusage = None
    while True:
        now = time.monotonic()
        dl = min(deadline_total, step_deadline)
        if now >= dl:
            reason = "timeout"
            break
        if exited and not open_fds:
            break
        try:
            events = poller.poll(max(1, int((dl - now) * 1000) + 1) if not exited else 50)
        except InterruptedError:
            continue
        if exited and not events:
            break  # child gone, a leftover process holds the pipes: stop waiting
        for fd, ev in events:
            if fd == in_w:
                try:
                    n = os.write(in_w, stdin_data[:65536])
                    stdin_data = stdin_data[n:]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    stdin_data = b""
                if not stdin_data:
                    poller.unregister(in_w)
                    os.close(in_w)
                    in_w = -1
                continue
            if fd == pidfd:
                poller.unregister(pidfd)
                _, status, rusage = os.wait4(pid, 0)
                exited = True
                continue
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            buf = bufs[fd]
            buf += data
            if fd == rec_r:
                if len(buf) > max_rec:
                    reason = "output_limit"
                    break
                # track "start" records to arm the per-test deadline
                while True:
                    nl = buf.find(b"\n", scan_from)
                    if nl < 0:
                        break
                    line = bytes(buf[scan_from:nl])
                    scan_from = nl + 1
                    if line.startswith(nonce + b' {"t":"start","i":'):
                        try:
                            step = int(line[len(nonce) + 18:].rstrip(b"}"))
                        except ValueError:
                            continue
                        step_deadline = time.monotonic() + per_test
            elif len(bufs[out_r]) + len(bufs[err_r]) > max_out:
                reason = "output_limit"
                break
        else:
            continue
        break
    if not exited:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        _, status, rusage = os.wait4(pid, 0)
    elapsed = time.monotonic() - t0
    # drain what is already buffered in the pipes (non-blocking)
    for fd in list(open_fds):
        os.set_blocking(fd, False)
        try:
            while len(bufs[fd]) <= max_rec:
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                bufs[fd] += data
        except OSError:
            pass
    for fd in (out_r, err_r, rec_r, pidfd, in_w):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    sweep()
    dirty = not wipe()
    out = bytes(bufs[out_r])
    err = bytes(bufs[err_r])
    return {
        "reason": reason, "step": step,
        "exit": os.waitstatus_to_exitcode(status) if status is not None else None,
        "stdout": out[:max_out].decode("utf-8", "replace"),
        "stderr": err[:65536].decode("utf-8", "replace"),
        "records": bytes(bufs[rec_r][:max_rec]).decode("utf-8", "replace"),
        "elapsed": elapsed, "maxrss_kb": rusage.ru_maxrss if rusage else None, "dirty": dirty,
    }


def sweep() -> None:
    """Kill every process the job left behind (daemons, orphans, fork bombs)."""
    if CFG.get("pidns"):
        # A private pid namespace holds only bwrap's init, us, and what the job left: kill
        # every other pid until none is left (init reaps them).
        for _ in range(500):
            alive = _others_alive()
            if not alive:
                return
            for p in alive:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.001)
        return
    uid = CFG.get("uid")
    if uid is not None:  # root without a pid namespace: kill everything of the slot's uid
        pid = os.fork()
        if pid == 0:
            try:
                os.setresuid(uid, uid, uid)
                me = os.getpid()
                for _ in range(500):  # until no process of the slot uid is left (fork bombs race)
                    try:
                        os.kill(-1, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    time.sleep(0.002)
                    if not any(n.isdigit() and int(n) != me and _owner(n) == uid
                               for n in os.listdir("/proc")):
                        break
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def _owner(pid: str) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def _others_alive() -> list[int]:
    """Pids in our namespace other than init and us that are not yet zombies."""
    me = str(os.getpid())
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    out = []
    for n in names:
        if n.isdigit() and n != "1" and n != me:
            try:
                with open(f"/proc/{n}/stat", "rb") as f:
                    st = f.read()
                if st[st.rfind(b")") + 2:st.rfind(b")") + 3] != b"Z":
                    out.append(int(n))
            except OSError:
                continue
    return out


def wipe() -> bool:
    """Empty the work dir (and shared scratch places when Landlock does not fence them)."""
    ok = True
    targets = [CFG["workdir"]] + list(CFG.get("wipe_extra", []))
    for d in targets:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            p = os.path.join(d, n)
            if p == CFG["workdir"]:
                continue
            ok &= _rm(p)
    return ok


def _rm(p: str) -> bool:
    try:
        if os.path.islink(p) or not os.path.isdir(p):
            os.unlink(p)
            return True
        os.chmod(p, 0o700)
        for n in os.listdir(p):
            if not _rm(os.path.join(p, n)):
                return False
        os.rmdir(p)
        return True
    except OSError:
        return False


def probe() -> dict:
    """Check, from a real sandboxed child, which layers are in force (reported at start)."""
    nonce = "probe"
    spec = {"kind": "steps", "nonce": nonce, "program": "", "steps": [],
            "limits": {"time_per_test_s": 5, "time_total_s": 5, "memory_mb": 512,
                       "max_processes": 4, "max_output_bytes": 65536,
                       "max_file_bytes": 1 << 20}}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = {}
        try:
            child_enter(spec, os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY),
                        os.open(os.devnull, os.O_WRONLY), w)
            res["uid"] = os.getuid()
            try:
                with open("/tmp/.probe_outside", "w"):
                    pass
                res["write_outside_blocked"] = False
            except OSError:
                res["write_outside_blocked"] = True
            import socket
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(0.5)
                try:
                    s.connect(("127.0.0.1", 9))
                    res["net_blocked"] = False
                except ConnectionRefusedError:
                    # refused = someone answered: only safe when the network namespace is empty
                    res["net_blocked"] = bool(CFG.get("netns"))
                except OSError:
                    res["net_blocked"] = True
                finally:
                    s.close()
            except OSError:
                res["net_blocked"] = True
            try:
                os.kill(os.getppid(), 0)
                res["kill_parent_blocked"] = False
            except OSError:
                res["kill_parent_blocked"] = True
            res["seccomp"] = "Seccomp:\t2" in open("/proc/self/status").read() \
                if os.path.exists("/proc/self/status") else SECCOMP is not None
            res["home_hidden"] = not os.path.exists("/root/.bashrc") and not os.path.isdir("/home/") \
                or not os.access("/root", os.R_OK)
        except BaseException as e:  # noqa: BLE001
            res["error"] = f"{type(e).__name__}: {e}"
        os.write(3, json.dumps(res).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        data += b
    os.close(r)
    os.waitpid(pid, 0)
    sweep()
    wipe()
    try:
        os.unlink("/tmp/.probe_outside")
    except OSError:
        pass
    try:
        return json.loads(data or b"{}")
    except ValueError:
        return {"error": "probe gave no answer"}


def main() -> None:
    cfg = read_frame()
    if cfg is None:
        return
    setup(cfg)
    info = {"op": "ready", "pid": os.getpid(), "layers": dict(LAYERS),
            "landlock": LL_FD >= 0 or bool(LAYERS.get("landlock_inherited")),
            "seccomp": SECCOMP is not None}
    info["probe"] = probe()
    write_frame(info)
    while True:
        req = read_frame()
        if req is None:
            return
        try:
            res = run_request(req)
        except Exception as e:  # noqa: BLE001 - report, the parent recycles the slot
            res = {"reason": "internal", "error": f"{type(e).__name__}: {e}", "dirty": True}
        write_frame(res)


if __name__ == "__main__":
    main()
