"""Does GRPO raise the tiny research agent's held-out F1 over its warm start?

recipes/tiny/research_grpo.yaml: procedural fact lookup (answers only findable by searching a
local SQLite index), a 2-layer character model warm-started on demonstration traces (one warm
start shared by every seed), then GRPO with the web_search / browse_webpage tools. For each seed
the held-out questions (entities never trained on) are answered greedily through the agent
loop before and after RL; prints JSON with per-seed F1, EM, searches per question and the IQM of
the F1 gain with a 95% bootstrap CI. From each run's metrics.jsonl it also reports whether RL had
a signal: training reward, its within-group spread and the share of flat groups (first and last
10 steps), and the trainer's held-out accuracy at every ``--eval-every`` step.

    python bench/research_learning.py --seeds 0 1 2 3 4 --steps 40

Each finished seed is saved as ``<out>/seed<N>/result.json`` (and the warm start's score as
``<out>/before.json``); with ``--reuse`` a finished seed is read instead of re-run, so seeds can run
in parallel processes sharing ``--out`` and a last call with every seed and ``--reuse`` summarises:

    python bench/research_learning.py --seeds 0 1 2 --reuse & python bench/research_learning.py --seeds 3 4 --reuse
    python bench/research_learning.py --seeds 0 1 2 3 4 --reuse
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "tiny" / "research_grpo.yaml"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_seeds.py


def heldout_eval(model_path: str, cfg, n: int) -> dict:
    from llmrl.data.registry import build_dataset
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.research.evaluate import evaluate_agent
    from llmrl.trainer.loop import make_engine

    model, tok = load_model_and_tokenizer(model_path)
    test = build_dataset(cfg.data.name, "test", n=n, seed=0, args=cfg.data.args)   # the same questions for every run
    return evaluate_agent(make_engine(cfg, model, tok), list(test["prompt"]), list(test["answers"]),
                          max_new_tokens=cfg.rollout.max_completion_length)


def signal(metrics: Path) -> dict:
    """Did RL have something to learn from? Reward, within-group spread and flat-group share over
    the first and last 10 steps, and the trainer's held-out accuracy curve."""
    import numpy as np

    from llmrl.trainer.reporting import read_metrics

    rows = read_metrics(metrics)
    steps = [r for r in rows if "reward/mean" in r]

    def ends(key: str) -> list[float]:
        vals = [r[key] for r in steps if key in r]
        return [round(float(np.mean(vals[:10])), 4), round(float(np.mean(vals[-10:])), 4)] if vals else []

    return {"reward_first_last10": ends("reward/mean"), "reward_std_first_last10": ends("reward/std"),
            "flat_group_frac_first_last10": ends("reward/zero_variance_frac"),
            "eval_accuracy_curve": [[r["step"], round(r["eval/accuracy"], 4)] for r in rows if "eval/accuracy" in r]}


def main(argv: list[str] | None = None) -> dict:
    from _seeds import add_seed_args, for_each_seed, interval

    from llmrl.config.load import load_recipe
    from llmrl.trainer.loop import train, warm_started_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_args(ap, seeds=[0, 1, 2, 3, 4], steps=40, eval_every=0, out="runs/bench_research_learning")
    ap.add_argument("--heldout", type=int, default=100, help="held-out questions scored before and after")
    ap.add_argument("--reuse", action="store_true", help="read finished seeds (and the warm start's score) from --out")
    args = ap.parse_args(argv)

    def recipe(seed: int):
        out = Path(args.out) / f"seed{seed}"
        return out, load_recipe(RECIPE, [f"trainer.seed={seed}", f"trainer.steps={args.steps}",
                                         f"trainer.eval_every={args.eval_every}", f"trainer.output_dir={out}",
                                         "trainer.checkpoint_every=0", "logging.progress=false",
                                         "logging.tensorboard=false", "logging.plot=false", *args.overrides])

    _, cfg0 = recipe(args.seeds[0])
    t0 = time.perf_counter()
    warm = warm_started_model(cfg0, progress=False)   # shared by every seed (model.warm_start.seed is fixed)
    warm_s = time.perf_counter() - t0
    saved = Path(args.out) / "before.json"   # keyed by the warm start and the questions
    key = {"warm_start": warm, "heldout": args.heldout}
    old = json.loads(saved.read_text()) if args.reuse and saved.is_file() else {}
    before = old["before"] if old.get("key") == key else heldout_eval(warm, cfg0, args.heldout)
    saved.parent.mkdir(parents=True, exist_ok=True)
    tmp = saved.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "before": before}))
    tmp.replace(saved)
    print(json.dumps({"warm_start": warm, "before": before}), file=sys.stderr, flush=True)

    def one(seed: int) -> dict:
        out, cfg = recipe(seed)
        done = out / "result.json"
        if args.reuse and done.is_file():
            r = json.loads(done.read_text())
            if r.get("key") == {**key, "steps": args.steps, "overrides": args.overrides}:
                return r
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        summary = train(cfg)
        rl_s = time.perf_counter() - t
        after = heldout_eval(str(out / "final"), cfg, args.heldout)
        r = {"seed": seed, "f1_after": after["f1"], "em_after": after["em"],
             "delta_f1_points": round(100 * (after["f1"] - before["f1"]), 2),
             "searches_per_question": after["searches_per_question"],
             "format_fail_after": after["format_fail"], "after": after, "rl_seconds": round(rl_s, 1),
             **signal(out / "metrics.jsonl"), "key": {**key, "steps": args.steps, "overrides": args.overrides}}
        done.write_text(json.dumps(r))
        return r

    results = for_each_seed(args.seeds, one, hide=("after", "key"))
    report = {"bench": "research_learning", "recipe": str(RECIPE.relative_to(REPO)), "steps": args.steps,
              "seeds": args.seeds, "heldout_questions": args.heldout, "warm_start_seconds": round(warm_s, 1),
              "before": before, "runs": results,
              "f1_after_mean": sum(r["f1_after"] for r in results) / len(results),
              "searches_per_question_after_mean": sum(r["searches_per_question"] for r in results) / len(results),
              "command": "python bench/research_learning.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if len(results) >= 2:
        report["delta_f1_iqm_ci"] = interval([r["delta_f1_points"] for r in results], "delta_f1_points")
        report["f1_after_iqm_ci"] = interval([r["f1_after"] for r in results], "f1_after")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
