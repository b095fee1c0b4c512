"""Throughput of the code sandbox on the canonical MBPP programs (JSON on stdout).

Measures, in the same run on the same machine:
  baseline  one fresh `python -c` subprocess per program (program + setup + asserts), sequential
  local     llmrl.sandbox local pool (warm fork servers in bubblewrap, full verdict path)
  http      the same through `llmrl sandbox serve` on 127.0.0.1 and HTTPExecutor

    .venv/bin/python bench/sandbox_throughput.py            # all 974 programs
    .venv/bin/python bench/sandbox_throughput.py --limit 200 --skip-http
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from llmrl.paths import locate_data
from llmrl.sandbox import AssertTests, HTTPExecutor, Job, Limits, Outcome, local_executor

# amicable_numbers_sum(9999) needs ~2-3 s of CPU on a busy 2-core machine: give every test room
LIMITS = Limits(time_per_test_s=15.0, time_total_s=40.0)


def load(limit: int | None) -> list[dict]:
    rows = [json.loads(l) for l in locate_data("mbpp/mbpp.jsonl", source="local", what="MBPP").open()]
    return rows[:limit] if limit else rows


def baseline(rows: list[dict]) -> dict:
    exe = os.path.realpath(sys.executable)  # the bare interpreter, no venv site: a fair floor
    t0 = time.perf_counter()
    passed = 0
    for r in rows:
        src = "\n".join([r["code"], r["test_setup_code"], *r["test_list"]])
        p = subprocess.run([exe, "-c", src], capture_output=True, timeout=60)
        passed += p.returncode == 0
    dt = time.perf_counter() - t0
    return {"seconds": round(dt, 3), "programs_per_s": round(len(rows) / dt, 1), "passed": passed}


def jobs_of(rows: list[dict]) -> list[Job]:
    return [Job(r["code"], AssertTests(r["test_list"], r["test_setup_code"]), LIMITS,
                id=str(r["task_id"])) for r in rows]


def measure(ex, jobs: list[Job]) -> dict:
    ex.run(jobs[:8])  # warm up
    t0 = time.perf_counter()
    res = ex.run(jobs)
    dt = time.perf_counter() - t0
    bad = [(r.id, r.outcome.value, r.detail[:120]) for r in res if r.outcome is not Outcome.PASS]
    return {"seconds": round(dt, 3), "programs_per_s": round(len(jobs) / dt, 1),
            "passed": len(jobs) - len(bad), "failures": bad[:10]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=None, help="first N programs only")
    ap.add_argument("--workers", type=int, default=None, help="sandbox slots (default: CPUs)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--skip-http", action="store_true")
    a = ap.parse_args()
    rows = load(a.limit)
    jobs = jobs_of(rows)
    out: dict = {"programs": len(rows), "cpus": os.cpu_count()}
    with local_executor(workers=a.workers) as ex:
        out["isolation"] = {k: v for k, v in ex.layers.items() if k != "probe"} | ex.layers["probe"]
        out["workers"] = ex.workers
        out["local"] = measure(ex, jobs)
    if not a.skip_http:
        port = free_port()
        cmd = [os.path.join(os.path.dirname(sys.executable), "llmrl"), "sandbox", "serve",
               "--host", "127.0.0.1", "--port", str(port)]
        if a.workers:
            cmd += ["--workers", str(a.workers)]
        srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    urllib.request.urlopen(url + "/health", timeout=1).read()
                    break
                except OSError:
                    time.sleep(0.1)
            out["http"] = measure(HTTPExecutor([url], chunk_size=16, max_requests_per_server=4), jobs)
        finally:
            srv.terminate()
            srv.wait(30)
    if not a.skip_baseline:
        out["baseline"] = baseline(rows)
        for k in ("local", "http"):
            if k in out:
                out[f"speedup_{k}"] = round(out[k]["programs_per_s"] / out["baseline"]["programs_per_s"], 2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
