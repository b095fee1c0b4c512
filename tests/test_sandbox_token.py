"""Sandbox clients send the server's token (argument or $LLMRL_SANDBOX_TOKEN) and fail loudly on
401; the server caps every per-job limit; the CLI's exit codes say when jobs could not be run.
All against a real `llmrl sandbox serve` app on 127.0.0.1."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from llmrl.rewards.code import code_reward
from llmrl.sandbox import AssertTests, HTTPExecutor, Job, Limits, Outcome, local_executor
from llmrl.sandbox.client import SandboxAuthError
from llmrl.sandbox.server import DEFAULT_MAX_LIMITS, cap_limits, run_in_thread

REPO = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-t0ken"
ADD = "def add(a, b):\n    return a + b\n"
JOB = Job(ADD, AssertTests(["assert add(1, 2) == 3"]))


@pytest.fixture(scope="module")
def ex():
    with local_executor(workers=1) as e:
        yield e


@pytest.fixture(scope="module")
def server(ex):
    # small time cap so that a job asking for more is visibly cut to it
    caps = dataclasses.replace(DEFAULT_MAX_LIMITS, time_per_test_s=0.5, time_total_s=2.0)
    url, stop = run_in_thread(ex, token=TOKEN, max_limits=caps)
    yield url
    stop()


def _cli(*args, env_token=None, stdin=None):
    env = {k: v for k, v in os.environ.items() if k != "LLMRL_SANDBOX_TOKEN"}
    if env_token is not None:
        env["LLMRL_SANDBOX_TOKEN"] = env_token
    return subprocess.run([sys.executable, "-m", "llmrl.cli", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, env=env, input=stdin)


def test_http_executor_token_argument_and_env(server, monkeypatch):
    monkeypatch.delenv("LLMRL_SANDBOX_TOKEN", raising=False)
    assert HTTPExecutor(server, token=TOKEN).run([JOB])[0].outcome is Outcome.PASS
    monkeypatch.setenv("LLMRL_SANDBOX_TOKEN", TOKEN)
    assert HTTPExecutor(server).run([JOB])[0].outcome is Outcome.PASS


def test_http_executor_401_raises_naming_the_token(server, monkeypatch):
    monkeypatch.delenv("LLMRL_SANDBOX_TOKEN", raising=False)
    with pytest.raises(SandboxAuthError, match="no token was sent.*LLMRL_SANDBOX_TOKEN"):
        HTTPExecutor(server).run([JOB])
    with pytest.raises(SandboxAuthError, match="token sent was refused"):
        HTTPExecutor(server, token="wrong").run([JOB])


def test_code_reward_sandbox_url_with_token(server, monkeypatch):
    monkeypatch.delenv("LLMRL_SANDBOX_TOKEN", raising=False)
    kw = dict(tests=[AssertTests(["assert f(2) == 4"]).to_dict()], program_prefix=["def f(x):\n    return "])
    scores = code_reward(["p"], ["x * 2"], sandbox=server, sandbox_token=TOKEN, **kw)
    assert list(scores) == [1.0]
    with pytest.raises(SandboxAuthError, match="401"):  # not a None score that training would skip
        code_reward(["p"], ["x * 2"], sandbox=server, sandbox_token="wrong", **kw)
    monkeypatch.setenv("LLMRL_SANDBOX_TOKEN", TOKEN)
    assert list(code_reward(["p"], ["x * 2"], sandbox=server, **kw)) == [1.0]


def test_server_caps_every_limit(server):
    big = Limits(time_per_test_s=3000.0, time_total_s=3600.0, memory_mb=3072, max_processes=4096,
                 max_output_bytes=1 << 30, max_file_bytes=1 << 34)
    capped = cap_limits(big, DEFAULT_MAX_LIMITS)
    assert capped == DEFAULT_MAX_LIMITS  # each field lowered to its cap
    small = Limits(time_per_test_s=1.0, memory_mb=64)
    assert cap_limits(small, DEFAULT_MAX_LIMITS) == small  # what is under the cap is kept
    health = json.loads(urllib.request.urlopen(server + "/health", timeout=10).read())
    assert health["max_limits"]["memory_mb"] == DEFAULT_MAX_LIMITS.memory_mb


def test_server_applies_the_time_cap_to_a_real_job(server):
    # asks for 10 s per test; sleeps 1.5 s; the server's cap is 0.5 s, so it times out
    slow = Job("import time\ntime.sleep(1.5)\n", AssertTests(["assert True"]),
               limits=Limits(time_per_test_s=10.0, time_total_s=20.0))
    [res] = HTTPExecutor(server, token=TOKEN).run([slow])
    assert res.outcome is Outcome.TIMEOUT, res


def _jobs_file(tmp_path):
    f = tmp_path / "jobs.jsonl"
    f.write_text(json.dumps(JOB.to_dict()) + "\n")
    return f


def test_cli_run_sends_token_from_option_or_env(server, tmp_path):
    f = _jobs_file(tmp_path)
    ok = _cli("sandbox", "run", str(f), "--server", server, "--token", TOKEN)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.splitlines()[0])["outcome"] == "pass"
    assert _cli("sandbox", "run", str(f), "--server", server, env_token=TOKEN).returncode == 0


def test_cli_run_401_exits_2_naming_the_token(server, tmp_path):
    proc = _cli("sandbox", "run", str(_jobs_file(tmp_path)), "--server", server)
    assert proc.returncode == 2, proc.stderr
    assert "401" in proc.stderr and "LLMRL_SANDBOX_TOKEN" in proc.stderr and "Traceback" not in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_run_exits_nonzero_when_jobs_could_not_run(tmp_path):
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    proc = _cli("sandbox", "run", str(_jobs_file(tmp_path)), "--server", dead, "--give-up-after", "1")
    assert proc.returncode == 1, proc.stderr
    assert "no job could be run" in proc.stderr and dead in proc.stderr and "Traceback" not in proc.stderr


def test_cli_serve_busy_or_invalid_port_exits_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        proc = _cli("sandbox", "serve", "--port", str(busy), "--workers", "1")
    assert proc.returncode == 2, proc.stderr
    assert "cannot listen" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("sandbox", "serve", "--port", "70000")
    assert proc.returncode == 2 and "--port" in proc.stderr


def test_cli_check_bogus_isolation_exits_2():
    proc = _cli("sandbox", "check", "--isolation", "bogus")
    assert proc.returncode == 2
    assert "bogus" in proc.stderr and "auto" in proc.stderr and "Traceback" not in proc.stderr
