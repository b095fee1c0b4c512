"""Kernel isolation layers applied to one process: Landlock and seccomp, via raw syscalls.

Standard library only (ctypes): this module runs inside the sandbox, where the interpreter is
started with ``-I -S`` and sees no site-packages. Both layers are unprivileged (they only need
``no_new_privs``), so they work as root and as an ordinary user, inside or outside bubblewrap.

Why these two: Landlock restricts the file system (read-only everywhere we allow, writable only
in the work dir), TCP, and -- from ABI 6 -- signals to processes outside the sandboxed domain (so
the program cannot kill its parent). seccomp removes the syscalls a test program never needs and
that break isolation (ptrace, process_vm_*, mount, namespaces, io_uring, kernel keyrings, ...),
refuses non-Unix sockets when there is no network namespace, and refuses signals to the worker.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_SET_DUMPABLE = 4
SECCOMP_MODE_FILTER = 2

# ---------------------------------------------------------------------------------- Landlock
SYS_landlock_create_ruleset = 444  # same number on every architecture (new syscall table)
SYS_landlock_add_rule = 445
SYS_landlock_restrict_self = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13       # ABI 2
FS_TRUNCATE = 1 << 14    # ABI 3
FS_IOCTL_DEV = 1 << 15   # ABI 5
NET_BIND_TCP = 1 << 0    # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR


def landlock_abi() -> int:
    """Landlock ABI version of the running kernel, 0 when unavailable (old kernel, disabled)."""
    v = _libc.syscall(SYS_landlock_create_ruleset, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return int(v) if v > 0 else 0


def _fs_all(abi: int) -> int:
    acc = (1 << 13) - 1
    if abi >= 2:
        acc |= FS_REFER
    if abi >= 3:
        acc |= FS_TRUNCATE
    if abi >= 5:
        acc |= FS_IOCTL_DEV
    return acc


def landlock_ruleset(read_paths: list[str], write_paths: list[str],
                     write_files: list[str] = ()) -> tuple[int, dict[str, bool]]:
    """Build a ruleset: read+execute under ``read_paths``, everything under ``write_paths``,
    read/write on single ``write_files`` (e.g. /dev/null); no TCP; no signals or abstract Unix
    sockets leaving the domain when the kernel supports scoping. Returns (fd, features) where
    fd is -1 when Landlock is unavailable. The fd is inherited by forked children, which call
    :func:`landlock_restrict`."""
    abi = landlock_abi()
    if abi <= 0:
        return -1, {}
    handled_fs = _fs_all(abi)
    handled_net = (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0
    scoped = (SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL) if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("QQQ", handled_fs, handled_net, scoped)
    elif abi >= 4:
        attr = struct.pack("QQ", handled_fs, handled_net)
    else:
        attr = struct.pack("Q", handled_fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = _libc.syscall(SYS_landlock_create_ruleset, buf, len(attr), 0)
    if fd < 0:
        return -1, {}
    file_rights = FS_EXECUTE | FS_READ_FILE | FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)

    def add(path: str, access: int) -> None:
        try:
            pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return  # a path that does not exist here needs no rule
        try:
            if not os.path.isdir(path):
                access &= file_rights | (FS_IOCTL_DEV if abi >= 5 else 0)
            rule = ctypes.create_string_buffer(struct.pack("=Qi", access & handled_fs, pfd), 12)
            if _libc.syscall(SYS_landlock_add_rule, fd, LANDLOCK_RULE_PATH_BENEATH, rule, 0) < 0:
                raise OSError(ctypes.get_errno(), f"landlock_add_rule({path})")
        finally:
            os.close(pfd)

    for p in read_paths:
        add(p, _READ)
    for p in write_paths:
        add(p, handled_fs)
    for p in write_files:
        add(p, file_rights)
    return int(fd), {"landlock_abi": abi, "landlock_net": bool(handled_net),
                     "landlock_signal_scope": bool(scoped)}


def no_new_privs() -> None:
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def landlock_restrict(fd: int) -> None:
    """Enforce the ruleset on the calling process (irreversible, inherited by its children)."""
    if _libc.syscall(SYS_landlock_restrict_self, fd, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")


def set_dumpable(flag: bool) -> None:
    _libc.prctl(PR_SET_DUMPABLE, int(flag), 0, 0, 0)


# ----------------------------------------------------------------------------------- seccomp
_ARCH = {
    # machine: (AUDIT_ARCH, syscall numbers)
    "x86_64": (0xC000003E, dict(
        ptrace=101, process_vm_readv=310, process_vm_writev=311, mount=165, umount2=166,
        unshare=272, setns=308, kexec_load=246, kexec_file_load=320, bpf=321,
        perf_event_open=298, keyctl=250, add_key=248, request_key=249, userfaultfd=323,
        init_module=175, finit_module=313, delete_module=176, reboot=169, swapon=167,
        swapoff=168, pivot_root=155, chroot=161, open_by_handle_at=304,
        name_to_handle_at=303, io_uring_setup=425, io_uring_enter=426, io_uring_register=427,
        acct=163, settimeofday=164, clock_settime=227, fanotify_init=300, open_tree=428,
        move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442,
        quotactl=179, syslog=103, iopl=172, ioperm=173, pidfd_getfd=438, personality=135,
        clone=56, clone3=435, socket=41, kill=62, tkill=200, tgkill=234, pidfd_open=434,
        setsid=112, setpgid=109)),
    "aarch64": (0xC00000B7, dict(
        ptrace=117, process_vm_readv=270, process_vm_writev=271, mount=40, umount2=39,
        unshare=97, setns=268, kexec_load=104, kexec_file_load=294, bpf=280,
        perf_event_open=241, keyctl=219, add_key=217, request_key=218, userfaultfd=282,
        init_module=105, finit_module=273, delete_module=106, reboot=142, swapon=224,
        swapoff=225, pivot_root=41, chroot=51, open_by_handle_at=265, name_to_handle_at=264,
        io_uring_setup=425, io_uring_enter=426, io_uring_register=427, acct=89,
        settimeofday=170, clock_settime=112, fanotify_init=262, open_tree=428, move_mount=429,
        fsopen=430, fsconfig=431, fsmount=432, fspick=433, mount_setattr=442, quotactl=60,
        syslog=116, pidfd_getfd=438, personality=92, clone=220, clone3=435, socket=198,
        kill=129, tkill=130, tgkill=131, pidfd_open=434, setsid=157, setpgid=154)),
}
_DENY_EPERM = [
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "unshare", "setns",
    "kexec_load", "kexec_file_load", "bpf", "perf_event_open", "keyctl", "add_key",
    "request_key", "userfaultfd", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "pivot_root", "chroot", "open_by_handle_at", "name_to_handle_at",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "acct", "settimeofday",
    "clock_settime", "fanotify_init", "open_tree", "move_mount", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "quotactl", "syslog", "iopl", "ioperm",
    "pidfd_getfd", "personality",
]
_CLONE_NS_FLAGS = 0x7E020000  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
_LD_W_ABS, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_EPERM, _EACCES, _ENOSYS = 1, 13, 38


def _ret_errno(e: int) -> int:
    return 0x00050000 | e


def seccomp_supported() -> bool:
    return platform.machine() in _ARCH and os.path.exists("/proc/self/status") and \
        "Seccomp:" in open("/proc/self/status").read()


def seccomp_program(*, deny_inet: bool, protect_pids: list[int],
                    deny_setsid: bool = False) -> bytes | None:
    """Compile the filter to classic BPF. ``protect_pids``: pids (and negative pgids, -1) the
    program may not signal or pidfd_open. Returns None on unsupported architectures."""
    arch = _ARCH.get(platform.machine())
    if arch is None:
        return None
    audit, nr = arch
    ins: list[tuple[int, int, int, int]] = []

    def stmt(code: int, k: int) -> None:
        ins.append((code, 0, 0, k))

    def ret_if_nr(name: str, ret: int) -> None:
        ins.append((_JEQ, 0, 1, nr[name]))
        stmt(_RET, ret)

    stmt(_LD_W_ABS, 4)                       # seccomp_data.arch
    ins.append((_JEQ, 1, 0, audit))
    stmt(_RET, _KILL_PROCESS)
    stmt(_LD_W_ABS, 0)                       # seccomp_data.nr
    if platform.machine() == "x86_64":       # x32 ABI numbers alias everything: refuse them
        ins.append((0x35, 0, 1, 0x40000000))  # JGE
        stmt(_RET, _ret_errno(_ENOSYS))
    for name in _DENY_EPERM:
        ret_if_nr(name, _ret_errno(_EPERM))
    ret_if_nr("clone3", _ret_errno(_ENOSYS))  # flags live in memory; glibc falls back to clone
    if deny_setsid:
        ret_if_nr("setsid", _ret_errno(_EPERM))
        ret_if_nr("setpgid", _ret_errno(_EPERM))

    def arg0_block(name: str, body: list[tuple[int, int, int, int]]) -> None:
        ins.append((_JEQ, 0, len(body), nr[name]))
        ins.extend(body)

    # clone with namespace flags -> EPERM
    arg0_block("clone", [(_LD_W_ABS, 0, 0, 16), (_JSET, 0, 1, _CLONE_NS_FLAGS),
                         (_RET, 0, 0, _ret_errno(_EPERM)), (_RET, 0, 0, _ALLOW)])
    if deny_inet:
        arg0_block("socket", [(_LD_W_ABS, 0, 0, 16), (_JEQ, 0, 1, 1),  # AF_UNIX
                              (_RET, 0, 0, _ALLOW), (_RET, 0, 0, _ret_errno(_EACCES))])
    protected = sorted({p & 0xFFFFFFFF for p in protect_pids} | {0xFFFFFFFF})
    body = [(_LD_W_ABS, 0, 0, 16)]
    for p in protected:
        body += [(_JEQ, 0, 1, p), (_RET, 0, 0, _ret_errno(_EPERM))]
    body.append((_RET, 0, 0, _ALLOW))
    for name in ("kill", "tkill", "tgkill", "pidfd_open"):
        arg0_block(name, body)
    stmt(_RET, _ALLOW)
    return b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in ins)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_SYS_seccomp = {"x86_64": 317, "aarch64": 277}
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_SPEC_ALLOW = 1 << 2


def seccomp_install(prog: bytes) -> None:
    """Install a filter built by :func:`seccomp_program` (needs no_new_privs first).

    Uses ``SECCOMP_FILTER_FLAG_SPEC_ALLOW``: by default the kernel also turns on the
    speculative-store-bypass mitigation for filtered tasks, which measured here tripled the cost
    of every job; that mitigation protects against side channels between processes, which a
    short-lived test program with no secrets in its sandbox does not need."""
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = _SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    nr = _SYS_seccomp.get(platform.machine())
    if nr is not None and _libc.syscall(nr, SECCOMP_SET_MODE_FILTER,
                                        SECCOMP_FILTER_FLAG_SPEC_ALLOW, ctypes.byref(fprog)) == 0:
        return
    if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
