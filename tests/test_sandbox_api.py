"""The sandbox API on the real sandbox: test forms, verdict rules, serialisation, HTTP service."""
from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import pytest

from llmrl.sandbox import (
    AssertTests, CallTests, CheckerTests, HTTPExecutor, Job, JobResult, Limits, Outcome,
    StdioTests, isolation_report, local_executor,
)
from llmrl.sandbox import _serial
from llmrl.sandbox.server import run_in_thread
from llmrl.sandbox.verdict import apps_call_equal, apps_stdio_equal, plan_asserts

ADD = "def add(a, b):\n    return a + b\n"


@pytest.fixture(scope="module")
def ex():
    with local_executor(workers=2) as e:
        yield e


@pytest.fixture(scope="module")
def server(ex):
    url, stop = run_in_thread(ex, token="t0ken", max_body_bytes=1 << 20, max_jobs_per_request=64)
    yield url
    stop()


def test_serialiser_is_strict():
    assert _serial.decode(_serial.encode([1, (2.5, None), {"a": {1, 2}}, b"x", float("inf")])) == \
        [1, (2.5, None), {"a": {1, 2}}, b"x", float("inf")]
    class I(int):
        pass
    with pytest.raises(_serial.Unserialisable):
        _serial.encode([I(1)])
    with pytest.raises(_serial.Unserialisable):
        _serial.decode('["x", 1]')


def test_serialiser_flat_sequences_keep_every_check():
    # lists/tuples of scalars take an inline path (no call per item): the same exact-type
    # checks, item budget and tags as the recursive one
    class S(str):
        pass
    for bad in ([1, True, S("x")], (None, S("y")), [[1, S("z")]]):
        with pytest.raises(_serial.Unserialisable):
            _serial.to_plain(bad)
    with pytest.raises(_serial.Unserialisable, match="too large"):
        _serial.to_plain(list(range(10)), budget=[5])
    _serial.to_plain(list(range(4)), budget=[5])
    for v in ([1, "a", None, True], (1, "a"), [(1, 2), [3, [4, "x"]]], ()):
        back = _serial.from_plain(_serial.to_plain(v))
        assert back == v and type(back) is type(v)
    for bad in (["l", 1.5], ["t", ["x", 1]], ["l", {}]):
        with pytest.raises(_serial.Unserialisable):
            _serial.from_plain(bad)


def test_plans_keep_expected_values_out_of_the_sandbox():
    plans = plan_asserts(["assert add(1, 2) == 3", "assert 3 == add(1, 2)",
                          "assert abs(add(0.1, 0.2) - 0.3) < 1e-9", "assert add(1, 1) is True",
                          "for i in range(3):\n    assert add(i, 0) == i"], "", ADD)
    assert [p.kind for p in plans] == ["pair", "pair", "replay", "is", "stmt"]
    assert plans[0].step == {"k": "expr", "src": "add(1, 2)"} and plans[0].expected == 3
    assert plans[2].step["calls"] == ["add(0.1, 0.2)"]  # the 0.3 never enters the sandbox


def test_apps_comparisons():
    assert apps_stdio_equal("1 2  \n3\n\n", "1 2\n3")
    assert apps_stdio_equal("1.0000001\n", "1.0")
    assert not apps_stdio_equal("1.1\n", "1.0")
    assert apps_call_equal((1, 2), [1, 2]) and apps_call_equal([1, 2], [[1, 2]])
    assert not apps_call_equal(3, [4])


def test_all_test_forms(ex):
    jobs = [
        Job(ADD, AssertTests(["assert add(1, 2) == 3", "assert add('a', 'b') == 'ab'"])),
        Job(ADD, AssertTests(["assert add(1, 2) == 4"])),
        Job("import math\n" + ADD, AssertTests(["assert math.isclose(add(0.1, 0.2), 0.3)",
                                                "assert add(1, 1)", "assert not add(0, 0)"])),
        Job("def sq(x):\n    return x * x\n", AssertTests(["assert helper(sq) == 9"],
                                                         "def helper(f):\n    return f(3)\n")),
        Job("n = int(input())\nprint(n * 2)\n", StdioTests(["2\n", "5\n"], ["4", "10"])),
        Job("class Solution:\n    def twice(self, xs):\n        return tuple(2 * x for x in xs)\n",
            CallTests("twice", [[[1, 2]], [[3]]], [[2, 4], [[6]]])),
        Job("print(int(input()) + 1)", CheckerTests(["1", "41"], "def check(i, o, d):\n"
                                                     "    return int(o) == int(i) + 1 == d\n", [2, 42])),
        Job("def f(:\n", AssertTests(["assert f() == 1"])),
        Job("raise ValueError('at import')\n", AssertTests(["assert f() == 1"])),
        Job("def f():\n    return 1 / 0\n", AssertTests(["assert f() == 1"])),
    ]
    rs = ex.run(jobs)
    assert [r.outcome for r in rs] == [
        Outcome.PASS, Outcome.WRONG_ANSWER, Outcome.PASS, Outcome.PASS, Outcome.PASS,
        Outcome.PASS, Outcome.PASS, Outcome.COMPILE_ERROR, Outcome.COMPILE_ERROR,
        Outcome.RUNTIME_ERROR], rs
    assert rs[0].passed == rs[0].total == 2
    assert "ZeroDivisionError" in rs[9].detail


def test_programs_compile_as_plain_python(ex):
    """The sandbox's own modules use ``from __future__ import annotations``; a program, a test or a
    setup must not inherit that flag, or annotations turn into strings and an undefined annotation
    name passes where plain Python (and the original APPS harness) raises NameError."""
    prog = "def f(x: int) -> int:\n    return x\n"
    bad = "def g(x: UndefinedName):\n    return x\n"
    rs = ex.run([
        Job(prog + "print(f.__annotations__)\n", StdioTests([""], ["{'x': <class 'int'>, 'return': <class 'int'>}"])),
        Job(prog, AssertTests(["def h(y: int): pass\nassert h.__annotations__ == {'y': int}"])),
        Job(prog, AssertTests(["assert h(1) == 1"], "def h(y: int): return y\nassert h.__annotations__ == {'y': int}\n")),
        Job("n = int(input())\ndef f(x: int): return x\nprint(f.__annotations__['x'] is int)\n",
            StdioTests(["1\n"], ["True"])),
        Job(bad, AssertTests(["assert g(1) == 1"])),
    ])
    assert [r.outcome for r in rs] == [Outcome.PASS] * 4 + [Outcome.COMPILE_ERROR], rs
    assert "NameError" in rs[4].detail


def test_test_case_average_mode(ex):
    prog = "n = int(input())\nprint(n if n < 3 else -1)\n"
    [r] = ex.run([Job(prog, StdioTests(["1", "2", "3", "4"], ["1", "2", "3", "4"]),
                      stop_on_first_failure=False)])
    assert (r.outcome, r.passed, r.total, len(r.tests)) == (Outcome.WRONG_ANSWER, 2, 4, 4)


def test_async_form_and_roundtrip(ex):
    job = Job(ADD, AssertTests(["assert add(2, 2) == 4"]), Limits(time_per_test_s=2), id="j1")
    assert Job.from_dict(json.loads(json.dumps(job.to_dict()))) == job
    [r] = asyncio.run(ex.arun([job]))
    assert r.ok and r.id == "j1"
    assert JobResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r


def test_isolation_report_says_what_is_active():
    rep = isolation_report()
    assert rep["mode"] == "bwrap" and rep["seccomp"] is True and rep["landlock"] is True
    assert rep["probe_network_blocked"] and rep["probe_write_outside_blocked"]


def test_http_executor_same_results(ex, server):
    jobs = [Job(ADD, AssertTests([f"assert add({i}, 1) == {i + 1 if i % 2 else 0}"])) for i in range(10)]
    local = [r.outcome for r in ex.run(jobs)]
    remote = HTTPExecutor([server, server], token="t0ken", chunk_size=3).run(jobs)
    assert [r.outcome for r in remote] == local
    from llmrl.sandbox.client import SandboxAuthError
    with pytest.raises(SandboxAuthError, match="401"):  # a refused token is loud (tests/test_sandbox_token.py)
        HTTPExecutor([server], token="wrong").run(jobs[:1])


def _post(url: str, data: bytes, token: str | None = "t0ken") -> tuple[int, dict]:
    req = urllib.request.Request(url + "/run", data=data, method="POST",
                                 headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_http_rejects_bad_requests(server):
    with urllib.request.urlopen(server + "/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"
    assert _post(server, b"{}", token=None)[0] == 401
    assert _post(server, b"not json")[0] == 400
    assert _post(server, b'{"jobs": 3}')[0] == 400
    assert _post(server, b'{"jobs": [{"program": 1, "tests": {}}]}')[0] == 400
    assert _post(server, json.dumps({"jobs": [{"program": "", "tests": {"kind": "assert",
                 "asserts": []}, "limits": {"memory_mb": -1}}]}).encode())[0] == 400
    assert _post(server, b"[" * 100000 + b"]" * 100000)[0] == 400
    assert _post(server, b"x" * (2 << 20))[0] == 413
    many = {"jobs": [{"program": "", "tests": {"kind": "assert", "asserts": []}}] * 65}
    assert _post(server, json.dumps(many).encode())[0] == 413
    code, body = _post(server, json.dumps({"jobs": [Job(ADD, AssertTests(
        ["assert add(1, 1) == 2"])).to_dict()]}).encode())
    assert code == 200 and body["results"][0]["outcome"] == "pass"


def _other_python() -> str | None:
    """A CPython >= 3.10 of another minor version than this one, if the machine has one."""
    import glob
    import shutil
    import sys
    for v in ("3.13", "3.12", "3.10", "3.11"):
        if v == f"{sys.version_info[0]}.{sys.version_info[1]}":
            continue
        found = next(iter(sorted(glob.glob(f"/root/.pyenv/versions/{v}.*/bin/python{v}")
                                 + glob.glob(f"/usr/bin/python{v}"))), None) or shutil.which(f"python{v}")
        if found:
            return found
    return None


def test_slots_run_by_another_interpreter():
    """``python=``: the slots (fork server, judge server) and the programs run on another
    CPython; the slot's code is compiled by that interpreter (marshal differs per version) and
    every test form still works."""
    other = _other_python()
    if other is None:
        pytest.skip("no CPython >= 3.10 of another version on this machine")
    with local_executor(workers=1, python=other) as e:
        v = e.layers["python"]
        rs = e.run([
            Job("import sys\nprint('%d.%d' % sys.version_info[:2])\n", StdioTests([""], [v])),
            Job(ADD, AssertTests(["assert add(1, 2) == 3"])),
            Job(ADD, AssertTests(["assert add(1, 2) == 4"])),
            Job("class Solution:\n    def twice(self, xs):\n        return [2 * x for x in xs]\n",
                CallTests("twice", [[[1, 2]]], [[2, 4]])),
        ])
    import sys
    assert v != f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert [r.outcome for r in rs] == [Outcome.PASS, Outcome.PASS, Outcome.WRONG_ANSWER, Outcome.PASS], rs


def test_bad_slot_interpreter_is_refused_before_any_slot_starts(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from llmrl.cli import app
    with pytest.raises(ValueError, match="no such executable"):
        local_executor(python=str(tmp_path / "python9"))
    with pytest.raises(ValueError, match="does not run as a Python interpreter"):
        local_executor(python="true")
    monkeypatch.setenv("LLMRL_SANDBOX_PYTHON", "true")
    with pytest.raises(ValueError, match="LLMRL_SANDBOX_PYTHON"):
        local_executor()
    r = CliRunner().invoke(app, ["sandbox", "check", "--python", str(tmp_path / "python9")], env={"COLUMNS": "400"})
    assert r.exit_code == 2 and "no such executable" in r.output
