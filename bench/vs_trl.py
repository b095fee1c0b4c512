"""Seconds per RL step: llmrl's trainer vs trl's GRPOTrainer, same model, data and batch.

Both sides start from the same weights (the tiny recipe's cached warm start, or ``--model``),
draw prompts from the same arithmetic train split, sample G=8 completions for each of 64 prompts
per optimizer step (512 sequences, one generate call, one forward/backward, no gradient
accumulation), with the same completion length, temperature 1.0, fp32 on CPU, no KL, one update
epoch, the same ``math_reward``, AdamW at the same learning rate and grad-norm clip, token-mean
loss aggregation (TRL ``loss_type="bnpo"``) and the same torch thread count (the recipe's
``trainer.num_threads``, or ``--threads``). Two TRL defaults are switched off because they change
the work, not the algorithm: bf16 (it autocasts even on CPU) and gradient checkpointing (it
recomputes the forward during backward; ``--trl-gradient-checkpointing`` keeps it).

By default llmrl trains on all 512 sequences like TRL; ``--skip-zero-variance`` restores llmrl's
default of dropping groups whose rewards are all equal (they carry no gradient; ~40% of groups
here). llmrl always runs an old-policy forward pass; TRL skips it when ``num_iterations == 1``.

Each run is a separate process (``--which ours|trl``); runs alternate ours/trl, then trl/ours
(ABBA), so drift in the shared machine's load hits both sides alike. The first ``--warmup``
steps of every run are dropped; a run's figure is the median of its steady steps, a side's the
median over its runs, and the ratio the median over rounds of the two runs' ratio (back-to-back
runs see the most similar load). Each run also checks that it really trained: non-zero gradient
norm and weights that moved.

Step time is the same span on both sides: generation, rewards, advantages, (our old-policy
pass), forward, backward and the optimizer step. For llmrl it is ``perf/step_s`` from
metrics.jsonl; for TRL the time from ``on_step_begin`` to ``on_step_end``. CPU seconds per step
(``time.process_time``) are reported next to wall time: on shared cores they move much less.

    python bench/vs_trl.py --steps 30 --warmup 5 --rounds 5
    python bench/vs_trl.py --skip-zero-variance --trl-gradient-checkpointing   # each side's defaults
    python bench/vs_trl.py --profile      # phase by phase, both trainers, one rollout batch
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "tiny" / "math_grpo.yaml"


# --------------------------------------------------------------------------- shared settings
def shared(args) -> dict:
    """The settings both sides get. Values the recipe fixes are read from it, so they cannot drift."""
    from llmrl.config.load import load_recipe

    cfg = load_recipe(args.recipe, [f"trainer.seed={args.seed}", "logging.progress=false"])
    return {
        "num_generations": cfg.rollout.num_generations,
        "prompts_per_step": cfg.trainer.prompts_per_step,
        "sequences_per_step": cfg.sequences_per_step,
        "max_completion_length": cfg.rollout.max_completion_length,
        "max_prompt_length": cfg.rollout.max_prompt_length,
        "temperature": cfg.rollout.temperature,
        "lr": cfg.trainer.lr,
        "max_grad_norm": cfg.trainer.max_grad_norm,
        "clip_eps": cfg.algorithm.clip_eps_low,
        "kl_coef": 0.0,
        "epochs": 1,
        "loss": {"ours": "token-mean", "trl": "bnpo"},
        "advantage": {"ours": "grpo", "trl": "scale_rewards=group"},
        "data": {"name": cfg.data.name, "args": cfg.data.args, "train_size": cfg.data.train_size},
        "reward": "llmrl.rewards.math:math_reward",
        "seed": args.seed,
        "skip_zero_variance_groups_ours": args.skip_zero_variance,
        "steps_per_run": args.steps,
        "warmup_steps_dropped": args.warmup,
        # both sides get the same torch thread count: --threads, else the recipe's trainer.num_threads
        "torch_threads": args.threads or cfg.trainer.num_threads,
        "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
    }


def resolve_model(args) -> str:
    """``--model`` or the tiny recipe's warm-started model (trained once, then cached)."""
    if args.model:
        return args.model
    from llmrl.config.load import load_recipe
    from llmrl.trainer.loop import warm_started_model

    cfg = load_recipe(args.recipe, [f"trainer.seed={args.seed}", "logging.progress=false"])
    return warm_started_model(cfg, progress=False)


def weights_moved(model_path: str, state_dict) -> float:
    """Relative L2 change of all parameters w.r.t. the starting checkpoint."""
    import torch
    from safetensors.torch import load_file

    start = load_file(str(Path(model_path) / "model.safetensors"))
    num = sum(float((state_dict[k].float().cpu() - v.float()).pow(2).sum()) for k, v in start.items() if k in state_dict)
    den = sum(float(v.float().pow(2).sum()) for v in start.values())
    return (num / den) ** 0.5 if den else float("nan")


# --------------------------------------------------------------------------- one run: llmrl
def run_ours(args, s: dict, out_dir: Path) -> dict:
    from safetensors.torch import load_file

    import llmrl.trainer.loop as loop
    from llmrl.config.load import load_recipe
    from llmrl.trainer.reporting import read_metrics

    cfg = load_recipe(args.recipe, [
        f"model.name_or_path={args.model}", "model.warm_start=null",
        f"trainer.seed={args.seed}", f"trainer.steps={args.steps}", f"trainer.output_dir={out_dir}",
        "trainer.eval_every=0", "trainer.checkpoint_every=0", "trainer.warmup_steps=0", "trainer.device=cpu",
        f"trainer.degenerate_patience={args.steps + 1}", "data.eval_size=0",
        f"algorithm.skip_zero_variance_groups={str(args.skip_zero_variance).lower()}",
        f"algorithm.kl_coef={s['kl_coef']}", f"algorithm.epochs={s['epochs']}", "algorithm.loss_agg=token-mean",
        "logging.progress=false", "logging.plot=false", "logging.samples_per_step=0", "logging.tensorboard=false",
        *([f"trainer.num_threads={s['torch_threads']}"] if s["torch_threads"] else []),
    ])
    assert cfg.rollout.generation_batch_size is None and cfg.trainer.micro_batch_size >= cfg.sequences_per_step
    cpu_s: list[float] = []
    rl_step = loop.rl_step

    def timed_step(run, state, step):  # CPU seconds of the process per step (all threads), next to perf/step_s
        c0 = time.process_time()
        try:
            return rl_step(run, state, step)
        finally:
            cpu_s.append(time.process_time() - c0)

    loop.rl_step = timed_step  # train() looks rl_step up in its module at call time
    loop.train(cfg)
    rows = [r for r in read_metrics(out_dir / "metrics.jsonl") if "reward/mean" in r]
    steady = rows[args.warmup:]
    phases = sorted({k for r in steady for k in r if k.startswith("perf/") and k.endswith("_s")} - {"perf/step_s", "perf/tokens_per_s"})
    final = load_file(str(out_dir / "final" / "model.safetensors"))
    return {
        "step_s": [r["perf/step_s"] for r in rows],
        "cpu_s": cpu_s,
        "phases_s": {k[len("perf/"):-2]: statistics.mean(r.get(k, 0.0) for r in steady) for k in phases},
        "grad_norm_mean": statistics.mean(r.get("loss/grad_norm", 0.0) for r in rows),
        "loss_abs_mean": statistics.mean(abs(r.get("loss/policy", 0.0)) for r in rows),
        "reward_mean": statistics.mean(r["reward/mean"] for r in rows),
        "completion_len_mean": statistics.mean(r["rollout/completion_len"] for r in rows),
        "zero_variance_frac": statistics.mean(r["reward/zero_variance_frac"] for r in rows),
        "weights_rel_change": weights_moved(args.model, final),
    }


# --------------------------------------------------------------------------- one run: trl
def _timed(obj, name: str, sink: dict[str, float]) -> None:
    """Wrap obj.name so each call adds its wall time to sink[name] (instance attribute only)."""
    fn = getattr(obj, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            sink[name] = sink.get(name, 0.0) + time.perf_counter() - t0

    setattr(obj, name, wrapper)


def run_trl(args, s: dict, out_dir: Path) -> dict:
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from llmrl.data.registry import build_dataset
    from llmrl.rewards.math import math_reward

    tok = AutoTokenizer.from_pretrained(args.model)
    # TRL tokenizes prompts with special tokens on: the tokenizer must prepend <bos> itself, as ours does.
    assert tok("1+1=")["input_ids"][0] == tok.bos_token_id, "tokenizer does not prepend <bos>"
    data = build_dataset(s["data"]["name"], "train", n=s["data"]["train_size"], seed=args.seed, args=s["data"]["args"])
    G, P = s["num_generations"], s["prompts_per_step"]
    config = GRPOConfig(
        output_dir=str(out_dir), report_to="none", use_cpu=True, bf16=False, fp16=False, seed=args.seed,
        per_device_train_batch_size=P * G, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=G, num_iterations=1, max_completion_length=s["max_completion_length"],
        temperature=s["temperature"], top_p=1.0, top_k=0, beta=s["kl_coef"], loss_type="bnpo",
        epsilon=s["clip_eps"], scale_rewards="group", learning_rate=s["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=s["max_grad_norm"], max_steps=args.steps,
        logging_steps=1, save_strategy="no", disable_tqdm=True, log_completions=False, use_vllm=False,
        dataloader_num_workers=0,
        # TRL defaults to activation (gradient) checkpointing, which recomputes the forward during backward
        # (~0.17 s/step here); llmrl does not checkpoint, so by default neither side does.
        gradient_checkpointing=args.trl_gradient_checkpointing,
    )
    step_s: list[float] = []
    cpu_s: list[float] = []
    phases: list[dict[str, float]] = []
    sink: dict[str, float] = {}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            sink.clear()
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, *_a, **_k):
            step_s.append(time.perf_counter() - self.t0)
            cpu_s.append(time.process_time() - self.c0)
            phases.append({**sink, "step": step_s[-1]})

    trainer = GRPOTrainer(model=args.model, reward_funcs=math_reward, args=config, train_dataset=data,
                          processing_class=tok, callbacks=[StepTimer()])
    assert trainer.args.generation_batch_size == P * G and trainer.num_iterations == 1
    for name in ("_prepare_inputs", "_generate_and_score_completions", "_generate_single_turn",
                 "_calculate_rewards", "compute_loss", "training_step"):
        _timed(trainer, name, sink)
    trainer.train()

    logs = [h for h in trainer.state.log_history if "grad_norm" in h]
    steady = phases[args.warmup:]

    def mean(key):
        return statistics.mean(p.get(key, 0.0) for p in steady)

    # training_step = _prepare_inputs (generation, rewards, advantages) + compute_loss (forward) + backward
    gen_score, fwd = mean("_prepare_inputs"), mean("compute_loss")
    return {
        "step_s": step_s,
        "cpu_s": cpu_s,
        "phases_s": {
            "generate": mean("_generate_single_turn"),
            "reward": mean("_calculate_rewards"),
            "rollout_other": mean("_generate_and_score_completions") - mean("_generate_single_turn") - mean("_calculate_rewards"),
            "forward_loss": fwd,
            "backward": mean("training_step") - gen_score - fwd,
            "optimizer_etc": mean("step") - mean("training_step"),
        },
        "grad_norm_mean": statistics.mean(h["grad_norm"] for h in logs),
        "loss_abs_mean": statistics.mean(abs(h["loss"]) for h in logs),
        "reward_mean": statistics.mean(h["reward"] for h in logs),
        "completion_len_mean": statistics.mean(h["completions/mean_length"] for h in logs),
        "zero_variance_frac": statistics.mean(h["frac_reward_zero_std"] for h in logs),
        "weights_rel_change": weights_moved(args.model, trainer.model.state_dict()),
        "optimizer": str(getattr(trainer.args.optim, "value", trainer.args.optim)),
    }


def child(args) -> None:
    import torch

    s = shared(args)
    if s["torch_threads"]:
        torch.set_num_threads(s["torch_threads"])
    out_dir = Path(args.work_dir)
    result = (run_ours if args.which == "ours" else run_trl)(args, s, out_dir)
    result["torch_threads"] = torch.get_num_threads()
    Path(args.json_out).write_text(json.dumps(result))


# --------------------------------------------------------------------------- --profile: phase by phase
def profile(args) -> None:
    """Both trainers' phases on the SAME rollout batch in one process, interleaved, repeated:
    median wall and CPU milliseconds each. Shows where a difference in s/step comes from."""
    import shutil

    import torch
    from trl import GRPOConfig, GRPOTrainer
    from transformers import AutoTokenizer

    import llmrl.trainer.loop as loop
    from llmrl.algorithms.losses import policy_loss
    from llmrl.config.load import load_recipe
    from llmrl.rewards.math import math_reward
    from llmrl.rewards.runner import score
    from llmrl.rollout.types import SamplingParams
    from llmrl.trainer.forward import forward_completions
    from llmrl.trainer.step import old_policy_forward

    s = shared(args)
    if s["torch_threads"]:
        torch.set_num_threads(s["torch_threads"])
    G, P, C = s["num_generations"], s["prompts_per_step"], s["max_completion_length"]
    work = Path(tempfile.mkdtemp(prefix="vs_trl_profile_"))
    try:
        cfg = load_recipe(args.recipe, [f"model.name_or_path={args.model}", "model.warm_start=null",
                                   f"trainer.output_dir={work / 'ours'}", "trainer.device=cpu", "data.eval_size=0",
                                   "logging.progress=false", "logging.tensorboard=false"])
        run, state = loop.setup(cfg)
        tok = AutoTokenizer.from_pretrained(args.model)
        trl_cfg = GRPOConfig(output_dir=str(work / "trl"), report_to="none", use_cpu=True, bf16=False,
                             per_device_train_batch_size=P * G, num_generations=G, max_completion_length=C,
                             temperature=s["temperature"], top_k=0, loss_type="bnpo", beta=0.0,
                             gradient_checkpointing=args.trl_gradient_checkpointing)
        trainer = GRPOTrainer(model=args.model, reward_funcs=math_reward, args=trl_cfg,
                              train_dataset=run.train_data, processing_class=tok)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1

        idx = state.sampler.next(P)
        raw = list(run.train_data.select(idx)["prompt"])
        prompts = [p for p in raw for _ in range(G)]
        sampling = SamplingParams(temperature=s["temperature"], top_p=1.0, top_k=0, max_new_tokens=C)
        batch = run.engine.generate(raw, sampling, n=G)
        columns = loop.columns_for(run.train_data, idx, "prompt", G)
        rows, mask = torch.arange(len(batch)), batch.loss_mask.float()
        adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
        prompt_ids = [ids for ids in tok(raw)["input_ids"] for _ in range(G)]

        def ours_forward_backward():
            run.policy.train()
            run.policy.zero_grad(set_to_none=True)
            logps = forward_completions(run.policy, batch, rows, temperature=s["temperature"]).logps
            policy_loss(logps, logps.detach(), adv, mask, loss_agg="token-mean")[0].backward()

        def trl_forward_backward():
            trainer.model.zero_grad(set_to_none=True)
            inputs = {"prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask,
                      "completion_ids": batch.completion_ids, "completion_mask": batch.completion_mask,
                      "advantages": adv, "num_items_in_batch": mask.sum()}
            trainer._compute_loss(trainer.model, inputs).backward()

        def ours_optimizer():
            torch.nn.utils.clip_grad_norm_(run.policy.parameters(), 1.0)
            run.updater.policy.optimizer.step()

        phases = {
            "ours/generate (engine: tokenize, generate, decode)": lambda: run.engine.generate(raw, sampling, n=G),
            "trl/generate (_generate_single_turn)": lambda: trainer._generate_single_turn(prompt_ids, None, {}, G),
            "ours/reward (score: thread + timeout)": lambda: score(prompts, batch.completions, columns, run.reward_fns),
            "trl/reward (math_reward, main thread)": lambda: math_reward(prompts, batch.completions, **columns),
            "ours/old_policy_forward (no grad)": lambda: old_policy_forward(run.policy, batch, micro_batch_size=len(batch),
                                                                            temperature=s["temperature"], weighting=run.weighting),
            "ours/forward+loss+backward": ours_forward_backward,
            "trl/forward+loss+backward (_compute_loss, fused lm head)": trl_forward_backward,
            "ours/clip_grad_norm+AdamW.step": ours_optimizer,
        }
        times: dict[str, list[tuple[float, float]]] = {k: [] for k in phases}
        for _ in range(args.profile_reps + 1):  # first repetition is warm-up
            for name, fn in phases.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[name].append((time.perf_counter() - w0, time.process_time() - c0))
        out = {name: {"wall_ms": round(1000 * statistics.median(t[0] for t in ts[1:]), 1),
                      "cpu_ms": round(1000 * statistics.median(t[1] for t in ts[1:]), 1)} for name, ts in times.items()}
        print(json.dumps({"phases": out, "batch": {"sequences": len(batch), "prompt_width": batch.prompt_ids.shape[1],
                                                   "completion_width": batch.completion_ids.shape[1],
                                                   "mean_completion_len": round(float(mask.sum(1).mean()), 2)},
                          "reps": args.profile_reps, "torch_threads": torch.get_num_threads(),
                          "loadavg": [round(x, 2) for x in os.getloadavg()], "model": args.model}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- parent: alternate runs
def spawn(args, which: str, work: Path, run_id: str) -> dict:
    out = work / f"{run_id}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--which", which, "--model", args.model, "--recipe", args.recipe,
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed),
           "--work-dir", str(work / run_id), "--json-out", str(out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.skip_zero_variance:
        cmd.append("--skip-zero-variance")
    if args.trl_gradient_checkpointing:
        cmd.append("--trl-gradient-checkpointing")
    log = work / f"{run_id}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "TQDM_DISABLE": "1"})
    if rc != 0:
        raise RuntimeError(f"{which} run failed (exit {rc}); last lines of {log}:\n" + "".join(log.read_text().splitlines(True)[-30:]))
    res = json.loads(out.read_text())
    res["process_s"] = round(time.perf_counter() - t0, 1)
    return res


def check_trained(which: str, res: dict) -> None:
    if not (res["grad_norm_mean"] > 0 and res["weights_rel_change"] > 0):
        raise RuntimeError(f"{which} did not train: grad_norm_mean={res['grad_norm_mean']}, "
                           f"weights_rel_change={res['weights_rel_change']}")


def median_steady(res: dict, warmup: int) -> float:
    return statistics.median(res["step_s"][warmup:])


def parent(args) -> None:
    import torch
    import transformers
    import trl

    if args.steps <= args.warmup:
        raise SystemExit(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="vs_trl_") as tmp:
        work = Path(tmp)
        # Every run reads one snapshot of the recipe, so an edit to it mid-benchmark cannot split the sides.
        snapshot = work / "recipe.yaml"
        snapshot.write_text(Path(args.recipe).read_text())
        args.recipe = str(snapshot)
        args.model = resolve_model(args)
        s = shared(args)
        for r in range(args.rounds):
            for which in (("ours", "trl") if r % 2 == 0 else ("trl", "ours")):
                res = spawn(args, which, work, f"r{r}_{which}")
                check_trained(which, res)
                runs[which].append(res)
                print(f"round {r} {which}: {median_steady(res, args.warmup):.3f} s/step "
                      f"(reward {res['reward_mean']:.3f}, len {res['completion_len_mean']:.2f}, "
                      f"process {res['process_s']} s)", file=sys.stderr, flush=True)

    def side(which: str) -> dict:
        rs = runs[which]
        phase_names = rs[0]["phases_s"].keys()
        return {
            "per_round": [statistics.median(x["step_s"][args.warmup:]) for x in rs],
            "per_round_cpu": [statistics.median(x["cpu_s"][args.warmup:]) for x in rs],
            "phases_s": {k: round(statistics.mean(x["phases_s"][k] for x in rs), 4) for k in phase_names},
            "sanity": {k: round(statistics.mean(x[k] for x in rs), 4) for k in
                       ("grad_norm_mean", "loss_abs_mean", "weights_rel_change", "reward_mean",
                        "completion_len_mean", "zero_variance_frac")},
        }

    ours, theirs = side("ours"), side("trl")
    # The two runs of a round ran back to back, so their ratio is the least load-sensitive figure;
    # the headline ratio is the median over rounds of those paired ratios (not a ratio of pooled
    # medians, which the load drifting between rounds can skew either way).
    ratios = [t / o for t, o in zip(theirs["per_round"], ours["per_round"])]
    cpu_ratios = [t / o for t, o in zip(theirs["per_round_cpu"], ours["per_round_cpu"])]
    s["torch_threads"] = {w: sorted({x["torch_threads"] for x in runs[w]}) for w in runs}  # as measured after each run
    s["model"] = args.model
    s["trl_optimizer"] = runs["trl"][0]["optimizer"]
    out = {
        "ours_s_per_step": round(statistics.median(ours["per_round"]), 4),
        "trl_s_per_step": round(statistics.median(theirs["per_round"]), 4),
        "ratio_trl_over_ours": round(statistics.median(ratios), 3),
        "rounds": args.rounds,
        "per_round_s_per_step": {"ours": [round(x, 4) for x in ours["per_round"]],
                                 "trl": [round(x, 4) for x in theirs["per_round"]],
                                 "ratio_trl_over_ours": [round(x, 3) for x in ratios]},
        # CPU seconds of the process per step: less sensitive than wall time to other load on the machine
        "cpu_s_per_step": {"ours": round(statistics.median(ours["per_round_cpu"]), 4),
                           "trl": round(statistics.median(theirs["per_round_cpu"]), 4),
                           "ratio_trl_over_ours": round(statistics.median(cpu_ratios), 3)},
        "phases_s": {"ours": ours["phases_s"], "trl": theirs["phases_s"]},
        "sanity": {"ours": ours["sanity"], "trl": theirs["sanity"]},
        "config": s,
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": transformers.__version__, "trl": trl.__version__},
    }
    print(json.dumps(out, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=5, help="first steps of each run left out of the timing")
    p.add_argument("--rounds", type=int, default=3, help="ours/trl run pairs, alternating which goes first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--recipe", default=str(RECIPE), help="llmrl recipe both sides take their settings from")
    p.add_argument("--model", default=None, help="model folder both sides start from (default: the tiny recipe's warm start)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both sides (default: the recipe's trainer.num_threads, else torch's default)")
    p.add_argument("--skip-zero-variance", action="store_true",
                   help="let llmrl drop zero-variance groups (its default); off = both train on all sequences")
    p.add_argument("--trl-gradient-checkpointing", action="store_true",
                   help="keep TRL's default gradient checkpointing (recomputes the forward in backward); off = same work")
    p.add_argument("--profile", action="store_true",
                   help="instead of the s/step runs: time each phase of both trainers on one rollout batch, in one process")
    p.add_argument("--profile-reps", type=int, default=10, help="repetitions per phase for --profile")
    p.add_argument("--which", choices=["ours", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--work-dir", help=argparse.SUPPRESS)
    p.add_argument("--json-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.which:
        child(args)
    elif args.profile:
        args.model = resolve_model(args)
        profile(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
