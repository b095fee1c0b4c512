"""The two trusted processes of one sandbox slot (started by ``llmrl.sandbox.local``).

* The **fork server** (this process) imports the interpreter's common modules once, then for
  every request forks a *fresh* child that drops privileges, applies the per-process layers
  (rlimits, Landlock, seccomp) and runs the untrusted program. It only ever holds programs and
  inputs, never tests or expected values: every child is a copy of its memory. After each
  child it kills every other process of the job (daemons included), wipes the work dir, and
  relays the captured stdout/stderr and the exit status to the trusted parent.
* The **judge server**, forked at start before anything of a job existed, receives the tests
  straight from the parent on its own pipes and runs them (``_judge.py``, a fresh namespace
  per job; a custom checker in a forked judge). It talks to the program's child only through
  two pipes (calls out, strictly serialised values back); its verdict lines reach the parent
  on pipes the child never holds. Neither process ever runs untrusted code.

Standard library only: started by ``python -I -S -B _boot.py``, which gets this module's code
from the parent (no site-packages, no env).
Protocol on fds 0/1 (moved to private fds at start) and on the judge server's two fds: frames
of 4-byte big-endian length + JSON.
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
import _signal
import socket
import struct
import sys
import time
import types

# Set for the slot's interpreter (isolation.py) so that the dynamic linker binds every
# symbol at start-up, here, once: with lazy binding each child resolved (and wrote into the
# GOT pages of) the functions it was first to call. Programs do not see the variable.
os.environ.pop("LD_BIND_NOW", None)

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
           "typing", "operator", "copy", "fractions"):
    try:
        __import__(_m)
    except ImportError:
        pass
# ``random`` registers an after-fork hook that reseeds it in every child: a first call into
# Python code there that cost ~40 copy-on-write page faults per job (measured). Imported
# without the hook; instead the fork server reseeds before each fork (``_reseed``), where
# the pages are already its own, so every child still starts from a fresh urandom seed.
_register_at_fork = os.register_at_fork
os.register_at_fork = lambda **kw: None
try:
    import random
finally:
    os.register_at_fork = _register_at_fork


def _reseed() -> None:
    random.seed(os.urandom(32))  # (256 bits; seed() reads 2.5 KB: 28 vs 16 us per job)


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
_prelude_code = compile(APPS_PRELUDE, "<prelude>", "exec", dont_inherit=True)
_PRELUDE_NS: dict = {}
exec(_prelude_code, _PRELUDE_NS)  # once; each program's namespace gets a copy of the names
_PRELUDE_NS.pop("__builtins__", None)

CTRL_IN = os.dup(0)
CTRL_OUT = os.dup(1)
_devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(_devnull, 0)
os.dup2(_devnull, 1)
os.close(_devnull)
os.set_inheritable(CTRL_IN, False)
os.set_inheritable(CTRL_OUT, False)


def read_frame() -> dict | None:
    return _read_frame(CTRL_IN)


def _read_frame(fd: int) -> dict | None:
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = _read_exact(fd, n)
    if body is None:
        return None
    return _serial.parse_json(body)


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
    _write_frame(CTRL_OUT, obj)


def _write_frame(fd: int, obj: dict) -> None:
    body = _serial.compact_json(obj).encode()
    data = struct.pack(">I", len(body)) + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


# ------------------------------------------------------------------------------- the config
CFG: dict = {}
LL_FD = -1
SECCOMP: bytes | None = None
LAYERS: dict = {}
INHERITED = False  # layers applied once in the fork server (bubblewrap mode)


# Limits every child gets whatever the job: the fork server takes them itself (it needs no
# core dumps, locked memory, message queues or more than a few dozen fds), so that each child
# inherits them instead of paying for the calls (see child_enter).
JOB_INVARIANT_RLIMITS = ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256),
                         (resource.RLIMIT_MEMLOCK, 0), (resource.RLIMIT_MSGQUEUE, 0))


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
    # The std streams every child uses, on fds 0-2 (the server itself writes only to its
    # control fd): installed here once, so a child does not pay for building them.
    sys.stdin, sys.stdout, sys.stderr = _STREAMS
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = _STREAMS
    _oslayers.set_dumpable(False)  # siblings with our uid cannot ptrace / read our memory
    _learn_empty_sizes()  # (before Landlock, which may fence the scratch dirs off)
    for res, val in JOB_INVARIANT_RLIMITS:
        try:
            resource.setrlimit(res, (val, val))
        except (ValueError, OSError):
            pass
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
    _warm_up()
    gc.collect()
    gc.freeze()  # keep the preloaded heap shared copy-on-write across forks


def _warm_up() -> None:
    """Run the child's per-call code here a few times before serving: CPython 3.11 rewrites a
    function's bytecode in place (quickening) after its first calls, and a child that did it
    itself would copy those pages on every job. Pure computation on made-up values."""
    sample = {"a": [1, 2.5, "x", None, True], "b": (3, frozenset({4})), "c": {5}, 6: b"7"}
    link = _Link("warm")
    for _ in range(16):
        plain = _serial.to_plain(sample)
        _serial.from_plain(plain)
        line = _serial.compact_json({"t": "r", "id": 1, "v": plain})
        link.buf += line.encode() + b"\n"
        link.recv()
        _serial.parse_json(line)
        _exc_fields(ValueError("warm"))


# --------------------------------------------------------------------- in the forked child
EX_COMPILE = 113  # exit codes of the stdio child; they only classify failures, never a pass
EX_MEMORY = 114


def child_enter(spec: dict, fds: list[int]) -> None:
    """Become the sandboxed child: fds (0.. in order), session, uid, limits, Landlock, seccomp."""
    os.setsid()
    for k, fd in enumerate(fds):
        os.dup2(fd, k)
    keep = set(range(len(fds)))
    ll = -1
    if LL_FD >= 0:
        ll = len(fds)
        if LL_FD != ll:
            os.dup2(LL_FD, ll)
        keep.add(ll)
    os.closerange(max(keep) + 1, 65536)  # the control pipes and everything else
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
    # (RLIMIT_CORE, NOFILE, MEMLOCK and MSGQUEUE are the same for every job: the fork server
    # took them itself in setup(), and the child inherits them)
    for res, val in ((resource.RLIMIT_AS, mem),
                     (resource.RLIMIT_FSIZE, int(lim["max_file_bytes"])),
                     (resource.RLIMIT_CPU, cpu),
                     (resource.RLIMIT_NPROC, int(lim["max_processes"]) + CFG.get("nproc_base", 0))):
        try:
            resource.setrlimit(res, (val, val))
        except (ValueError, OSError):
            pass
    if not INHERITED:  # (no_new_privs is inherited from the fork server in bubblewrap mode)
        _oslayers.no_new_privs()
    if ll >= 0:
        _oslayers.landlock_restrict(ll)
        os.close(ll)
    if SECCOMP is not None and not INHERITED:
        _oslayers.seccomp_install(SECCOMP)
    # Fresh Python-level state: streams on the new fds, clean __main__, no harness on sys.path.
    # sys.std* already are the fresh streams on fds 0-2 (installed once in the fork server)
    sys.argv = ["solution.py"]
    # (_signal, not signal.signal: its enum conversions ran ~25 page faults' worth of Python)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    # (the preloaded heap stays frozen: a short-lived child never needs to collect it)


def _streams() -> tuple:
    """The child's std streams on fds 0-2, made once in the fork server (which never uses
    them): every child gets fresh, empty copies with its fork, for free."""
    return (io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)),
                             encoding="utf-8", errors="replace"),
            io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
                             encoding="utf-8", errors="backslashreplace"),
            io.TextIOWrapper(io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
                             encoding="utf-8", errors="backslashreplace", line_buffering=True))


_STREAMS = _streams()
_DEVNULL_R = os.open(os.devnull, os.O_RDONLY)  # stdin of children that get no input


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except BaseException:
            pass


class _Link:
    """The child's end of the judge channel: requests on fd 3, nonce-tagged answers on fd 4.
    Nothing written here is evidence of a pass: it only carries values the judge compares."""

    def __init__(self, nonce: str) -> None:
        self.prefix = nonce.encode() + b" "
        self.buf = bytearray()

    def send(self, **kw: object) -> None:
        try:
            line = self.prefix + _serial.compact_json(kw).encode() + b"\n"
        except (TypeError, ValueError):
            line = self.prefix + b'{"t":"internal"}\n'
        while line:
            try:
                n = os.write(4, line)
            except InterruptedError:
                continue
            except OSError:
                return
            line = line[n:]

    def recv(self) -> dict | None:
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line = bytes(self.buf[:nl])
                del self.buf[:nl + 1]
                return _serial.parse_json(line)
            try:
                data = os.read(3, 1 << 16)
            except InterruptedError:
                continue
            if not data:
                return None
            self.buf += data


def _exc_fields(e: BaseException) -> dict:
    name = type(e).__name__ if type(type(e).__name__) is str else "Exception"
    try:
        msg = str(e)[:500]
    except BaseException:
        msg = "<unprintable>"
    return {"e": name, "m": msg if type(msg) is str else ""}


def _load_program(spec: dict, ns: dict, prelude: bool) -> tuple[str, dict] | None:
    """Run the program's top level; None if it loaded, else (kind, fields)."""
    if prelude:
        ns.update(_PRELUDE_NS)
    try:
        code = compile(spec["program"], "solution.py", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as e:
        return "cerr", {"e": type(e).__name__, "m": str(e)[:500]}
    try:
        exec(code, ns)
        if spec.get("imports"):
            exec(compile(spec["imports"], "setup_imports", "exec", dont_inherit=True), ns)
    except SystemExit as e:
        _flush()
        return "exit", {"code": e.code if type(e.code) is int else (0 if e.code is None else 1)}
    except BaseException as e:  # noqa: BLE001 - any failure at import is the program's
        _flush()
        if isinstance(e, MemoryError):
            return "mem", {}
        return "err", _exc_fields(e)
    return None


def _serve(spec: dict) -> None:
    """Load the program, then answer the judge's requests until it closes the channel."""
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    ns = main.__dict__
    ns["__name__"] = "solution"
    link = _Link(spec["nonce"])
    failed = _load_program(spec, ns, prelude=spec.get("prelude", False))
    if failed is not None:
        link.send(t=failed[0], **failed[1])
        return
    names = {}
    for k, v in list(ns.items())[:100000]:
        if type(k) is str and not k.startswith("__"):
            kind = "c" if isinstance(v, type) else "m" if isinstance(v, types.ModuleType) \
                else "f" if callable(v) else "v"
            names[k] = kind
    link.send(t="ready", names=names)
    handles: list = []

    def resolve(ref):
        if ref[0] == "b":
            return getattr(builtins, ref[1])
        if ref[0] == "g":
            try:
                return ns[ref[1]]
            except KeyError:
                raise NameError(f"name {ref[1]!r} is not defined") from None
        return handles[ref[1]]

    def encode(v) -> dict:
        try:
            return {"v": _serial.to_plain(v)}
        except (ValueError, RecursionError):
            handles.append(v)
            return {"h": len(handles) - 1}

    while True:
        req = link.recv()
        if req is None:
            return
        try:
            op = req["op"]
            target = resolve(req["f"])
            if op == "call":
                args = _serial.from_plain(req["a"], ext=resolve)
                kwargs = _serial.from_plain(req["k"], ext=resolve)
                resp = encode(target(*args, **kwargs))
                if req.get("m"):
                    try:
                        resp["a"] = _serial.to_plain(args)
                    except (ValueError, RecursionError):
                        pass
            elif op == "get":
                resp = encode(getattr(target, req["n"]))
            else:
                setattr(target, req["n"], _serial.from_plain(req["v"], ext=resolve))
                resp = {"v": None}
        except SystemExit as e:
            _flush()
            link.send(t="exit", code=e.code if type(e.code) is int else 0)
            return
        except MemoryError:
            link.send(t="mem")
            continue
        except BaseException as e:  # noqa: BLE001
            resp = {"x": _exc_fields(e)["e"], "m": _exc_fields(e)["m"][:300]}
        link.send(t="r", id=req["id"], **resp)


def _run_stdio(spec: dict) -> int:
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    ns = main.__dict__
    ns["__name__"] = "__main__"
    failed = _load_program(spec, ns, prelude=True)
    _flush()
    if failed is None:
        return 0
    kind, f = failed
    if kind == "exit":
        return f["code"] if 0 <= f["code"] < 256 else 1
    try:
        sys.stderr.write(f"{f.get('e', '')}: {f.get('m', '')}\n" if kind != "mem" else "MemoryError\n")
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        pass
    return EX_COMPILE if kind == "cerr" else EX_MEMORY if kind == "mem" else 1


def child_main(spec: dict, fds: list[int]) -> None:
    code = 0
    try:
        child_enter(spec, fds)
        if spec["kind"] == "stdio":
            code = _run_stdio(spec)
        else:
            _serve(spec)
    except SystemExit:
        pass
    except BaseException:  # noqa: BLE001 - never let the harness raise into the fork server
        code = 70
    finally:
        _flush()
        os._exit(code)


# ----------------------------------------------------------------------- in the fork server
def run_request(spec: dict) -> dict:
    """Run one child. ``stdio``: the program with ``stdin``; its stdout is captured here.
    ``serve``: the program answers the judge, whose pipe ends go to the judge server; the
    child is killed as soon as the judge is done (its life pipe closes)."""
    lim = spec["limits"]
    per_test = float(lim["time_per_test_s"])
    budget = float(spec.get("budget_s", lim["time_total_s"]))
    max_out = int(lim["max_output_bytes"])
    serve = spec["kind"] == "serve"
    stdin_data = spec.get("stdin", "").encode()
    # no input: /dev/null (the same EOF as an empty pipe, one pipe fewer per job)
    in_r, in_w = os.pipe() if stdin_data else (_DEVNULL_R, -1)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    fds = [in_r, out_w, err_w]
    mine = [out_w, err_w] + ([in_r] if stdin_data else [])
    life_r = -1
    if serve:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        life_r, life_w = os.pipe()
        fds += [req_r, resp_w]
        mine += [req_r, resp_w]
    _reseed()  # the child's ``random`` (see the preloads)
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child_main(spec, fds)
    t_forked = time.monotonic()
    for fd in mine:
        os.close(fd)
    if serve:
        # The judge's ends go to the judge server; this process keeps only the life pipe.
        socket.send_fds(JUDGE_SOCK, [spec["nonce"].encode()], [req_w, resp_r, life_w])
        for fd in (req_w, resp_r, life_w):
            os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    bufs = {out_r: bytearray(), err_r: bytearray()}
    open_fds = {out_r, err_r}
    poller = select.poll()
    for fd in open_fds:
        poller.register(fd, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    if life_r >= 0:
        poller.register(life_r, select.POLLIN)
    if stdin_data:
        os.set_blocking(in_w, False)
        poller.register(in_w, select.POLLOUT)
    # stdio: one test, per-test limit; serve: the judge times each test, we keep the total.
    deadline = t0 + (min(budget, per_test) if not serve else budget)
    reason = "exit"
    exited = False
    life_done = False
    status = None
    rusage = None
    while True:
        now = time.monotonic()
        if now >= deadline:
            reason = "judge_done" if life_done else "timeout"
            break
        if exited and not open_fds:
            break
        try:
            events = poller.poll(max(1, int((deadline - now) * 1000) + 1) if not exited else 50)
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
            if fd == life_r:
                # The judge is done and has closed its requests: the child ends by itself
                # (flushing its output); a short grace, then it is killed.
                poller.unregister(life_r)
                life_done = True
                deadline = min(deadline, time.monotonic() + 0.05)
                continue
            try:
                data = os.read(fd, 1 << 16)
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                open_fds.discard(fd)
                continue
            bufs[fd] += data
            if len(bufs[out_r]) + len(bufs[err_r]) > max_out:
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
    t_ended = time.monotonic()
    elapsed = t_ended - t0
    # drain what is already buffered in the pipes (non-blocking)
    for fd in list(open_fds):
        os.set_blocking(fd, False)
        try:
            while len(bufs[fd]) <= max_out:
                data = os.read(fd, 1 << 16)
                if not data:
                    break
                bufs[fd] += data
        except OSError:
            pass
    for fd in (out_r, err_r, pidfd, in_w, life_r):
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
    t_drained = time.monotonic()
    sweep()
    t_swept = time.monotonic()
    dirty = not wipe()
    t_wiped = time.monotonic()
    out = bytes(bufs[out_r])
    err = bytes(bufs[err_r])
    return {
        "reason": reason,
        "exit": os.waitstatus_to_exitcode(status) if status is not None else None,
        "stdout": out[:max_out].decode("utf-8", "replace"),
        "stderr": err[:65536].decode("utf-8", "replace"),
        "elapsed": elapsed, "maxrss_kb": rusage.ru_maxrss if rusage else None, "dirty": dirty,
        "phases_ms": {"fork": _ms(t_forked - t0), "run": _ms(t_ended - t_forked),
                      "drain": _ms(t_drained - t_ended), "sweep": _ms(t_swept - t_drained),
                      "wipe": _ms(t_wiped - t_swept),
                      "child_cpu": _ms(rusage.ru_utime + rusage.ru_stime) if rusage else 0.0,
                      "child_minflt": rusage.ru_minflt if rusage else 0},
    }


def _ms(dt: float) -> float:
    return round(dt * 1000, 3)


# ------------------------------------------------------------------------ the judge server
JUDGE_SOCK = None  # the fork server's end of the socket to the judge server
JUDGE_PID = 0


def judge_server(cfg: dict, jin: int, jout: int, sock) -> None:
    """Trusted process forked before any untrusted code ran. Gets the tests straight from the
    parent (they never pass through the fork server, whose memory every child copies), forks
    a fresh judge per job, and relays the judge's verdict lines. Never runs untrusted code."""
    _oslayers.set_dumpable(False)
    # The judge's code (and ``ast``) is imported here, not in the fork server: every page the
    # fork server holds is copied into each child's page tables and torn down at its exit.
    sys.path.insert(0, _HERE)
    import _judge
    sys.path.remove(_HERE)
    if cfg.get("seccomp"):
        try:
            prog = _oslayers.seccomp_program(
                deny_inet=not cfg.get("netns"), protect_pids=[1, os.getppid()],
                deny_setsid=False)
            if prog is not None:
                _oslayers.no_new_privs()
                _oslayers.seccomp_install(prog)
        except OSError:
            pass
    # This process lives for the whole slot and its heap only grows (modules, the compiled
    # tests cache), which the collector would keep rescanning (perf showed gc_collect_main in
    # this process in one profile). After every job the job's garbage is collected and what
    # survives (cache entries, which hold no cycles) is moved out of the collector's sight.
    gc.collect()
    gc.freeze()
    while True:
        req = _read_frame(jin)
        if req is None:
            os._exit(0)
        t_recv = time.monotonic()
        fds: list[int] = []
        if req.get("op") == "serve":
            msg, fds, _, _ = socket.recv_fds(sock, 1024, 3)
            if msg != req["nonce"].encode() or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                _write_frame(jout, {"lines": "", "error": "fd handover out of step"})
                continue
        t0 = time.monotonic()
        if req.get("op") == "serve":
            # Judged here, in a fresh namespace per job: this process never runs untrusted
            # code, and a test that hangs is stopped by the judge's timer (or, at C level,
            # by the parent killing the whole slot).
            buf = bytearray()
            try:
                _judge.judge_main(req, fds[0], fds[1], buf)
            except BaseException as e:  # noqa: BLE001 - report, never die
                buf += json.dumps({"t": "internal", "m": f"{type(e).__name__}: {e}"[:300]}).encode() + b"\n"
            for fd in fds:  # closing the life pipe tells the fork server the judge is done
                os.close(fd)
            t_done = time.monotonic()
            _write_frame(jout, {"lines": bytes(buf).decode("utf-8", "replace"), "killed": False,
                                "elapsed": t_done - t0,
                                "phases_ms": {"fds": _ms(t0 - t_recv), "judge": _ms(t_done - t0)}})
            del buf
            gc.collect()
            gc.freeze()
            continue
        r, w = os.pipe()
        _reseed()  # a checker's ``random`` (no after-fork hook, see the preloads)
        pid = os.fork()
        t_forked = time.monotonic()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                for fd in (jin, jout, sock.fileno()):
                    try:
                        os.close(fd)
                    except OSError:
                        pass
                _judge.check_main(req, w)
            except BaseException:  # noqa: BLE001
                code = 70
            finally:
                os._exit(code)
        os.close(w)
        buf = bytearray()
        deadline = t0 + float(req.get("budget_s", req["limits"]["time_total_s"])) + 0.5
        killed = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                killed = True
                break
            rr, _, _ = select.select([r], [], [], left)
            if not rr:
                continue
            data = os.read(r, 1 << 16)
            if not data:
                break
            buf += data
        if killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        os.waitpid(pid, 0)
        os.close(r)
        t_done = time.monotonic()
        _write_frame(jout, {"lines": bytes(buf).decode("utf-8", "replace"), "killed": killed,
                            "elapsed": t_done - t0,
                            "phases_ms": {"fds": _ms(t0 - t_recv), "fork": _ms(t_forked - t0),
                                          "judge": _ms(t_done - t_forked)}})


def sweep() -> None:
    """Kill every process the job left behind (daemons, orphans, fork bombs)."""
    if CFG.get("pidns"):
        # A private pid namespace holds only bwrap's init, us, and what the job left: kill
        # every other pid until none is left (init reaps them).
        if _only_servers_left():
            return
        for _ in range(500):
            _reap_strays()
            left = _leftovers()
            if not left:
                return
            for p, zombie in left.items():
                if not zombie:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
            # until the dead are reaped too (by init, or by _reap_strays): a zombie still
            # counts against RLIMIT_NPROC of the next job's uid
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


def _only_servers_left() -> bool:
    """Fast path: a process the job left behind is either an orphan, a child of the
    namespace's init, or (made with ``clone(CLONE_PARENT)``) a child of this server. If init's
    only child is this server and ours is the judge server, there is nothing to kill (two
    reads instead of a /proc scan). (Until issue 9's second pass this compared init's
    children with both servers, which never matched: every job took the scan.)"""
    me = os.getpid()
    return _children_of(1) == [me] and _children_of(me) == [JUDGE_PID]


def _children_of(pid: int) -> list[int] | None:
    try:
        fd = os.open(f"/proc/{pid}/task/{pid}/children", os.O_RDONLY)
        try:
            return [int(k) for k in os.read(fd, 65536).split()]
        finally:
            os.close(fd)
    except (OSError, ValueError):
        return None


def _reap_strays() -> None:
    """Reap the job's processes that were our children (``CLONE_PARENT`` siblings of the
    program; orphans are init's to reap), so no zombie outlives the job."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _leftovers() -> dict[int, bool]:
    """Pids in our namespace other than init, us, the judge server and its judges, each with
    whether it is already a zombie (dead, not yet reaped). (A job's process cannot become the
    judge server's child: orphans go to init, CLONE_PARENT siblings to us.)"""
    me = str(os.getpid())
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    procs: dict[int, tuple[int, bool]] = {}
    for n in names:
        if n.isdigit() and n != "1" and n != me:
            try:
                with open(f"/proc/{n}/stat", "rb") as f:
                    st = f.read()
                rest = st[st.rfind(b")") + 2:].split()
                procs[int(n)] = (int(rest[1]), rest[0] == b"Z")
            except (OSError, IndexError, ValueError):
                continue
    keep = {JUDGE_PID}
    changed = True
    while changed:
        changed = False
        for p, (pp, _) in procs.items():
            if pp in keep and p not in keep:
                keep.add(p)
                changed = True
    return {p: z for p, (_, z) in procs.items() if p not in keep}


# Directories whose size counts their entries (tmpfs: 20 bytes per entry), with their size
# when empty, found at setup by creating and removing a file (_learn_empty_sizes): there a
# wipe after a job that left nothing reads one stat instead of listing the directory. Exact on
# tmpfs (every link, create, rename in or out changes the size; a directory's size cannot be
# set); elsewhere (a size that does not move) the listing is always done.
_EMPTY_DIR_SIZE: dict[str, int] = {}


def _wipe_targets() -> list[str]:
    return [CFG["workdir"]] + list(CFG.get("wipe_extra", []))


def _learn_empty_sizes() -> None:
    for d in _wipe_targets():
        probe_file = os.path.join(d, ".llmrl-dir-size-probe")
        try:
            if os.listdir(d):
                continue
            empty = os.stat(d).st_size
            os.close(os.open(probe_file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            try:
                one = os.stat(d).st_size
            finally:
                os.unlink(probe_file)
            if one > empty and os.stat(d).st_size == empty:
                _EMPTY_DIR_SIZE[d] = empty
        except OSError:
            continue


def wipe() -> bool:
    """Empty the work dir (and shared scratch places when Landlock does not fence them)."""
    ok = True
    for d in _wipe_targets():
        empty = _EMPTY_DIR_SIZE.get(d)
        try:
            if empty is not None and os.stat(d).st_size == empty:
                continue  # nothing in it (see _EMPTY_DIR_SIZE)
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
            child_enter(spec, [os.open(os.devnull, os.O_RDONLY), os.open(os.devnull, os.O_WRONLY),
                               os.open(os.devnull, os.O_WRONLY), w])
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
    global JUDGE_SOCK, JUDGE_PID
    cfg = read_frame()
    if cfg is None:
        return
    # The judge server is forked first, before this process holds anything of a job, and
    # talks to the parent on its own pipes (cfg["judge_fds"]).
    jin, jout = cfg["judge_fds"]
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        os.close(CTRL_IN)
        os.close(CTRL_OUT)
        mine.close()
        try:
            judge_server(cfg, jin, jout, theirs)
        finally:
            os._exit(0)
    theirs.close()
    os.close(jin)
    os.close(jout)
    JUDGE_SOCK, JUDGE_PID = mine, pid
    cfg = dict(cfg, protect_pids=list(cfg.get("protect_pids", [])) + [pid])
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
