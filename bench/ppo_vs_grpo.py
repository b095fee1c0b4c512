"""GRPO vs PPO (learned critic, GAE) vs REINFORCE++-baseline on the tiny arithmetic task.

Every run starts from one shared warm start (recipes/tiny/math_*.yaml all set
``model.warm_start.seed: 0`` and share the model/data/reward keys, so the cached warm start is the
same model), trains ``--steps`` RL steps of 64 prompts x 8 samples, and evaluates held-out greedy
accuracy every ``--eval-every`` steps. Reported per method, over the seeds: "after" (mean of the
last ``--last-evals`` evaluations, since greedy accuracy moves 2-3 points between evaluations),
its gain over the warm start, IQM with 95% stratified bootstrap CIs and the probability of
improvement of each pair's gains (rliable, via ``llmrl.eval.compare``), and the learning curves against
steps, generated samples and wall-clock seconds of RL (the sum of ``perf/step_s``, evaluations
not counted; PPO's critic pretraining is counted in ``pretrain_s``). Prints one JSON object.

    python bench/ppo_vs_grpo.py --seeds 0 1 2 3 4 --steps 150 --eval-every 50 --last-evals 2

Seeds can run in parallel processes sharing ``--out`` with ``--reuse``; a last call with every seed
and ``--reuse`` only reads the finished runs and summarises.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_seeds.py

METHODS = {"grpo": "math_grpo.yaml", "ppo": "math_ppo.yaml", "reinforce_pp_baseline": "math_reinforce_pp.yaml"}


def run_one(method: str, seed: int, args) -> dict:
    from llmrl.config.load import load_recipe
    from llmrl.trainer.loop import train
    from llmrl.trainer.reporting import read_metrics

    out = Path(args.out) / method / f"seed{seed}"
    done = out / "result.json"
    if args.reuse and done.exists():
        return json.loads(done.read_text())
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_recipe(REPO / "recipes" / "tiny" / METHODS[method], [
        f"trainer.seed={seed}", f"trainer.steps={args.steps}", f"trainer.eval_every={args.eval_every}",
        f"trainer.output_dir={out}", "trainer.checkpoint_every=0", "logging.progress=false",
        "logging.tensorboard=false", "logging.plot=false", *args.overrides,
    ])
    t0 = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - t0
    rows = read_metrics(out / "metrics.jsonl")
    per_step = cfg.sequences_per_step
    elapsed, curve = 0.0, []
    for r in rows:
        elapsed += r.get("perf/step_s", 0.0)
        if "eval/accuracy" in r:
            curve.append({"step": r["step"], "samples": r["step"] * per_step, "rl_seconds": round(elapsed, 1),
                          "accuracy": r["eval/accuracy"]})
    evals = [(c["step"], c["accuracy"]) for c in curve]
    from _seeds import tail_mean

    after = tail_mean(evals, args.last_evals, skip_first=True)
    res = {"method": method, "seed": seed, "before": evals[0][1], "after": after,
           "delta_points": round(100 * (after - evals[0][1]), 2), "curve": curve,
           "rl_seconds": round(elapsed, 1), "wall_seconds": round(wall, 1)}
    done.write_text(json.dumps(res))
    return res


def summarise(results: list[dict], methods: list[str]) -> dict:
    import numpy as np

    from llmrl.eval.compare import compare_scores

    by = {m: [r for r in results if r["method"] == m] for m in methods}
    scores = {m: np.array([[r["after"]] for r in rs]) for m, rs in by.items() if len(rs) >= 2}
    gains = {m: np.array([[r["delta_points"]] for r in rs]) for m, rs in by.items() if len(rs) >= 2}
    rep = compare_scores(scores, reps=2000) if scores else {"aggregates": {}, "probability_of_improvement": {}}
    grep = compare_scores(gains, reps=2000, gap_threshold=100.0) if gains else {"aggregates": {}}
    out = {}
    for m, rs in by.items():
        if not rs:
            continue
        out[m] = {"seeds": [r["seed"] for r in rs], "before": [r["before"] for r in rs],
                  "after": [r["after"] for r in rs], "delta_points": [r["delta_points"] for r in rs],
                  "rl_seconds": [r["rl_seconds"] for r in rs], "learned_10_points": all(r["delta_points"] >= 10
                                                                                        for r in rs)}
        if m in rep["aggregates"]:
            out[m]["after_iqm"] = rep["aggregates"][m]["iqm"]
            out[m]["delta_iqm"] = grep["aggregates"][m]["iqm"]
        # mean curve over seeds (same eval steps for every seed of a method)
        steps = [c["step"] for c in rs[0]["curve"]]
        out[m]["curve"] = [{"step": s, "samples": rs[0]["curve"][i]["samples"],
                            "rl_seconds_mean": round(float(np.mean([r["curve"][i]["rl_seconds"] for r in rs])), 1),
                            "accuracy_mean": round(float(np.mean([r["curve"][i]["accuracy"] for r in rs])), 4)}
                           for i, s in enumerate(steps) if all(len(r["curve"]) > i for r in rs)]
    # of the gains: each seed evaluates on its own held-out draw, so gains compare across seeds, scores less so
    return {"methods": out, "probability_of_improvement_of_gain": grep.get("probability_of_improvement", {})}


def main(argv: list[str] | None = None) -> dict:
    from _seeds import add_seed_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_args(ap, seeds=[0, 1, 2, 3, 4], steps=150, eval_every=50, out="runs/bench_ppo_vs_grpo", last_evals=2)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--reuse", action="store_true", help="read finished (method, seed) runs instead of re-running")
    ap.add_argument("--finished-only", action="store_true", help="summarise the finished runs in --out; run nothing")
    args = ap.parse_args(argv)
    results = []
    for seed in args.seeds:          # seed-major: a partial run still covers every method
        for method in args.methods:
            done = Path(args.out) / method / f"seed{seed}" / "result.json"
            if args.finished_only and not done.exists():
                continue
            r = json.loads(done.read_text()) if args.finished_only else run_one(method, seed, args)
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "curve"}), file=sys.stderr, flush=True)
    report = {"bench": "ppo_vs_grpo", "steps": args.steps, "eval_every": args.eval_every,
              "last_evals": args.last_evals, "seeds": args.seeds, **summarise(results, args.methods),
              "command": "python bench/ppo_vs_grpo.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
