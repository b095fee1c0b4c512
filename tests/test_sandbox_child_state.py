"""What every sandboxed child starts with, now that the fork server prepares it for them
(issue 9's CPU cuts): a fresh random seed per job, the same environment and limits as before,
and frames parsed strictly. Real sandbox, real programs."""
from __future__ import annotations

import json

import pytest

from llmrl.sandbox import CallTests, Job, Limits, Outcome, StdioTests, local_executor
from llmrl.sandbox import _serial

LIM = Limits(time_per_test_s=5.0, time_total_s=10.0, memory_mb=300, max_processes=8,
             max_file_bytes=1 << 20)


@pytest.fixture(scope="module")
def ex():
    with local_executor(workers=1) as e:  # one slot: every job is a child of the same server
        yield e


def _stdout(ex, prog: str, n: int = 1) -> list[str]:
    res = ex.run([Job(prog, StdioTests([""], ["?"]), LIM) for _ in range(n)])
    assert all(r.outcome is Outcome.WRONG_ANSWER for r in res), [(r.outcome, r.detail) for r in res]
    return [r.stdout.strip() for r in res]


def test_every_child_gets_a_fresh_random_seed(ex):
    # random's own after-fork hook is not installed in the fork server; the server reseeds
    # before each fork. Same values in two jobs would mean they share one seed.
    outs = _stdout(ex, "import random\nprint(random.getrandbits(64), random.random())", n=6)
    assert len(set(outs)) == 6, outs
    # the judged path (the program answers the judge) forks the same way
    prog = "import random\nV = random.getrandbits(64)\ndef v():\n    return V\n"
    res = ex.run([Job(prog, CallTests("v", [[]], [-1]), LIM) for _ in range(4)])
    details = {r.tests[0].detail for r in res}
    assert all(r.outcome is Outcome.WRONG_ANSWER for r in res)
    assert len(details) == 4 and all(d.startswith("got ") for d in details), details


def test_environment_and_limits_are_the_jobs(ex):
    prog = ("import os, resource, json\n"
            "R = resource\n"
            "print(json.dumps({'env': sorted(os.environ),"
            " 'lim': {n: R.getrlimit(getattr(R, n)) for n in ('RLIMIT_CORE', 'RLIMIT_NOFILE',"
            " 'RLIMIT_MEMLOCK', 'RLIMIT_MSGQUEUE', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CPU')}}))")
    [out] = _stdout(ex, prog)
    got = json.loads(out)
    # LD_BIND_NOW is set for the slot's interpreter only (binding happens once, in the fork
    # server); programs see the environment they always saw
    assert "LD_BIND_NOW" not in got["env"], got["env"]
    assert set(got["env"]) <= {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PWD"}, got["env"]
    lim = {k: tuple(v) for k, v in got["lim"].items()}
    # job-invariant limits, taken once by the fork server and inherited
    assert lim["RLIMIT_CORE"] == (0, 0) and lim["RLIMIT_MEMLOCK"] == (0, 0)
    assert lim["RLIMIT_MSGQUEUE"] == (0, 0) and lim["RLIMIT_NOFILE"] == (256, 256)
    # per-job limits, set in each child
    assert lim["RLIMIT_AS"] == (300 << 20, 300 << 20)
    assert lim["RLIMIT_FSIZE"] == (1 << 20, 1 << 20)
    assert lim["RLIMIT_CPU"] == (12, 12)
    other = Limits(time_per_test_s=5.0, time_total_s=20.0, memory_mb=400, max_file_bytes=2 << 20)
    [r] = ex.run([Job(prog, StdioTests([""], ["?"]), other)])
    lim2 = {k: tuple(v) for k, v in json.loads(r.stdout)["lim"].items()}
    assert lim2["RLIMIT_AS"] == (400 << 20, 400 << 20) and lim2["RLIMIT_CPU"] == (22, 22)
    assert lim2["RLIMIT_NOFILE"] == (256, 256)


def test_frames_parse_strictly():
    assert _serial.parse_json(_serial.compact_json({"a": [1, 2.5, None, "é"]}).encode()) == \
        {"a": [1, 2.5, None, "é"]}
    assert _serial.compact_json({"a": [1, "é\n"]}) == json.dumps({"a": [1, "é\n"]}, separators=(",", ":"))
    for bad in (b"", b" {}", b"{} ", b'{"t":"r"}{"t":"r"}', b"\xff", b"[1,"):
        with pytest.raises(ValueError):
            _serial.parse_json(bad)
    with pytest.raises(TypeError):
        _serial.compact_json({"a": object()})
    with pytest.raises(RecursionError):
        _serial.parse_json("[" * 100000 + "]" * 100000)


def test_work_dir_is_empty_for_the_next_job_whatever_was_left(ex):
    # the wipe reads the directory's size when it can (tmpfs counts entries): every kind of
    # leftover must still be seen and removed
    leave = ("import os\nopen('a', 'w').write('x')\nos.mkdir('d')\nopen('d/b', 'w').write('y')\n"
             "os.link('a', 'hard')\nos.symlink('a', 'soft')\nos.mkfifo('fifo')\n"
             "os.rename('a', 'renamed')\nos.makedirs('e/f/g')\nprint('left')")
    look = "import os\nprint(sorted(os.listdir('.')), len(os.listdir('/tmp')), len(os.listdir('/dev/shm')))"
    for _ in range(2):
        res = ex.run([Job(leave, StdioTests([""], ["left"]), LIM), Job(look, StdioTests([""], ["?"]), LIM)])
        assert res[0].outcome is Outcome.PASS, res[0]
        assert res[1].stdout.strip() == "[] 0 0", res[1].stdout
