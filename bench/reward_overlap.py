"""Seconds per RL step with and without reward/generation overlap (``rollout.max_staleness``).

Runs recipes/tiny/code_grpo.yaml (real sandbox rewards) for a few steps with max_staleness 0
and 1, alternating, same seed, and reports per setting the mean seconds per step and of its
phases: generation (``perf/rollout_s``; with 1 it is the *next* step's batch), scoring
(``perf/reward_s``, on a thread with 1), the wait for rewards after generation
(``perf/reward_wait_s``), and the update. The verdict cache is off so every step runs its
programs. ``--servers N`` scores on N local `llmrl sandbox serve` servers (HTTP fan-out)
instead of the in-process pool. Prints JSON.

    python bench/reward_overlap.py --steps 12 --repeats 2
    python bench/reward_overlap.py --steps 12 --repeats 2 --servers 2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "tiny" / "code_grpo.yaml"
PHASES = ("perf/rollout_s", "perf/reward_s", "perf/reward_wait_s", "perf/update_s", "perf/step_s")


def run(staleness: int, steps: int, out: Path, sandbox: str | None) -> dict:
    from llmrl.config.load import load_recipe
    from llmrl.trainer.loop import train
    from llmrl.trainer.reporting import read_metrics

    shutil.rmtree(out, ignore_errors=True)
    overrides = [f"rollout.max_staleness={staleness}", f"trainer.steps={steps}", "trainer.eval_every=0",
                 "trainer.warmup_steps=0",
                 f"trainer.output_dir={out}", "trainer.checkpoint_every=0", "logging.progress=false",
                 "logging.plot=false", "rewards.0.args.cache_size=0"]
    if sandbox:
        overrides.append(f"rewards.0.args.sandbox={sandbox}")
    cfg = load_recipe(RECIPE, overrides)
    t0 = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "reward/mean" in r]
    body = rows[1:-1] or rows          # steps that overlap (not the first and last)
    return {"wall_s": round(wall, 2), **{k: round(float(np.mean([r.get(k, 0.0) for r in body])), 4) for k in PHASES},
            "staleness": [r.get("rollout/staleness", 0) for r in rows],
            "reward_mean": round(float(np.mean([r["reward/mean"] for r in rows])), 4),
            "eval_before": summary.get("eval/accuracy_before"), "eval_after": summary.get("eval/accuracy_after")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--servers", type=int, default=0, help="score on N local sandbox servers (0: in-process pool)")
    args = ap.parse_args()
    from llmrl.sandbox.server import kill_server, spawn_servers

    urls, procs = spawn_servers(args.servers) if args.servers else ([], [])
    try:
        results: dict[int, list[dict]] = {0: [], 1: []}
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.repeats):
                for st in (0, 1):
                    results[st].append(run(st, args.steps, Path(tmp) / f"s{st}_{rep}", ",".join(urls) or None))
    finally:
        for p in procs:
            kill_server(p)
    mean = {st: {k: round(float(np.mean([r[k] for r in rs])), 4) for k in (*PHASES, "wall_s")} for st, rs in results.items()}
    print(json.dumps({"recipe": str(RECIPE.relative_to(REPO)), "steps": args.steps, "repeats": args.repeats,
                      "sandbox": f"{args.servers} servers" if args.servers else "local pool",
                      "load_avg_1m": os.getloadavg()[0], "mean": mean,
                      "step_s_ratio_1_over_0": round(mean[1]["perf/step_s"] / mean[0]["perf/step_s"], 3),
                      "runs": results}, indent=2))


if __name__ == "__main__":
    main()
