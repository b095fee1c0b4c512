"""Does GRPO with the exemplar-comparison reward raise held-out reward and chrF over the warm start?

Runs recipes/tiny/translation_grpo.yaml (English number words -> French, translation_exemplar
reward: metric judge on the 1-5 grade scale, behind the hacking gates) for several seeds from one
shared supervised warm start (the recipe fixes its seed). Before and after, the held-out test
split (211 numbers) is decoded greedily and scored three ways: the recipe's reward (mean), sentence
chrF (mean, 0-100, sacrebleu) and exact match. "after" is the final model. Prints JSON: per-seed
figures, the mean deltas, and IQM with a 95% stratified bootstrap CI of each delta over the seeds.

    python bench/translation_learning.py --seeds 0 1 2 3 4
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
RECIPE = REPO / "recipes" / "tiny" / "translation_grpo.yaml"


def held_out_scores(model_path: str, cfg) -> dict:
    """Greedy translations of the whole test split, scored by the recipe's reward, chrF, exact match."""
    from llmrl.data.registry import build_dataset
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.models.warm_start import greedy_generate
    from llmrl.rewards.runner import build_reward_fns, score
    from llmrl.rewards.translation.metrics import chrf
    from llmrl.trainer.evaluate import format_prompts

    data = build_dataset(cfg.data.name, "test", n=cfg.data.eval_size, seed=cfg.trainer.seed, args=cfg.data.args)
    model, tok = load_model_and_tokenizer(model_path, dtype=cfg.model.dtype)
    prompts = list(data[cfg.data.prompt_column])
    outs = greedy_generate(model, tok, format_prompts(cfg, tok, prompts),
                           max_new_tokens=cfg.rollout.max_completion_length)
    columns = {c: list(data[c]) for c in data.column_names if c != cfg.data.prompt_column}
    res = score(prompts, outs, columns, build_reward_fns(cfg.rewards))
    refs = columns["reference"]
    return {"reward": float(res.total.mean()),
            "chrf": float(np.mean([chrf(o.strip(), [r]) for o, r in zip(outs, refs)])),
            "exact": float(np.mean([o.strip() == r for o, r in zip(outs, refs)]))}


def run_seed(seed: int, steps: int, eval_every: int, out_root: Path, extra: list[str]) -> dict:
    from llmrl.config.load import load_recipe
    from llmrl.trainer.loop import train, warm_started_model

    out = out_root / f"seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_recipe(RECIPE, [
        f"trainer.seed={seed}", f"trainer.steps={steps}", f"trainer.eval_every={eval_every}",
        f"trainer.output_dir={out}", "trainer.checkpoint_every=0", "logging.progress=false", "logging.plot=false",
        *extra,
    ])
    warm = warm_started_model(cfg, progress=False)  # cached, shared by the seeds (warm_start.seed is fixed)
    before = held_out_scores(warm, cfg)
    t0 = time.perf_counter()
    summary = train(cfg)
    rl_seconds = time.perf_counter() - t0
    after = held_out_scores(str(out / "final"), cfg)
    result = {"seed": seed, "before": before, "after": after,
              "delta": {k: round(after[k] - before[k], 4) for k in before},
              "reward_first10": summary["reward/mean_first10"], "reward_last10": summary["reward/mean_last10"],
              "rl_wall_seconds": round(rl_seconds, 1)}
    (out / "result.json").write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> dict:
    from _seeds import add_seed_args, for_each_seed, interval

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_seed_args(ap, seeds=[0, 1, 2, 3, 4], steps=40, eval_every=40, out="runs/bench_translation_learning")
    ap.add_argument("--summarize-only", action="store_true", help="don't train: read OUT/seedN/result.json")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def one(seed: int) -> dict:
        if args.summarize_only:
            return json.loads((Path(args.out) / f"seed{seed}" / "result.json").read_text())
        return run_seed(seed, args.steps, args.eval_every, Path(args.out), args.overrides)

    results = for_each_seed(args.seeds, one)
    keys = ("reward", "chrf", "exact")
    out = {"recipe": str(RECIPE.relative_to(REPO)), "steps": args.steps, "seeds": results,
           "mean_before": {k: round(float(np.mean([r["before"][k] for r in results])), 4) for k in keys},
           "mean_after": {k: round(float(np.mean([r["after"][k] for r in results])), 4) for k in keys},
           "mean_delta": {k: round(float(np.mean([r["delta"][k] for r in results])), 4) for k in keys},
           "bench_wall_seconds": round(time.perf_counter() - t0, 1)}
    if len(results) >= 2:
        out["delta_iqm_ci"] = interval({k: [r["delta"][k] for r in results] for k in keys})
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
