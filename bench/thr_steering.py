"""Does THR's p steer exploitation vs exploration on the tiny arithmetic task?

Every run of a seed starts from the recipe's warm-started model (recipes/tiny/math_grpo.yaml;
trained once and cached by recipe hash + warm-start seed: one model per seed, or one for all
seeds when the recipe sets ``model.warm_start.seed``) and from the same RNG state, and trains
GRPO + THR for each p in ``--ps`` (default -0.5, 0, +0.5; p = 0 with mode "reweight" is plain
GRPO bit for bit, tests/test_trainer_thr.py). Then, on the held-out split:

* greedy accuracy (the trainer's ``evaluate``); "greedy" is the mean of the last ``--last-evals``
  evaluations, ``--eval-every`` steps apart, because greedy accuracy moves 2-3 points between
  evaluations (shared/notes/tiny-learning.md);
* pass@k (default k = 8): k completions per prompt at temperature 1 from the rollout engine,
  scored with the recipe's reward, unbiased estimator ``llmrl.eval.passk``; pass@1 from the same
  samples.

Per p, the interquartile mean over seeds with a 95% stratified bootstrap CI (rliable, via
``llmrl.eval.stats``) of each score, of its change from the warm start, and of its paired
difference from p = 0 (same seed). The paper's claim (spec "Reference results") is p > 0 better
greedy, p < 0 better pass@k; this bench reports whatever the runs show. Output: one JSON object.

    python bench/thr_steering.py --seeds 0 1 2 3 4 --steps 150

Seeds can run in parallel processes sharing ``--out`` with ``--reuse``; a last call with every
seed and ``--reuse`` then only reads the finished runs and summarises:

    python bench/thr_steering.py --seeds 0 1 2 --reuse &  python bench/thr_steering.py --seeds 3 4 --reuse
    python bench/thr_steering.py --seeds 0 1 2 3 4 --reuse --json-out steering.json

Cost, measured on 2 shared CPU cores (1 torch thread): ~0.4 CPU-s per RL step of 64 x 8 (0.4 to
2 s wall, depending on what else runs) plus ~5-15 s of evaluation per run: ~1 CPU-min per
150-step run, ~16 CPU-min for 5 seeds x 3 p (26 min wall as two parallel processes at load 4-6),
plus the warm start once (cached; 900 steps, 84 s for the recipe at commit 3545dd3).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_seeds.py
RECIPE = REPO / "recipes" / "tiny" / "math_grpo.yaml"


def load_cfg(raw: dict, seed: int, p: float | None, steps: int, out: Path, extra: list[str]):
    """The recipe (read once at start, so edits to the file during a long bench change nothing)
    with this run's overrides."""
    from llmrl.config.load import apply_overrides, validate_recipe

    tw = ["algorithm.token_weighting.type=none"] if p is None else \
        ["algorithm.token_weighting.type=thr", f"algorithm.token_weighting.p={p}"]
    return validate_recipe(apply_overrides(copy.deepcopy(raw), [
        f"trainer.seed={seed}", f"trainer.steps={steps}", f"trainer.output_dir={out}", "trainer.eval_every=0",
        "trainer.checkpoint_every=0", "logging.progress=false", "logging.plot=false", "logging.tensorboard=false",
        "logging.samples_per_step=0", *tw, *extra,
    ]))


def pass_at_k_eval(run, k: int, *, seed: int, batch_prompts: int = 256) -> dict[str, float]:
    """pass@k and pass@1 on the held-out split from k samples per prompt at temperature 1."""
    import torch

    from llmrl.eval.passk import mean_pass_at_k
    from llmrl.rewards.runner import score
    from llmrl.rollout.types import SamplingParams
    from llmrl.trainer.loop import columns_for, format_prompts

    cfg, data = run.cfg, run.eval_data
    sampling = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=cfg.rollout.max_completion_length)
    torch.manual_seed(seed)  # reproducible evaluation samples
    counts: list[tuple[int, int]] = []
    for start in range(0, len(data), batch_prompts):
        idx = list(range(start, min(start + batch_prompts, len(data))))
        raw = data.select(idx)[cfg.data.prompt_column]
        batch = run.engine.generate(format_prompts(cfg, run.tokenizer, raw), sampling, n=k)
        res = score([p for p in raw for _ in range(k)], batch.completions,
                    columns_for(data, idx, cfg.data.prompt_column, k), run.reward_fns)
        ok = (torch.nan_to_num(res.per_reward[run.reward_fns[0].name], nan=0.0) >= 1.0).view(len(idx), k)
        counts += [(k, int(c)) for c in ok.sum(1).tolist()]
    return {f"pass@{k}": mean_pass_at_k(counts, k), "pass@1": mean_pass_at_k(counts, 1)}


def limit_heldout(run, n: int | None) -> None:
    """Score only the first n held-out prompts (for quick checks; the data config, and with it the
    cached warm start, stays the recipe's)."""
    if n is not None and n < len(run.eval_data):
        run.eval_data = run.eval_data.select(range(n))


def train_one(raw: dict, seed: int, p: float | None, steps: int, eval_every: int, last_evals: int, k: int,
              out: Path, extra: list[str], heldout: int | None = None) -> dict:
    from llmrl.trainer.loop import evaluate, rl_step, setup

    shutil.rmtree(out, ignore_errors=True)
    run, state = setup(load_cfg(raw, seed, p, steps, out, extra))
    limit_heldout(run, heldout)
    t0 = time.perf_counter()
    evals: list[tuple[int, float]] = []
    rows: list[dict] = []
    eval_s = 0.0
    for step in range(1, steps + 1):
        m = rl_step(run, state, step)
        if step % eval_every == 0 or step == steps:
            te = time.perf_counter()
            m.update(evaluate(run, step))  # greedy: consumes no RNG, so it cannot change the training run
            eval_s += time.perf_counter() - te
            evals.append((step, m["eval/accuracy"]))
        run.logger.metrics(step, m)
        rows.append(m)
    train_s = time.perf_counter() - t0 - eval_s
    te = time.perf_counter()
    pk = pass_at_k_eval(run, k, seed=10_000 + seed)
    eval_s += time.perf_counter() - te
    run.logger.close()
    tail = [a for _, a in evals[-last_evals:]]
    mean = lambda key: sum(r.get(key, 0.0) for r in rows) / len(rows)
    return {
        "seed": seed, "p": p, "greedy": sum(tail) / len(tail), "greedy_final": evals[-1][1], "evals": evals, **pk,
        "reward_first10": sum(r["reward/mean"] for r in rows[:10]) / min(len(rows), 10),
        "reward_last10": sum(r["reward/mean"] for r in rows[-10:]) / min(len(rows), 10),
        "thr_dominant_frac_mean": mean("thr/dominant_frac"), "thr_pos_frac_mean": mean("thr/pos_frac"),
        "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
        "step_s_mean": round(sum(r["perf/step_s"] for r in rows) / len(rows), 4),
    }


def before_eval(raw: dict, seed: int, steps: int, k: int, out: Path, extra: list[str],
                heldout: int | None = None) -> dict:
    """Scores of the warm start itself (shared by every p of this seed, or by every seed when the
    recipe sets one ``model.warm_start.seed``)."""
    from llmrl.trainer.loop import evaluate, setup

    shutil.rmtree(out, ignore_errors=True)
    run, _ = setup(load_cfg(raw, seed, 0.0, steps, out, extra))
    limit_heldout(run, heldout)
    res = {"greedy": evaluate(run)["eval/accuracy"], **pass_at_k_eval(run, k, seed=10_000 + seed)}
    run.logger.close()
    return res


def summarise(runs: list[dict], before: dict[int, dict], ps: list[float], seeds: list[int], k: int) -> dict:
    import numpy as np

    from llmrl.eval.stats import iqm_ci

    metrics = ["greedy", f"pass@{k}", "pass@1"]
    by = {(r["seed"], r["p"]): r for r in runs}
    name = lambda p: f"p={p:+g}"
    out: dict = {}
    for metric in metrics:
        score = {name(p): np.array([by[s, p][metric] for s in seeds]) for p in ps}
        delta = {name(p): np.array([by[s, p][metric] - before[s][metric] for s in seeds]) for p in ps}
        entry = {"score": iqm_ci(score), "delta_vs_warm_start": iqm_ci(delta),
                 "warm_start": iqm_ci({"warm_start": np.array([before[s][metric] for s in seeds])})["warm_start"]}
        if 0.0 in ps:
            entry["paired_minus_p0"] = iqm_ci({name(p): np.array([by[s, p][metric] - by[s, 0.0][metric] for s in seeds])
                                               for p in ps if p != 0.0})
        out[metric] = _rounded(entry)
    return out


def _rounded(x):
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return round(x, 4) if isinstance(x, float) else x


def main(argv: list[str] | None = None) -> dict:
    from _seeds import adastop_verdict, add_seed_args

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(RECIPE), help="recipe YAML (read once, at start)")
    add_seed_args(ap, seeds=[0, 1, 2, 3, 4], steps=150, eval_every=25, out="runs/bench_thr_steering",
                  last_evals_help="'greedy' = mean of this many final evaluations",
                  steps_help="GRPO steps per run (64 prompts x 8 samples each)")
    ap.add_argument("--ps", type=float, nargs="+", default=[-0.5, 0.0, 0.5])
    ap.add_argument("--k", type=int, default=8, help="samples per prompt for pass@k")
    ap.add_argument("--heldout", type=int, default=None,
                    help="score only the first N held-out prompts (default: all of data.eval_size)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads; 1 (default) because on a shared 2-core host a second intra-op "
                         "thread per process spins against other processes; 0 leaves torch's default")
    ap.add_argument("--json-out", default=None, help="also write the report here")
    ap.add_argument("--reuse", action="store_true",
                    help="read finished runs (same settings) from --out instead of rerunning them")
    ap.add_argument("--adastop", default=None, metavar="STATE",
                    help="also feed each p's per-seed greedy accuracy into the AdaStop test kept in STATE (JSON): "
                         "the report's 'adastop' says equal / larger / smaller per pair or how many more seeds to run")
    args = ap.parse_args(argv)

    import torch

    from llmrl.trainer.loop import warm_started_model

    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    recipe_path = Path(args.recipe)
    text = recipe_path.read_text()
    raw = yaml.safe_load(text)
    root = Path(args.out)
    # Every finished piece is saved as <out>/<run>/result.json; with --reuse a piece whose settings
    # (recipe text included) match is read back instead of rerun, so seeds can run in separate
    # processes, a killed bench can go on, and one last call with all seeds only summarises.
    settings = {"recipe_sha256": hashlib.sha256(text.encode()).hexdigest()[:16], "steps": args.steps,
                "eval_every": args.eval_every, "last_evals": args.last_evals, "k": args.k,
                "overrides": args.overrides, "heldout": args.heldout}

    def cached(folder: Path, make):
        f = folder / "result.json"
        if args.reuse and f.is_file():
            saved = json.loads(f.read_text())
            if saved.get("settings") == settings:
                return saved["result"]
        result = make()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".result.{os.getpid()}.json"
        tmp.write_text(json.dumps({"settings": settings, "result": result}))
        tmp.replace(f)  # atomic: a parallel process reads a whole file or none
        return result

    runs, before, warm = [], {}, {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        path = Path(warm_started_model(load_cfg(raw, seed, None, args.steps, root / "warm", args.overrides),
                                       progress=False))
        stats = json.loads((path / "warm_start.json").read_text()) if (path / "warm_start.json").is_file() else {}
        warm[seed] = {"path": str(path), "wait_or_train_s": round(time.perf_counter() - t0, 1),
                      **{k: stats.get(k) for k in ("steps", "seconds", "accuracy", "reached_target")}}
        folder = root / f"before_{path.name}"  # one per distinct warm start
        scratch = root / f".before_{path.name}.{os.getpid()}"  # parallel processes must not share a run folder
        before[seed] = cached(folder, lambda: before_eval(raw, seed, args.steps, args.k, scratch, args.overrides,
                                                          args.heldout))
        shutil.rmtree(scratch, ignore_errors=True)
        print(json.dumps({"seed": seed, "warm_start": warm[seed], "before": before[seed]}), file=sys.stderr)
        for p in args.ps:
            folder = root / f"seed{seed}_p{p:+g}"
            r = cached(folder, lambda: train_one(raw, seed, p, args.steps, args.eval_every, args.last_evals, args.k,
                                                 folder, args.overrides, args.heldout))
            runs.append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "evals"}), file=sys.stderr)

    eval_size = load_cfg(raw, args.seeds[0], None, args.steps, root / "warm", args.overrides).data.eval_size
    report = {
        "bench": "thr_steering", "recipe": str(recipe_path), "recipe_sha256": settings["recipe_sha256"],
        "seeds": args.seeds, "ps": args.ps, "steps": args.steps, "eval_every": args.eval_every,
        "last_evals": args.last_evals, "k": args.k, "heldout_prompts": min(args.heldout or eval_size, eval_size),
        "torch_threads": torch.get_num_threads(),
        "summary_iqm_95ci": summarise(runs, before, args.ps, args.seeds, args.k),
        "warm_start": {str(s): {**warm[s], "scores": _rounded(before[s])} for s in args.seeds},
        "runs": [_rounded(r) for r in runs],
        "timing": {"train_s_total": round(sum(r["train_s"] for r in runs), 1),
                   "eval_s_total": round(sum(r["eval_s"] for r in runs), 1),
                   "total_wall_s_this_call": round(time.perf_counter() - t_all, 1)},
        "command": "python bench/thr_steering.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.adastop:
        report["adastop"] = adastop_verdict(args.adastop, {
            f"p={p:+g}": [(f"seed{r['seed']}", r["greedy"]) for r in runs if r["p"] == p] for p in args.ps})
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
