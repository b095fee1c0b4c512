"""Does GRPO with unit-test rewards raise the tiny model's held-out pass rate over its warm start?

Runs recipes/tiny/code_grpo.yaml (procedural function-writing tasks, hidden asserts judged in
the sandbox, CodeRL outcome rewards) for several seeds. Each seed: its own supervised warm start
(stopped at ~30% held-out exact match), then GRPO. "before" is the held-out greedy pass rate
(all hidden tests pass) right after the warm start; "after" is the mean of the last
`--last-evals` evaluations, because greedy pass rates move a few points between evaluations.
Prints JSON: per-seed before/after/delta, the mean delta, and IQM with a 95% bootstrap CI.

    python bench/code_learning.py --seeds 0 1 2
    # or one process per seed, then combine:
    for s in 0 1 2; do python bench/code_learning.py --seeds $s & done; wait
    python bench/code_learning.py --seeds 0 1 2 --summarize-only
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_seeds.py
RECIPE = REPO / "recipes" / "tiny" / "code_grpo.yaml"


def run_seed(seed: int, steps: int, eval_every: int, out_root: Path, extra: list[str]) -> dict:
    from llmrl.config.load import load_recipe
    from llmrl.trainer.loop import train
    from llmrl.trainer.reporting import read_metrics

    out = out_root / f"seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_recipe(RECIPE, [
        f"trainer.seed={seed}", f"trainer.steps={steps}", f"trainer.eval_every={eval_every}",
        f"trainer.output_dir={out}", "trainer.checkpoint_every=0", "logging.progress=false", "logging.plot=false",
        *extra,
    ])
    t0 = time.perf_counter()
    summary = train(cfg)
    wall = time.perf_counter() - t0
    rows = read_metrics(out / "metrics.jsonl")
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    train_s = sum(r.get("perf/step_s", 0.0) for r in rows)
    reward_s = sum(r.get("perf/reward_s", 0.0) for r in rows)
    ws = json.loads((Path(cfg_model_path(cfg)) / "warm_start.json").read_text()) if cfg.model.warm_start else {}
    result = {"seed": seed, "before": evals[0][1], "warm_start_steps": ws.get("steps"),
            "warm_start_seconds": round(ws.get("seconds", 0.0), 1), "after_final": evals[-1][1], "evals": evals,
            "rl_train_seconds": round(train_s, 1), "reward_seconds": round(reward_s, 1),
            "wall_seconds_incl_warm_start_and_evals": round(wall, 1),
            "reward_first10": summary["reward/mean_first10"], "reward_last10": summary["reward/mean_last10"]}
    (out / "result.json").write_text(json.dumps(result))
    return result


def read_seed(out: Path, seed: int) -> dict:
    """A finished seed's result.json, or, for a run still going / stopped early, its evaluations
    so far from metrics.jsonl (marked ``partial``)."""
    if (out / "result.json").exists():
        r = json.loads((out / "result.json").read_text())
        r["evals"] = [tuple(e) for e in r["evals"]]
        return r
    from llmrl.trainer.reporting import read_metrics

    rows = read_metrics(out / "metrics.jsonl")
    evals = [(r["step"], r["eval/accuracy"]) for r in rows if "eval/accuracy" in r]
    if not evals:
        raise SystemExit(f"{out}: no evaluation yet")
    return {"seed": seed, "partial": True, "steps_done": max(r["step"] for r in rows), "before": evals[0][1],
            "after_final": evals[-1][1], "evals": evals,
            "rl_train_seconds": round(sum(r.get("perf/step_s", 0.0) for r in rows), 1)}


def cfg_model_path(cfg) -> str:
    from llmrl.trainer.loop import warm_started_model

    return warm_started_model(cfg, progress=False)  # cached: returns the path trained above


def main(argv: list[str] | None = None) -> dict:
    from _seeds import add_seed_args, for_each_seed, interval, tail_mean

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_args(ap, seeds=[0, 1, 2], steps=96, eval_every=24, out="runs/bench_code_learning")
    ap.add_argument("--summarize-only", action="store_true",
                    help="don't train: read OUT/seedN/result.json (seeds run as separate processes)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def one(seed: int) -> dict:
        if args.summarize_only:
            r = read_seed(Path(args.out) / f"seed{seed}", seed)
        else:
            r = run_seed(seed, args.steps, args.eval_every, Path(args.out), args.overrides)
        r["after"] = tail_mean(r["evals"], args.last_evals, skip_first=True)  # never "before" itself
        r["delta_points"] = round(100 * (r["after"] - r["before"]), 2)
        return r

    results = for_each_seed(args.seeds, one)
    deltas = np.array([r["delta_points"] for r in results])
    out = {"recipe": str(RECIPE.relative_to(REPO)), "steps": args.steps, "seeds": results,
           "mean_before": float(np.mean([r["before"] for r in results])),
           "mean_after": float(np.mean([r["after"] for r in results])),
           "mean_delta_points": round(float(deltas.mean()), 2),
           "bench_wall_seconds": round(time.perf_counter() - t0, 1)}
    if len(results) >= 2:
        out["delta_iqm_ci"] = interval(deltas, "delta_points")
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
