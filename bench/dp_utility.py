"""Private fine-tuning utility: fixed vs adaptive vs SAC (RLDP) DP-SGD vs non-private (issue 14).

The tiny notes model (``tiny://notes``, LoRA on every linear layer: one privacy group per adapter)
fine-tunes on the synthetic clinical-notes corpus (``llmrl.privacy.corpus``, planted canaries) at
each target epsilon in ``--epsilons`` (delta ``--delta``) with each controller, ``--seeds`` seeds
each, plus one non-private run per seed (the utility ceiling). A seed fixes the corpus, its
canaries, the Poisson batches and the LoRA init, so the controllers of one seed differ only in
their knobs. Per run: validation perplexity at the end (the ``sft.eval_size`` held-out rows the
SAC controller also reads), epsilon spent (RDP ledger, PRV alongside), canary exposure and
loss-threshold MIA AUC of the fine-tuned model (and of the base, adapters off). Per
(controller, epsilon): IQM with 95% stratified bootstrap CIs (rliable, ``bench/_seeds.py``); per
epsilon: the per-seed relative perplexity change of sac over fixed (IQM, CI) and the probability
that a sac seed beats a fixed seed. Prints one JSON object.

    python bench/dp_utility.py --out runs/bench_dp_utility --workers 2 --sac-pretrain-seeds 100 101 102 --reuse

Resumable: every finished run is one JSON file in ``--out`` (written atomically), ``--reuse``
reads those instead of re-running, so a crash or kill loses only the runs in flight; a failed
run is reported and left unwritten (the next ``--reuse`` call retries it). ``--workers`` runs
that many runs at once, each worker process importing torch once and using one thread.

``--sac-pretrain-seeds`` (optional) first trains the SAC policy per epsilon on those seeds, one
run after another, each warm-starting from the previous run's saved policy (corpora of other
seeds: none of the evaluation seeds' rows, validation rows included); the evaluation SAC runs
then all warm-start from that epsilon's last policy (``privacy.sac.warm_start``) and keep
learning online.

The fixed-knob noise of each epsilon (Opacus' ``get_noise_multiplier``, tens of seconds under
load) is computed once in the parent before the workers fork, so they inherit its cache.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/_seeds.py
RECIPE = REPO / "recipes" / "tiny" / "private_sft.yaml"
CONTROLLERS = ("fixed", "adaptive", "sac")
NON_PRIVATE = "nonprivate"


def run_name(controller: str, epsilon: float | None, seed: int, *, pretrain: bool = False) -> str:
    """File stem of one run: ``sac_eps4_seed0``, ``nonprivate_seed0``, ``pretrain_sac_eps4_seed100``."""
    stem = NON_PRIVATE if controller == NON_PRIVATE else f"{controller}_eps{epsilon:g}"
    return ("pretrain_" if pretrain else "") + f"{stem}_seed{seed}"


def overrides(args: argparse.Namespace, controller: str, epsilon: float | None, seed: int, out_dir: Path,
              warm_start: str | None = None) -> list[str]:
    """Recipe overrides of one run: the bench's size, then the controller and budget."""
    sets = [f"model.name_or_path=tiny://notes?hidden_size={args.hidden_size}&num_layers={args.num_layers}",
            f"data.args={{size: {args.rows}, test_size: {args.eval_rows}, num_canaries: {args.canaries}, "
            f"canary_repeats: {args.canary_repeats}}}",
            f"sft.batch_size={args.batch_size}", f"sft.micro_batch_size={args.batch_size}",
            f"sft.epochs={args.steps * args.batch_size / args.rows!r}", f"sft.max_length={args.max_length}",
            f"sft.eval_size={args.eval_rows}", f"sft.eval_every={args.interval}",
            f"sft.exposure_candidates={args.exposure_candidates}", f"trainer.lr={args.lr!r}",
            f"trainer.seed={seed}", f"trainer.output_dir={out_dir}", "trainer.checkpoint_every=0",
            "logging.progress=false", "logging.plot=false", "logging.tensorboard=false"]
    if controller == NON_PRIVATE:
        return sets + ["privacy=null", *args.overrides]
    sets += [f"privacy.controller={controller}", f"privacy.target_epsilon={epsilon!r}", f"privacy.delta={args.delta!r}",
             f"privacy.sac.interval={args.interval}"]
    if warm_start:
        sets.append(f"privacy.sac.warm_start={warm_start}")
    return sets + list(args.overrides)


def result_of(summary: dict[str, Any], controller: str, epsilon: float | None, seed: int, wall: float) -> dict:
    """What the bench keeps of a run's summary.json."""
    ft, base = summary["attacks"]["fine_tuned"], summary["attacks"].get("base", {})
    res = {"controller": controller, "epsilon_target": epsilon, "seed": seed, "steps": summary["steps"],
           "val_ppl": summary["val_ppl"], "val_ppl_start": summary["curve"][0]["val_ppl"],
           "val_ppl_curve": [[c["step"], round(c["val_ppl"], 4)] for c in summary["curve"]],
           "canary_exposure": ft.get("canary_exposure"), "mia_auc": ft["mia_auc"],
           "base_canary_exposure": base.get("canary_exposure"), "base_mia_auc": base.get("mia_auc"),
           "wall_seconds": round(wall, 1)}
    if "privacy" in summary:
        p = summary["privacy"]
        res.update(epsilon=p["epsilon"], epsilon_prv=p["epsilon_prv"], baseline_sigma=p["baseline_sigma"],
                   stopped=p["stopped"], sigma_eff=[round(t["sigma_eff"], 4) for t in p["trajectory"]],
                   filter_factors=[round(t["filter_factor"], 4) for t in p["trajectory"]],
                   clip_norm=[round(math.sqrt(sum(c * c for c in t["clips"])), 4) for t in p["trajectory"]])
        rewards = [m["sac/reward"] for m in summary["metrics"] if "sac/reward" in m]
        if rewards:
            res["sac_rewards"] = [round(r, 5) for r in rewards]
    return res


def warm_noise_cache(args: argparse.Namespace) -> dict[float, float]:
    """Compute each epsilon's baseline noise in this process (``baseline_noise`` is cached), with the
    run's own sample rate and step count; returns {epsilon: sigma}."""
    from llmrl.config.load import load_recipe
    from llmrl.privacy.engine import baseline_noise
    from llmrl.sft.train import total_steps

    sigmas = {}
    for e in args.epsilons:
        cfg = load_recipe(RECIPE, overrides(args, "fixed", e, 0, Path(args.out) / "runs" / "noise"))
        T = total_steps(cfg, args.rows)
        if T != args.steps:
            raise ValueError(f"--steps {args.steps} with --rows {args.rows} and --batch-size {args.batch_size} gives {T} steps")
        p = cfg.privacy
        sigmas[e] = baseline_noise(p.target_epsilon, p.delta, min(args.batch_size / args.rows, 1.0), T, p.accountant)
    return sigmas


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def run_one(job: dict, args: argparse.Namespace) -> dict:
    """Train one run (in a worker process), write its JSON atomically, return it."""
    from llmrl.config.load import load_recipe
    from llmrl.sft.train import train_sft

    out = Path(args.out)
    run_dir = out / "runs" / job["name"]
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = load_recipe(RECIPE, overrides(args, job["controller"], job["epsilon"], job["seed"], run_dir,
                                        job.get("warm_start")))
    t0 = time.perf_counter()
    summary = train_sft(cfg)
    res = result_of(summary, job["controller"], job["epsilon"], job["seed"], time.perf_counter() - t0)
    if job["controller"] == "sac":
        res["warm_start"] = job.get("warm_start")
        res["policy"] = str(run_dir / "sac_policy.pt")
    for sub in ("final", "checkpoints"):  # keep summary.json and the SAC policy; the adapters are not needed
        shutil.rmtree(run_dir / sub, ignore_errors=True)
    tmp = out / f".{job['name']}.json.tmp"
    tmp.write_text(json.dumps(res))
    os.replace(tmp, out / f"{job['name']}.json")
    return res


def run_jobs(jobs: list[dict], args: argparse.Namespace, pool: ProcessPoolExecutor | None) -> tuple[list[dict], list[dict]]:
    """Run (or, with --reuse, read) ``jobs``; returns (results, failures). Each result is logged to stderr."""
    out = Path(args.out)
    results, failures, todo = [], [], []
    for job in jobs:
        path = out / f"{job['name']}.json"
        if args.reuse and path.exists():
            results.append(json.loads(path.read_text()))
        else:
            todo.append(job)

    def log(job: dict, res: dict | None, err: str | None) -> None:
        if res is not None:
            results.append(res)
            shown = {k: res[k] for k in ("controller", "epsilon_target", "seed", "val_ppl", "epsilon", "canary_exposure",
                                         "mia_auc", "wall_seconds") if k in res}
            print(json.dumps({"run": job["name"], **shown}), file=sys.stderr, flush=True)
        else:
            failures.append({"run": job["name"], "error": err})
            print(f"FAILED {job['name']}: {err}", file=sys.stderr, flush=True)

    if pool is None:
        for job in todo:
            try:
                log(job, run_one(job, args), None)
            except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
                log(job, None, f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")
    else:
        futures = {pool.submit(run_one, job, args): job for job in todo}
        for fut in as_completed(futures):
            exc = fut.exception()
            log(futures[fut], None if exc else fut.result(), f"{type(exc).__name__}: {exc}" if exc else None)
    return results, failures


def pretrain_policies(args: argparse.Namespace, pool: ProcessPoolExecutor | None) -> tuple[dict[float, str], list[dict]]:
    """Per epsilon, a chain of SAC runs on ``--sac-pretrain-seeds`` (each warm-starting from the last);
    the chains of different epsilons run side by side. Returns {epsilon: policy path}, failures."""
    policies: dict[float, str | None] = {e: args.sac_warm_start for e in args.epsilons}
    failures: list[dict] = []
    for seed in args.sac_pretrain_seeds:
        jobs = [{"name": run_name("sac", e, seed, pretrain=True), "controller": "sac", "epsilon": e, "seed": seed,
                 "warm_start": policies[e]} for e in args.epsilons]
        done, failed = run_jobs(jobs, args, pool)
        failures += failed
        for r in done:
            policies[r["epsilon_target"]] = r["policy"]
        if failed:
            break
    return policies, failures


def summarise(results: list[dict], epsilons: list[float], *, reps: int = 2000) -> dict:
    """IQM + 95% CI per (controller, epsilon) of each measure; sac vs fixed per epsilon (paired by seed)."""
    import numpy as np

    from _seeds import interval
    from llmrl.eval.compare import compare_scores

    def ci(values: list[float]) -> dict | None:
        vals = [v for v in values if v is not None and math.isfinite(v)]
        return interval(vals) if len(vals) >= 2 else None

    measures = ("val_ppl", "canary_exposure", "mia_auc", "epsilon")
    groups: dict[str, list[dict]] = {}
    for r in results:
        key = NON_PRIVATE if r["controller"] == NON_PRIVATE else f"{r['controller']}@eps{r['epsilon_target']:g}"
        groups.setdefault(key, []).append(r)
    table = {}
    for key, rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        table[key] = {"seeds": [r["seed"] for r in rs], "wall_seconds_mean": round(float(np.mean([r["wall_seconds"] for r in rs])), 1)}
        for m in measures:
            if m in rs[0]:
                table[key][m] = [r[m] for r in rs]
                table[key][m + "_iqm"] = ci([r[m] for r in rs])
        table[key]["base_canary_exposure_iqm"] = ci([r["base_canary_exposure"] for r in rs])
        table[key]["base_mia_auc_iqm"] = ci([r["base_mia_auc"] for r in rs])
    verdicts = {}
    for e in epsilons:
        fixed = {r["seed"]: r["val_ppl"] for r in groups.get(f"fixed@eps{e:g}", [])}
        sac = {r["seed"]: r["val_ppl"] for r in groups.get(f"sac@eps{e:g}", [])}
        both = sorted(set(fixed) & set(sac))
        if len(both) < 2:
            continue
        rel = [100 * (sac[s] - fixed[s]) / fixed[s] for s in both]  # % change of perplexity, < 0: sac better
        poi = compare_scores({"sac": -np.array([sac[s] for s in both]), "fixed": -np.array([fixed[s] for s in both])},
                             reps=reps)["probability_of_improvement"]["sac > fixed"]
        d = interval(rel)
        verdicts[f"eps{e:g}"] = {
            "seeds": both, "sac_minus_fixed_ppl_pct": [round(x, 3) for x in rel], "iqm_pct": d,
            "sac_lower_in_seeds": sum(x < 0 for x in rel), "probability_sac_lower_ppl": poi,
            "sac_below_fixed": ("yes" if d["ci_high"] < 0 else "no" if d["ci_low"] > 0 else "not resolved")}
    return {"by_config": table, "sac_vs_fixed": verdicts}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    ap.add_argument("--no-nonprivate", dest="nonprivate", action="store_false", help="skip the non-private runs")
    ap.add_argument("--steps", type=int, default=50, help="optimizer steps per run (T)")
    ap.add_argument("--interval", type=int, default=5, help="K: steps per SAC action (and between evaluations)")
    ap.add_argument("--rows", type=int, default=2000, help="training rows (Poisson rate = batch / rows)")
    ap.add_argument("--batch-size", type=int, default=64, help="logical (expected) batch size")
    ap.add_argument("--eval-rows", type=int, default=100, help="held-out rows: validation perplexity and MIA non-members")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--hidden-size", type=int, default=64)
    ap.add_argument("--num-layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--canaries", type=int, default=4)
    ap.add_argument("--canary-repeats", type=int, default=4)
    ap.add_argument("--exposure-candidates", type=int, default=199)
    ap.add_argument("--sac-pretrain-seeds", type=int, nargs="*", default=[],
                    help="train the SAC policy on these seeds first (disjoint from --seeds), then warm-start from it")
    ap.add_argument("--sac-warm-start", default=None, help="a saved policy (sac_policy.pt) every SAC run starts from")
    ap.add_argument("--workers", type=int, default=1, help="runs at once (one process and one thread each)")
    ap.add_argument("--out", default="runs/bench_dp_utility")
    ap.add_argument("--reuse", action="store_true", help="read finished runs from --out instead of re-running them")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra recipe overrides")
    args = ap.parse_args(argv)
    if overlap := set(args.sac_pretrain_seeds) & set(args.seeds):
        ap.error(f"--sac-pretrain-seeds must not include evaluation seeds (both have {sorted(overlap)})")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    sigmas = warm_noise_cache(args)  # before the fork: every worker inherits the cache
    # fork (as DataLoader workers do): the parent ran no torch op, and the children inherit the noise cache
    pool = (ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("fork"), initializer=_worker_init,
                                initargs=(1,)) if args.workers > 1 else None)
    if pool is None:
        _worker_init(1)
    try:
        policies, failures = (pretrain_policies(args, pool) if args.sac_pretrain_seeds
                              else ({e: args.sac_warm_start for e in args.epsilons}, []))
        jobs = []
        for seed in args.seeds:  # seed-major: a partial bench still covers every configuration
            if args.nonprivate:
                jobs.append({"name": run_name(NON_PRIVATE, None, seed), "controller": NON_PRIVATE, "epsilon": None,
                             "seed": seed})
            jobs += [{"name": run_name(c, e, seed), "controller": c, "epsilon": e, "seed": seed,
                      "warm_start": policies[e] if c == "sac" else None} for e in args.epsilons for c in args.controllers]
        results, failed = run_jobs(jobs, args, pool)
        failures += failed
    finally:
        if pool is not None:
            pool.shutdown()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    report = {"bench": "dp_utility", "delta": args.delta, "epsilons": args.epsilons, "seeds": args.seeds,
              "steps": args.steps, "interval": args.interval, "intervals_per_run": math.ceil(args.steps / args.interval),
              "rows": args.rows, "batch_size": args.batch_size, "sample_rate": args.batch_size / args.rows,
              "model": f"tiny://notes?hidden_size={args.hidden_size}&num_layers={args.num_layers}",
              "baseline_sigma": {f"eps{e:g}": s for e, s in sigmas.items()}, "sac_policies": policies, "runs": len(results), "failed": failures,
              **summarise(results, args.epsilons), "wall_seconds": round(time.time() - t0, 1),
              "loadavg_at_end": load, "command": "python bench/dp_utility.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
