"""Sandbox fan-out over several real `llmrl sandbox serve` servers (subprocesses on 127.0.0.1):
a server SIGKILLed mid-batch loses no verdict (its in-flight chunks are re-sent to the others,
every verdict equals the local sandbox's on the same real MBPP programs), all servers down is
a clear error naming the URLs in bounded time, a dead server that comes back takes work again,
and the recipe's server list is validated when the recipe loads."""
from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from llmrl.config.load import RecipeError, load_recipe
from llmrl.sandbox import Job, Limits, Outcome, local_executor
from llmrl.sandbox.client import HTTPExecutor, SandboxUnavailable
from llmrl.sandbox.server import kill_server, spawn_servers

pytestmark = pytest.mark.requires_data("mbpp")

# Each program first sleeps 0.15 s (no CPU), so a batch is still in flight when a server is killed.
SLOW = "import time as _t\n_t.sleep(0.15)\n"


def _healthy(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return json.loads(r.read())
    except OSError:
        return None


@pytest.fixture
def servers():
    """Three real servers (2 sandbox workers each); yields (urls, procs), kills what is left."""
    urls, procs = spawn_servers(3, workers=2)
    try:
        yield urls, procs
    finally:
        for p in procs:
            kill_server(p)


@pytest.fixture(scope="module")
def mbpp_jobs() -> list[Job]:
    """36 real MBPP test problems: the reference solution (pass), the solution with its last
    line cut (wrong answer, runtime error...), and one that raises at import (a load error)."""
    from llmrl.eval.benchmarks import load_mbpp

    lim = Limits(time_per_test_s=5.0, time_total_s=10.0)
    jobs = []
    for k, p in enumerate(load_mbpp("test")[:12]):
        good = p.solutions[0]
        cut = "\n".join(good.rstrip().split("\n")[:-1]) or "pass"
        for v, prog in enumerate((good, cut, good + "\nraise RuntimeError('at import')")):
            jobs.append(Job(SLOW + prog, p.tests, limits=lim, id=f"{p.task_id}/{v}"))
    return jobs


@pytest.fixture(scope="module")
def local_verdicts(mbpp_jobs):
    with local_executor(workers=4) as ex:
        return [(r.outcome, r.passed, r.total) for r in ex.run(mbpp_jobs)]


def _verdicts(results):
    return [(r.outcome, r.passed, r.total) for r in results]


def _run_in_thread(ex: HTTPExecutor, jobs: list[Job]) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        t0 = time.monotonic()
        try:
            box["results"] = ex.run(jobs)
        except Exception as e:  # noqa: BLE001 - the test inspects it
            box["error"] = e
        box["seconds"] = time.monotonic() - t0

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def _wait_in_flight(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (h := _healthy(url)) is None or h["in_flight_jobs"] == 0:
        assert time.monotonic() < deadline, f"{url} never had jobs in flight"
        time.sleep(0.01)


def test_server_killed_mid_batch_loses_no_verdict(servers, mbpp_jobs, local_verdicts):
    urls, procs = servers
    assert {o for o, _, _ in local_verdicts} >= {Outcome.PASS, Outcome.WRONG_ANSWER, Outcome.COMPILE_ERROR}
    ex = HTTPExecutor(urls, chunk_size=2, max_requests_per_server=2, retries=2)
    th, box = _run_in_thread(ex, mbpp_jobs)
    _wait_in_flight(urls[0])
    kill_server(procs[0])                 # SIGKILL (its process group) with chunks in flight on it
    th.join(120)
    assert "error" not in box, box.get("error")
    assert _verdicts(box["results"]) == local_verdicts
    assert [r.id for r in box["results"]] == [j.id for j in mbpp_jobs]
    st = ex.host_stats()
    assert st[urls[0]]["failures"] >= 1 and st[urls[0]]["marked_down"] == 1 and not st[urls[0]]["up"]
    assert sum(s["jobs"] for s in st.values()) == len(mbpp_jobs)       # every job completed exactly once
    assert st[urls[1]]["jobs"] + st[urls[2]]["jobs"] > 2 * len(mbpp_jobs) / 3  # the others took its share

    # The next batch goes to the two live servers only (the dead one is probed, never sent work).
    before = st[urls[0]]["failures"]
    again = ex.run(mbpp_jobs[:6])
    assert _verdicts(again) == local_verdicts[:6]
    assert ex.host_stats()[urls[0]]["jobs"] == st[urls[0]]["jobs"]
    assert ex.host_stats()[urls[0]]["failures"] <= before + 1          # at most one probe failed meanwhile


def test_all_servers_down_is_a_clear_error_in_bounded_time(servers, mbpp_jobs):
    urls, procs = servers
    ex = HTTPExecutor(urls, chunk_size=2, max_requests_per_server=2, unavailable_after_s=2.0, backoff_s=0.2)
    th, box = _run_in_thread(ex, mbpp_jobs)
    _wait_in_flight(urls[1])
    for p in procs:
        kill_server(p)
    th.join(60)
    assert isinstance(box.get("error"), SandboxUnavailable), box
    msg = str(box["error"])
    assert all(u in msg for u in urls) and "rewards.args.sandbox" in msg
    assert box["seconds"] < 2.0 + 10.0                                  # bounded: the wait plus a probe
    # Before any request: servers that were never there fail the same way, as fast.
    t0 = time.monotonic()
    with pytest.raises(SandboxUnavailable, match="no sandbox server was up for 1s"):
        HTTPExecutor(urls[:2], unavailable_after_s=1.0, backoff_s=0.2).run(mbpp_jobs[:3])
    assert time.monotonic() - t0 < 1.0 + 6.0


def test_a_dead_server_that_comes_back_takes_work_again(mbpp_jobs, local_verdicts):
    [url], [proc] = spawn_servers(1, workers=2)
    try:
        ex = HTTPExecutor([url], chunk_size=3, backoff_s=0.2, max_backoff_s=0.5, unavailable_after_s=60.0)
        assert _verdicts(ex.run(mbpp_jobs[:3])) == local_verdicts[:3]
        kill_server(proc)
        th, box = _run_in_thread(ex, mbpp_jobs[3:9])   # waits: its only server is down
        time.sleep(1.0)
        assert th.is_alive() and not ex.host_stats()[url]["up"]
        _, [proc] = spawn_servers(1, workers=2, ports=[int(url.rsplit(":", 1)[1])])   # back on the same address
        th.join(90)
        assert "error" not in box, box.get("error")
        assert _verdicts(box["results"]) == local_verdicts[3:9]
        st = ex.host_stats()[url]
        assert st["up"] and st["jobs"] == 9 and st["marked_down"] == 1
    finally:
        kill_server(proc)


def test_recipe_sandbox_urls_are_validated_at_load(tmp_path):
    base = ("model: {name_or_path: 'tiny://code'}\ndata: {name: code_tiny}\n"
            "rewards:\n  - name: code\n    args: {sandbox: %s}\n")
    ok = tmp_path / "ok.yaml"
    ok.write_text(base % "['http://10.0.0.5:8910', 'http://10.0.0.6:8910']")
    assert load_recipe(ok).rewards[0].args["sandbox"] == ["http://10.0.0.5:8910", "http://10.0.0.6:8910"]
    ok.write_text(base % "'http://a:8910,http://b:8910'")           # the comma string still works
    load_recipe(ok)
    for bad, why in (("['http://a:8910', 'a.example:8910']", "'a.example:8910' is not an http"),
                     ("'http://a:99999'", "not a valid URL"), ("[3]", "is not a URL string"),
                     ("','", "no server URL")):
        rec = tmp_path / "bad.yaml"
        rec.write_text(base % bad)
        with pytest.raises(RecipeError, match=r"rewards\[0\]\.args\.sandbox") as e:
            load_recipe(rec)
        assert why in str(e.value)
