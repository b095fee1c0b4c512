"""What does THR cost per trainer step? THR on vs off on the tiny arithmetic recipe.

Two runs are set up from the same warm-started model (recipes/tiny/math_grpo.yaml; the warm start
is trained once per seed and cached): one with ``algorithm.token_weighting.type=thr`` and one with
``none``. They take turns, ``--steps-per-turn`` RL steps at a time, the order flipping every round
(on, off, off, on, on, off, ...), so that load from other processes on a shared machine hits both
alike. The first ``--warmup`` steps of each run are dropped (first-call allocations). Reported:
median seconds per step for each, their ratio (target: THR on <= 1.10 x off), and THR's own
seconds: ``perf/token_weighting_s`` (scores + reweighting, timed by the trainer) and
``thr/time_s`` (that plus the collector's work inside the old-policy forward).

A breakdown on one fixed rollout batch follows (``--profile-reps`` repetitions, medians): the
old-policy forward with and without the hidden states / kept logits THR needs, and each THR piece
(V* construction, ``ThrCollector.add``, the scores, the reweighting). Output: one JSON object.

    python bench/thr_overhead.py --rounds 10 --steps-per-turn 5
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "tiny" / "math_grpo.yaml"


def make_run(raw: dict, out: Path, seed: int, thr: bool, p: float, extra: list[str]):
    from llmrl.config.load import apply_overrides, validate_recipe
    from llmrl.trainer.loop import setup

    shutil.rmtree(out, ignore_errors=True)
    tw = ["algorithm.token_weighting.type=thr", f"algorithm.token_weighting.p={p}"] if thr else \
        ["algorithm.token_weighting.type=none"]
    cfg = validate_recipe(apply_overrides(copy.deepcopy(raw), [
        f"trainer.seed={seed}", f"trainer.output_dir={out}", "trainer.eval_every=0", "trainer.checkpoint_every=0",
        "logging.progress=false", "logging.plot=false", "logging.tensorboard=false", "logging.samples_per_step=0",
        *tw, *extra,
    ]))
    return setup(cfg)  # (run, state)


def alternate(runs: dict, rounds: int, steps_per_turn: int, warmup: int) -> dict[str, list[dict]]:
    """Step the runs in turns; returns every kept step's metrics per run."""
    from llmrl.trainer.loop import rl_step

    names = list(runs)
    kept: dict[str, list[dict]] = {n: [] for n in names}
    step = {n: 0 for n in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            for _ in range(steps_per_turn):
                step[n] += 1
                m = rl_step(*runs[n], step[n])
                if step[n] > warmup:
                    kept[n].append(m)
    return kept


def med(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return statistics.median(vals) if vals else float("nan")


def profile(run, state, reps: int) -> dict[str, float]:
    """Median seconds of each THR piece on one fixed rollout batch of ``run`` (THR on)."""
    import torch

    from llmrl.algorithms.advantages import compute_advantages, zero_variance_groups
    from llmrl.algorithms.thr import ThrCollector, correct_mask, group_vocab, thr_token_advantages
    from llmrl.rewards.runner import score
    from llmrl.rollout.types import SamplingParams
    from llmrl.trainer.forward import forward_completions
    from llmrl.trainer.loop import columns_for

    cfg, G = run.cfg, run.cfg.rollout.num_generations
    tw = cfg.algorithm.token_weighting
    idx = state.sampler.next(cfg.trainer.prompts_per_step)
    raw = run.train_data.select(idx)[cfg.data.prompt_column]
    sampling = SamplingParams(temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                              max_new_tokens=cfg.rollout.max_completion_length)
    batch = run.engine.generate(raw, sampling, n=G)
    rewards = score([p for p in raw for _ in range(G)], batch.completions,
                    columns_for(run.train_data, idx, cfg.data.prompt_column, G), run.reward_fns).total
    flat = zero_variance_groups(rewards, G)
    keep = (~flat).repeat_interleave(G).nonzero().squeeze(1)
    batch, rewards = batch.select(keep), rewards[keep]
    adv = compute_advantages(cfg.algorithm.advantage, rewards, G)
    chunks = list(torch.arange(len(batch)).split(cfg.trainer.micro_batch_size))
    run.policy.eval()

    def timed(fn) -> float:
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return statistics.median(out)

    @torch.no_grad()
    def forward(hidden: bool) -> list:
        return [forward_completions(run.policy, batch, rows, temperature=cfg.rollout.temperature,
                                    want_hidden=hidden, keep_logits=hidden) for rows in chunks]

    fwds = forward(True)
    vocab = group_vocab(batch.completion_ids, batch.loss_mask, batch.group_ids)

    def collect() -> ThrCollector:
        col = ThrCollector(vocab)
        for rows, f in zip(chunks, fwds):
            col.add(rows, f.logits, f.hidden)
        return col

    col = collect()
    correct = correct_mask(rewards, batch.group_ids)
    sc = col.scores(adv, correct)
    res = {
        "rows": len(batch), "completion_positions": int(batch.completion_ids.shape[1]),
        "policy_tokens": int(batch.loss_mask.sum()), "groups": int(len(keep) // G),
        "vstar_max": int(vocab.ids.shape[1]), "hidden_size": int(fwds[0].hidden.shape[-1]),
        "old_forward_off_s": timed(lambda: forward(False)),
        "old_forward_on_s": timed(lambda: forward(True)),
        "group_vocab_s": timed(lambda: group_vocab(batch.completion_ids, batch.loss_mask, batch.group_ids)),
        "collector_add_s": timed(collect),
        "correct_mask_s": timed(lambda: correct_mask(rewards, batch.group_ids)),
        "scores_s": timed(lambda: col.scores(adv, correct)),
        "token_advantages_s": timed(lambda: thr_token_advantages(
            adv, sc, batch.loss_mask, batch.group_ids, correct, p=tw.p, mode=tw.mode, threshold=tw.threshold,
            beta=tw.beta, percentile=tw.percentile)),
    }
    res["extra_forward_s"] = res["old_forward_on_s"] - res["old_forward_off_s"]
    res["thr_total_s"] = res["extra_forward_s"] + sum(res[k] for k in (
        "group_vocab_s", "collector_add_s", "correct_mask_s", "scores_s", "token_advantages_s"))
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in res.items()}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(RECIPE), help="recipe YAML (read once, at start)")
    ap.add_argument("--seed", type=int, default=0, help="trainer.seed (also picks the cached warm start)")
    ap.add_argument("--p", type=float, default=0.5, help="THR steering strength for the 'on' run")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps-per-turn", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3, help="first steps of each run not counted")
    ap.add_argument("--profile-reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch.set_num_threads; 1 (default) because on a shared 2-core host a second intra-op "
                         "thread per process spins against other processes; 0 leaves torch's default")
    ap.add_argument("--out", default=None, help="scratch folder for the two runs (default: a temp dir)")
    ap.add_argument("--json-out", default=None, help="also write the report here")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra recipe overrides")
    args = ap.parse_args(argv)

    import torch

    import yaml

    from llmrl.config.load import apply_overrides, validate_recipe
    from llmrl.trainer.loop import warm_started_model

    if args.threads:
        torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    recipe_path = Path(args.recipe)
    recipe_text = recipe_path.read_text()
    raw = yaml.safe_load(recipe_text)  # read once: both runs see the same recipe
    base = validate_recipe(apply_overrides(copy.deepcopy(raw), [f"trainer.seed={args.seed}", *args.overrides]))
    t0 = time.perf_counter()
    warm_path = warm_started_model(base, progress=False)  # cached after the first call
    warm_s = time.perf_counter() - t0
    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="thr_overhead_"))
    runs = {"thr_on": make_run(raw, root / "on", args.seed, True, args.p, args.overrides),
            "thr_off": make_run(raw, root / "off", args.seed, False, args.p, args.overrides)}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    kept = alternate(runs, args.rounds, args.steps_per_turn, args.warmup)
    alt_s = time.perf_counter() - t0
    load_after = os.getloadavg()
    on, off = kept["thr_on"], kept["thr_off"]
    step_on, step_off = med(on, "perf/step_s"), med(off, "perf/step_s")
    # Paired by turn: ratio of each round's medians, robust to load that drifts between rounds.
    spt = args.steps_per_turn
    turns_on = [statistics.median(r["perf/step_s"] for r in on[i:i + spt]) for i in range(0, len(on), spt)]
    turns_off = [statistics.median(r["perf/step_s"] for r in off[i:i + spt]) for i in range(0, len(off), spt)]
    paired = [a / b for a, b in zip(turns_on, turns_off) if b > 0]
    prof = profile(*runs["thr_on"], args.profile_reps)
    for r, _ in runs.values():
        r.logger.close()
    if not args.out:
        shutil.rmtree(root, ignore_errors=True)

    report = {
        "bench": "thr_overhead",
        "recipe": str(recipe_path),
        "recipe_sha256": hashlib.sha256(recipe_text.encode()).hexdigest()[:16],
        "conditions": {
            "seed": args.seed, "p": args.p, "rounds": args.rounds, "steps_per_turn": spt, "warmup_steps": args.warmup,
            "steps_counted_per_run": len(on), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "loadavg_1m_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
            "device": str(runs["thr_on"][0].device),
            "prompts_per_step": base.trainer.prompts_per_step, "num_generations": base.rollout.num_generations,
            "micro_batch_size": base.trainer.micro_batch_size,
        },
        "median_step_s": {"thr_on": round(step_on, 5), "thr_off": round(step_off, 5)},
        "ratio_on_over_off": round(step_on / step_off, 4),
        "ratio_paired_turns_median": round(statistics.median(paired), 4) if paired else None,
        "target_ratio": 1.10,
        "passed": step_on / step_off <= 1.10,
        "thr_seconds_median": {
            "perf/token_weighting_s": round(med(on, "perf/token_weighting_s"), 6),
            "thr/time_s": round(med(on, "thr/time_s"), 6),
            "old_forward_s_on": round(med(on, "perf/old_forward_s"), 6),
            "old_forward_s_off": round(med(off, "perf/old_forward_s"), 6),
        },
        "phase_medians_s": {n: {k.removeprefix("perf/"): round(med(rows, k), 5) for k in
                                ("perf/rollout_s", "perf/reward_s", "perf/old_forward_s", "perf/token_weighting_s",
                                 "perf/update_s")} for n, rows in kept.items()},
        "thr_share_of_step": round(med(on, "thr/time_s") / step_on, 4),
        "profile_one_batch_s": prof,
        "warm_start": {"path": warm_path, "wait_or_train_s": round(warm_s, 1)},
        "alternating_wall_s": round(alt_s, 1),
        "total_wall_s": round(time.perf_counter() - t_all, 1),
        "command": "python bench/thr_overhead.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    return report


if __name__ == "__main__":
    main()
