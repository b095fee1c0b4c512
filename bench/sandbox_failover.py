"""What a dead sandbox host costs the HTTP fan-out, on real MBPP programs.

Starts N `llmrl sandbox serve` servers on 127.0.0.1 and runs the same batch (MBPP test problems:
each reference solution and the same with its last line cut) four ways: on the local pool (the
reference verdicts), on all N servers, on N servers with one SIGKILLed when 25% of the all-up
time has passed, and with all of them killed mid-batch (seconds until `SandboxUnavailable`).
Reports wall seconds, verdicts that differ from the local pool's, and the per-host counters.
Prints JSON.

    python bench/sandbox_failover.py --servers 3 --problems 200
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time


def verdicts(results) -> list[tuple]:
    return [(r.outcome.value, r.passed, r.total) for r in results]


def timed_run(ex, jobs, kill=(), kill_at_s: float = 0.0) -> tuple[float, list | Exception]:
    """Run ``jobs`` on ``ex``; SIGKILL the servers in ``kill`` after ``kill_at_s`` seconds."""
    from llmrl.sandbox.server import kill_server

    killer = threading.Timer(kill_at_s, lambda: [kill_server(p) for p in kill]) if kill else None
    t0 = time.perf_counter()
    if killer:
        killer.start()
    try:
        out: list | Exception = ex.run(jobs)
    except Exception as e:  # noqa: BLE001 - reported
        out = e
    wall = time.perf_counter() - t0     # the batch's time, not the killer's
    if killer:
        killer.join()
    return wall, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", type=int, default=3)
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1, help="sandbox workers per server")
    ap.add_argument("--chunk-size", type=int, default=8)
    args = ap.parse_args()

    from llmrl.eval.benchmarks import load_mbpp
    from llmrl.sandbox import Job, local_executor
    from llmrl.sandbox.client import HTTPExecutor
    from llmrl.sandbox.server import kill_server, spawn_servers

    jobs = []
    for p in load_mbpp("test")[:args.problems]:
        good = p.solutions[0]
        cut = "\n".join(good.rstrip().split("\n")[:-1]) or "pass"
        jobs += [Job(good, p.tests, id=f"{p.task_id}/good"), Job(cut, p.tests, id=f"{p.task_id}/cut")]
    with local_executor(workers=args.servers * args.workers) as ex:
        t0 = time.perf_counter()
        reference = verdicts(ex.run(jobs))
        local_s = time.perf_counter() - t0

    report: dict = {"jobs": len(jobs), "servers": args.servers, "workers_per_server": args.workers,
                    "chunk_size": args.chunk_size, "local_pool_s": round(local_s, 2)}
    urls, procs = spawn_servers(args.servers, workers=args.workers)
    try:
        ex = HTTPExecutor(urls, chunk_size=args.chunk_size, max_requests_per_server=2)
        up_s, out = timed_run(ex, jobs)
        report["all_up"] = {"wall_s": round(up_s, 2), "differ": sum(a != b for a, b in zip(verdicts(out), reference))}
        ex = HTTPExecutor(urls, chunk_size=args.chunk_size, max_requests_per_server=2)
        wall, out = timed_run(ex, jobs, kill=procs[:1], kill_at_s=0.25 * up_s)
        report["one_killed_at_25pct"] = {
            "wall_s": round(wall, 2), "error": None if isinstance(out, list) else str(out),
            "differ": sum(a != b for a, b in zip(verdicts(out), reference)) if isinstance(out, list) else None,
            "hosts": ex.host_stats()}
        ex = HTTPExecutor(urls[1:], chunk_size=args.chunk_size, max_requests_per_server=2, unavailable_after_s=2.0)
        wall, out = timed_run(ex, jobs, kill=procs[1:], kill_at_s=0.2 * up_s)
        report["all_killed"] = {"unavailable_after_s": 2.0, "wall_s": round(wall, 2),
                                "error": type(out).__name__ if isinstance(out, Exception) else None}
    finally:
        for p in procs:
            kill_server(p)
    report["load_avg_1m"] = os.getloadavg()[0]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
