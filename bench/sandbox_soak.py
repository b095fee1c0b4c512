"""Soak test of the sandbox HTTP service (JSON on stdout).

Starts `llmrl sandbox serve` on 127.0.0.1, sends N jobs (default 10,000) of mixed hostile and
normal programs from C concurrent clients (default 8), interleaves malformed and oversized
requests, and checks the server for leaks: processes (beyond the slots' own), open file
descriptors, resident memory growth, and files left in the host's temp dir.

    .venv/bin/python bench/sandbox_soak.py                    # 10,000 jobs, 8 clients
    .venv/bin/python bench/sandbox_soak.py --jobs 500 --clients 4
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp

from llmrl.sandbox import AssertTests, HTTPExecutor, Job, Limits, Outcome, StdioTests

LIM = Limits(time_per_test_s=0.5, time_total_s=2.0, memory_mb=256, max_processes=16,
             max_output_bytes=64 * 1024, max_file_bytes=1 << 20)
T = AssertTests(["assert f(1) == 2", "assert f(5) == 6"])
NORMAL = [
    ("ok", "def f(x):\n    return x + 1\n", T, Outcome.PASS),
    ("wrong", "def f(x):\n    return x\n", T, Outcome.WRONG_ANSWER),
    ("stdio", "print(int(input()) * 2)\n", StdioTests(["2", "4"], ["4", "8"]), Outcome.PASS),
    ("compile", "def f(:\n", T, Outcome.COMPILE_ERROR),
]
HOSTILE = [
    ("fork_bomb", "import os\ndef f(x):\n    while True:\n        try:\n            os.fork()\n"
     "        except OSError:\n            pass\n", T, None),
    ("memory", "def f(x):\n    a = []\n    while True:\n        a.append(' ' * 10**7)\n", T, Outcome.MEMORY),
    ("output", "def f(x):\n    while True:\n        print('x' * 10000)\n", T, Outcome.OUTPUT_LIMIT),
    ("exit", "import sys\nsys.exit(0)\n", T, Outcome.RUNTIME_ERROR),
    ("always_eq", "class A:\n    __eq__ = lambda s, o: True\ndef f(x):\n    return A()\n", T,
     Outcome.WRONG_ANSWER),
    ("daemon", "import os, time\ndef f(x):\n    if os.fork() == 0:\n        os.setsid()\n"
     "        time.sleep(100)\n    return x + 1\n", T, Outcome.PASS),
    ("files", "import os\ndef f(x):\n    open('junk', 'w').write('x' * 1000)\n    return x + 1\n", T,
     Outcome.PASS),
    ("segv", "import ctypes\ndef f(x):\n    ctypes.string_at(0)\n", T, Outcome.RUNTIME_ERROR),
    ("kill_parent", "import os\ndef f(x):\n    for p in (os.getppid(), 1, -1):\n        try:\n"
     "            os.kill(p, 9)\n        except OSError:\n            pass\n    return x\n", T,
     Outcome.WRONG_ANSWER),
]
SLOW = [("loop", "def f(x):\n    while True:\n        pass\n", T, Outcome.TIMEOUT)]


def pick(rng: random.Random) -> tuple:
    u = rng.random()
    if u < 0.02:
        return rng.choice(SLOW)
    if u < 0.35:
        return rng.choice(HOSTILE)
    return rng.choice(NORMAL)


def descendants(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                st = open(f"/proc/{p}/stat").read()
                kids.setdefault(int(st[st.rfind(")") + 2:].split()[1]), []).append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    out, stack = [], [root]
    while stack:
        for k in kids.get(stack.pop(), []):
            out.append(k)
            stack.append(k)
    return out


def snapshot(pid: int) -> dict:
    rss = int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
    return {"rss_mb": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "processes": len(descendants(pid))}


async def soak(url: str, n_jobs: int, clients: int, seed: int) -> dict:
    ex = HTTPExecutor([url], chunk_size=8, max_requests_per_server=clients, timeout_s=300)
    rng = random.Random(seed)
    counter = {"sent": 0, "mismatch": 0, "sandbox_error": 0, "bad_requests_ok": 0,
               "bad_requests_failed": 0}
    mismatches: list = []

    async def client(k: int) -> None:
        async with aiohttp.ClientSession() as s:
            while counter["sent"] < n_jobs:
                batch = [pick(rng) for _ in range(min(8, n_jobs - counter["sent"]))]
                counter["sent"] += len(batch)
                res = await ex.arun([Job(p, t, LIM, id=name) for name, p, t, _ in batch])
                for (name, _, _, want), r in zip(batch, res):
                    if r.outcome is Outcome.SANDBOX_ERROR:
                        counter["sandbox_error"] += 1
                    if name == "fork_bomb":
                        ok = r.outcome in (Outcome.TIMEOUT, Outcome.RUNTIME_ERROR)
                    else:
                        ok = r.outcome is want
                    if not ok:
                        counter["mismatch"] += 1
                        mismatches.append((name, r.outcome.value, r.detail[:100]))
                if rng.random() < 0.05:  # malformed / oversized requests between batches
                    body = rng.choice([b"{not json", b'{"jobs": "x"}', b"x" * (20 << 20),
                                       b'{"jobs": [{"program": 3}]}'])
                    try:
                        async with s.post(url + "/run", data=body) as resp:
                            good = 400 <= resp.status < 500
                    except aiohttp.ClientError:
                        good = True  # server closed an oversized upload early: also a refusal
                    counter["bad_requests_ok" if good else "bad_requests_failed"] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    dt = time.perf_counter() - t0
    return {**counter, "seconds": round(dt, 1), "jobs_per_s": round(counter["sent"] / dt, 1),
            "mismatch_examples": mismatches[:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rss-bound-mb", type=int, default=64,
                    help="allowed server RSS growth after warm-up")
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # only the sandbox's own host-side files (other processes on a shared machine use /tmp too)
    pattern = os.path.join(tempfile.gettempdir(), "llmrl-sandbox*")
    tmp_before = set(glob.glob(pattern))
    cmd = [os.path.join(os.path.dirname(sys.executable), "llmrl"), "sandbox", "serve", "--host",
           "127.0.0.1", "--port", str(port), "--max-body-mb", "4"]
    if a.workers:
        cmd += ["--workers", str(a.workers)]
    srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.1)
        asyncio.run(soak(url, min(200, a.jobs), a.clients, a.seed + 1))  # warm-up
        before = snapshot(srv.pid)
        res = asyncio.run(soak(url, a.jobs, a.clients, a.seed))
        time.sleep(0.5)
        after = snapshot(srv.pid)
        alive = srv.poll() is None
    finally:
        srv.terminate()
        srv.wait(30)
    time.sleep(0.5)
    tmp_left = sorted(set(glob.glob(pattern)) - tmp_before)
    out = {"jobs": res["sent"], "clients": a.clients, **res, "server_alive": alive,
           "before": before, "after": after,
           "rss_growth_mb": after["rss_mb"] - before["rss_mb"], "rss_bound_mb": a.rss_bound_mb,
           "leaked_processes": after["processes"] - before["processes"],
           "leaked_fds": after["fds"] - before["fds"], "tmp_files_left": tmp_left}
    out["ok"] = (alive and res["mismatch"] == 0 and res["bad_requests_failed"] == 0
                 and out["leaked_processes"] <= 0 and out["leaked_fds"] <= 0
                 and out["rss_growth_mb"] <= a.rss_bound_mb and not tmp_left)
    print(json.dumps(out, indent=2))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
