"""Forging attacks against every test form: the program tries to *write* its verdict.

Each hostile program combines a correct-looking surface (the function the tests call exists)
with one way of reaching the harness from inside the untrusted process: walking frames to the
harness's locals, searching ``gc.get_objects()`` for the nonce and the record writer,
monkey-patching the serialiser / ``json``, writing nonce-tagged "pass" records to every
inherited file descriptor, racing the channel from a thread, exiting from ``atexit`` after
forging, or ``os._exit(0)`` early. None of them knows the expected values (they never enter its
process), so every one must score as a failure, with 0 tests passed.

The records forged are those of the old in-process harness (``ok`` / ``val`` / ``verdict`` /
``done``) *and* of the current channel (``ready`` and answers for every request id), so the
suite also shows what changed: on the old harness the frame-walking forger passed the
HumanEval-style ``check(candidate)`` tests (see docs/sandbox.md).
"""
from __future__ import annotations

import json

import pytest

from llmrl.sandbox import AssertTests, CallTests, Job, Limits, Outcome, StdioTests, local_executor

FAST = Limits(time_per_test_s=2.0, time_total_s=6.0, memory_mb=512, max_processes=16,
              max_output_bytes=64 * 1024)

# Shared forging kit: finds every harness object and nonce it can and writes "pass" records of
# every format to everything that looks like a record channel.
KIT = r'''
import sys, os, gc, json, threading, atexit

class _Eq:
    def __eq__(self, o): return True
    def __ne__(self, o): return False
    def __bool__(self): return True
    def __hash__(self): return 0
    def __len__(self): return 13
    def __getattr__(self, n): return lambda *a, **k: _Eq()

def _nonces():
    out = set()
    fr = sys._getframe()
    while fr is not None:
        for v in list(fr.f_locals.values()):
            if isinstance(v, dict) and isinstance(v.get("nonce"), str):
                out.add(v["nonce"])
            p = getattr(v, "prefix", None)
            if isinstance(p, bytes):
                out.add(p.decode().strip())
        fr = fr.f_back
    for o in gc.get_objects():
        try:
            if isinstance(o, dict) and isinstance(o.get("nonce"), str):
                out.add(o["nonce"])
            p = getattr(o, "prefix", None) if type(o).__name__ in ("_Rec", "_Link") else None
            if isinstance(p, bytes):
                out.add(p.decode().strip())
        except Exception:
            pass
    return out

def _payload():
    lines = []
    for n in _nonces():
        recs = [{"t": "loaded"}, {"t": "ready", "names": {}}]
        for i in range(64):
            recs += [{"t": "start", "i": i}, {"t": "ok", "i": i}, {"t": "r", "id": i + 1, "v": True}]
        recs.append({"t": "done"})
        lines += [n + " " + json.dumps(r, separators=(",", ":")) for r in recs]
    return ("\n".join(lines) + "\n").encode()

def _harness_writers():
    found = []
    fr = sys._getframe()
    while fr is not None:
        for v in list(fr.f_locals.values()):
            if type(v).__name__ in ("_Rec", "_Link", "Out", "Chan") and v not in found:
                found.append(v)
        fr = fr.f_back
    for o in gc.get_objects():
        try:
            if type(o).__name__ in ("_Rec", "_Link", "Out", "Chan") and o not in found:
                found.append(o)
        except Exception:
            pass
    return found

_FORGED = []

def _forge():
    # Exactly one well-formed record per test (several would count as tampering), through the
    # harness's own writer when one is reachable, else on every inherited fd.
    if _FORGED:
        return _Eq()
    _FORGED.append(1)
    writers = _harness_writers()
    for w in writers:
        emit = w.send if hasattr(w, "send") else w
        try:
            emit(t="loaded")
            emit(t="ready", names={})
            for i in range(64):
                emit(t="start", i=i)
                emit(t="ok", i=i)
            emit(t="done")
        except Exception:
            pass
    if not writers:
        data = _payload()
        for fd in range(0, 256):
            try:
                os.write(fd, data)
            except OSError:
                pass
    return _Eq()
'''

ATTACKS = {
    # walk frames / gc at import, forge, then leave before any test runs
    "frame_walk_exit": "_forge()\nos._exit(0)\n",
    "gc_forge_and_stay": "_forge()\n",
    # lie through the serialiser and json: every value encodes as True / every record as ok
    "patch_serialiser": (
        "for _m in list(sys.modules.values()):\n"
        "    for _n in ('to_plain', 'encode'):\n"
        "        if hasattr(_m, _n) and getattr(_m, '__name__', '') in ('_serial', 'llmrl.sandbox._serial'):\n"
        "            setattr(_m, _n, lambda *a, **k: True)\n"
        "_real_dumps = json.dumps\n"
        "json.dumps = lambda o, *a, **k: _real_dumps(dict(o, ok=True, v=True, s='pass') if isinstance(o, dict) else o, *a, **k)\n"
        "_forge()\n"),
    "inherited_fds": "for _fd in range(3, 1024):\n    try:\n        os.write(_fd, _payload())\n    except OSError:\n        pass\n",
    "thread_race": ("def _spam():\n    for _ in range(200):\n        _FORGED.clear()\n        _forge()\n"
                    "threading.Thread(target=_spam, daemon=True).start()\n"),
    "atexit_exit": "atexit.register(lambda: (_forge(), os._exit(0)))\n",
    "os_exit_early": "os._exit(0)\n",
}

BODY = "    _forge()\n    return _Eq()\n"


def _program(attack: str, fn: str, cls: bool = False) -> str:
    src = KIT + ATTACKS[attack]
    if cls:
        return src + f"class Solution:\n    def {fn}(self, *a, **k):\n{BODY.replace('    ', '        ')}"
    return src + f"def {fn}(*a, **k):\n{BODY}"


MBPP = AssertTests(["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"])
HUMANEVAL = AssertTests(  # a check(candidate) with a loop and a tolerance: runs whole
    ["check(add)"],
    "import math\n\ndef check(candidate):\n    for i in range(5):\n"
    "        assert candidate(i, 1) == i + 1\n    assert math.isclose(candidate(0.1, 0.2), 0.3)\n")
STDIO = StdioTests(["1 2\n", "5 6\n"], ["3", "11"])
CALL = CallTests("add", [[1, 2], [5, 6]], [3, 11])


@pytest.fixture(scope="module")
def ex():
    with local_executor(workers=2) as e:
        yield e


CASES = [(form, attack) for form in ("mbpp", "humaneval", "apps_stdio", "apps_call", "apps_call_class")
         for attack in ATTACKS]


@pytest.mark.parametrize("form,attack", CASES, ids=[f"{f}-{a}" for f, a in CASES])
def test_forging_scores_as_failure(ex, form, attack):
    tests = {"mbpp": MBPP, "humaneval": HUMANEVAL, "apps_stdio": STDIO, "apps_call": CALL,
             "apps_call_class": CALL}[form]
    prog = _program(attack, "add", cls=form == "apps_call_class")
    if form == "apps_stdio":
        prog += "print('forged')\n"
    [r] = ex.run([Job(prog, tests, FAST, stop_on_first_failure=False)])
    assert r.outcome is not Outcome.PASS, r
    assert r.passed == 0, (form, attack, r.tests)


def test_honest_programs_still_pass_every_form(ex):
    add = "def add(a, b):\n    return a + b\n"
    jobs = [Job(add, MBPP), Job(add, HUMANEVAL), Job(add, CALL),
            Job("class Solution:\n    def add(self, a, b):\n        return a + b\n", CALL),
            Job("a, b = map(int, input().split())\nprint(a + b)\n", STDIO)]
    assert [r.outcome for r in ex.run(jobs)] == [Outcome.PASS] * 5


def test_proxy_semantics(ex):
    """What the judge's proxies preserve: program classes (handles), mutated arguments, a
    program function shadowing a built-in, built-ins passed as values; and what they refuse:
    a program's always-equal object, or its redefinition of a built-in the test itself uses."""
    node = ("class Node:\n    def __init__(self, d):\n        self.data = d\n        self.left = None\n"
            "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n")
    cases = [
        (node, AssertTests(["assert depth(root) == 2", "assert root.left.data == 2"],
                           "root = Node(1)\nroot.left = Node(2)"), Outcome.PASS),
        ("def s(l):\n    l.sort()\n", AssertTests(["x = [3, 1]\ns(x)\nassert x == [1, 3]"]), Outcome.PASS),
        ("def sum(a, b):\n    return a - b\n", AssertTests(["assert sum(3, 1) == 2"]), Outcome.PASS),
        ("def drop(xs, t):\n    return [x for x in xs if not isinstance(x, t)]\n",
         AssertTests(["assert drop((1, 'a'), int) == ['a']"]), Outcome.PASS),
        ("class A:\n    def __eq__(self, o):\n        return True\ndef f():\n    return A()\n",
         AssertTests(["assert f() == 1"]), Outcome.WRONG_ANSWER),
        ("def len(x):\n    return 3\ndef f():\n    return 0\n", AssertTests(["assert len(f()) == 3"]),
         Outcome.RUNTIME_ERROR),
        ("import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 5.0\n",
         AssertTests(["assert math.isclose(f(), 0.3)"]), Outcome.WRONG_ANSWER),
    ]
    got = [r.outcome for r in ex.run([Job(p, t, FAST) for p, t, _ in cases])]
    assert got == [want for _, _, want in cases], got


def test_per_test_time_is_measured(ex):
    prog = "import time\ndef f(x):\n    time.sleep(x)\n    return x\n"
    [r] = ex.run([Job(prog, AssertTests(["assert f(0) == 0", "assert f(0.3) == 0.3"]), FAST)])
    assert r.outcome is Outcome.PASS
    assert r.tests[0].time_s < 0.2 and 0.25 < r.tests[1].time_s < 1.5, r.tests
    [r] = ex.run([Job("import time\ntime.sleep(0.2)\nprint(input())\n", StdioTests(["x\n"], ["x"]), FAST)])
    assert r.outcome is Outcome.PASS and r.tests[0].time_s >= 0.2, r.tests


# ------------------------------------------------------------------- whole benchmarks
GENERIC = {  # forge at import and leave; or race from a thread, forge at exit, and stay
    "exit": KIT + ATTACKS["frame_walk_exit"],
    "race": KIT + ATTACKS["thread_race"] + ATTACKS["atexit_exit"] + "_forge()\n",
    "null": "",  # no attack, functions return None: what any program passes (``assert True``)
}


def _forger_for(problem, kind: str) -> str:
    """A generic forger for one benchmark problem: the attack kit at top level, and every
    function name the tests call defined to forge and return an always-equal object."""
    import ast
    from llmrl.sandbox.jobs import AssertTests as _A, CallTests as _C, StdioTests as _S
    attack = GENERIC[kind]
    body = "    return None\n" if kind == "null" else BODY
    t = problem.tests
    if isinstance(t, _S):
        return attack + "print('forged')\n"
    if isinstance(t, _C):
        return attack + f"def {t.fn_name}(*a, **k):\n{body}" + \
            f"class Solution:\n    def {t.fn_name}(self, *a, **k):\n" + \
            "".join("    " + x for x in body.splitlines(True))
    assert isinstance(t, _A)
    if problem.program_prefix:  # HumanEval: the completion is the body, then top-level code
        return ("    return None\n" if kind == "null" else "    return _forge()\n") + attack
    names = set()
    for a in t.asserts:
        try:
            tree = ast.parse(a)
        except SyntaxError:
            continue
        names |= {c.func.id for c in ast.walk(tree) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
    return attack + "".join(f"def {n}(*a, **k):\n{body}" for n in sorted(names))


@pytest.mark.requires_data("mbpp")
@pytest.mark.requires_data("humaneval")
@pytest.mark.requires_data("apps")
def test_generic_forger_passes_no_benchmark_problem(ex):
    from llmrl.eval.benchmarks import load_apps, load_humaneval, load_mbpp
    problems = load_humaneval() + load_mbpp("all") + load_apps(file="coderl5") + load_apps(file="mapcoder128")
    lim = Limits(time_per_test_s=4.0, time_total_s=8.0)
    jobs = [Job(p.program_prefix + _forger_for(p, kind), p.tests, lim, stop_on_first_failure=False,
                id=f"{kind}:{p.task_id}") for kind in GENERIC for p in problems]
    results = ex.run(jobs)
    null = {r.id.split(":", 1)[1]: {t.index for t in r.tests if t.outcome is Outcome.PASS}
            for r in results if r.id.startswith("null:")}
    by: dict = {}
    beyond = {}
    for r in results:
        kind, task = r.id.split(":", 1)
        b = by.setdefault(f"{kind}:{task.split('/')[0]}", {"problems": 0, "passed": 0, "tests_beyond_null": 0})
        b["problems"] += 1
        b["passed"] += r.outcome is Outcome.PASS
        extra = {t.index for t in r.tests if t.outcome is Outcome.PASS} - null[task]
        b["tests_beyond_null"] += len(extra)
        if kind != "null" and (extra or r.outcome is Outcome.PASS):
            beyond[r.id] = sorted(extra)
    print(json.dumps(by))
    assert beyond == {}, beyond


def test_sandboxfusion_refuses_test_code_it_cannot_judge_safely():
    """SandboxFusion runs the program and any test code in one process: only asserts whose
    expected value stays on this side are sent; the rest is refused before any request."""
    from llmrl.sandbox import SandboxFusionExecutor
    with SandboxFusionExecutor("http://127.0.0.1:9", timeout_s=2) as sf:
        [r] = sf.run([Job("def add(a, b):\n    return a + b\n", HUMANEVAL)])
    assert r.outcome is Outcome.SANDBOX_ERROR and "trusted judge" in r.detail, r
