"""The one RL trainer: setup, the loop over steps, evaluation, checkpoints and resume.

GRPO, Dr. GRPO, RLOO, REINFORCE, GSPO and THR variants are recipe settings of this loop, not
copies of it. One step's phases live in ``llmrl.trainer.step``; ``Run`` holds what setup built
(models, engine, rewards, data, the Updater), ``TrainState`` what changes as training goes
(step, counters, history) and is checkpointed."""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import random
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrl.config.load import dump_recipe
from llmrl.config.schema import RecipeConfig
from llmrl.algorithms.advantages import ESTIMATORS
from llmrl.rewards.runner import RewardFn, TrainerState, build_reward_fns
from llmrl.rollout.engine import RolloutEngine, build_engine
from llmrl.trainer import checkpoint as ckpt
from llmrl.trainer.evaluate import columns_for, format_prompts, greedy_eval  # noqa: F401 (public helpers)
from llmrl.trainer.distributed import (any_across_ranks, barrier, gather_objects, init_from_env, is_main,
                                       launcher_sharding, shard_rows, sum_dicts_across_ranks, world)
from llmrl.trainer.reporting import NullLogger, RunLogger, plot_curves, read_metrics
from llmrl.trainer.step import Collected, DegenerateSignal, TrainingDiverged, rl_step  # noqa: F401 (raised by train)
from llmrl.trainer.token_weighting import TokenWeighting
from llmrl.trainer.updater import ParamSet, Updater, build_optimizer, build_scheduler

log = logging.getLogger("llmrl")

# Recipe settings a resumed run may change (the rest would make the resumed run a different
# experiment than the checkpoint's and are refused).
RESUMABLE_CHANGES = {"trainer.steps", "trainer.eval_every", "trainer.checkpoint_every", "trainer.keep_checkpoints",
                     "trainer.output_dir", "trainer.device", "trainer.num_threads", "trainer.degenerate_patience",
                     "trainer.push_to_hub", "model.gradient_checkpointing",  # these two change no number
                     # where the vLLM sampler runs and how it is reached (the weights are pushed at resume)
                     "rollout.vllm.server_url", "rollout.vllm.server_timeout_s", "rollout.vllm.weights_dir",
                     "rollout.vllm.sleep_mode"}


@dataclass
class PromptSampler:
    """Shuffled passes over the training prompts; (epoch, position) is the resumable cursor."""

    size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(self.size, generator=g).tolist()

    def next(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            order = self._order()
            take = order[self.position:self.position + (k - len(out))]
            out += take
            self.position += len(take)
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


@dataclass
class Run:
    """What ``setup`` built; nothing in here changes from step to step except parameters."""

    cfg: RecipeConfig
    output_dir: Path
    device: torch.device
    policy: torch.nn.Module
    ref: torch.nn.Module | None
    tokenizer: Any
    updater: Updater
    engine: RolloutEngine
    reward_fns: list[RewardFn]
    train_data: Any
    eval_data: Any
    weighting: TokenWeighting
    logger: RunLogger
    has_dropout: bool = False           # any active dropout layer in the policy (fixed after setup)
    critic: torch.nn.Module | None = None   # the value model of algorithm.advantage: gae


@dataclass
class TrainState:
    """What training changes and a checkpoint restores."""

    sampler: PromptSampler                                   # which prompts come next
    step: int = 0
    degenerate_steps: int = 0
    history: dict[str, Any] = field(default_factory=dict)
    resumed_from: list[int] = field(default_factory=list)   # steps this run was resumed at, in order
    pending: Collected | None = None    # rollout.max_staleness 1: the next step's batch, generated ahead

    def to_dict(self) -> dict[str, Any]:
        return {"degenerate_steps": self.degenerate_steps, "history": json.dumps(self.history),
                "resumed_from": list(self.resumed_from)}

    @classmethod
    def from_dict(cls, sampler: PromptSampler, step: int, d: dict[str, Any]) -> "TrainState":
        return cls(sampler=sampler, step=step, degenerate_steps=d["degenerate_steps"], history=json.loads(d["history"]),
                   resumed_from=list(d["resumed_from"]))


def pick_device(name: str) -> torch.device:
    if name == "auto":  # several processes: init_from_env made GPU LOCAL_RANK the current one
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"trainer.device: {name!r} but CUDA is not available here; use 'cpu' or 'auto'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warm_started_model(cfg: RecipeConfig, *, progress: bool) -> str:
    """Path of the warm-started model for this recipe, trained once and cached by content hash.

    The early stop measures held-out accuracy with the trainer's own ``greedy_eval`` (same
    engine, prompts, reward and success rule as ``eval/accuracy``)."""
    ws = cfg.model.warm_start
    if ws is None:
        return cfg.model.name_or_path
    from llmrl.data.registry import build_dataset
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.models.warm_start import warm_start
    from llmrl.paths import cache_dir

    seed = cfg.trainer.seed if ws.seed is None else ws.seed
    warm = ws.model_dump(exclude={"split"} if ws.split == "train" else None)   # default split: the old cache keys
    key = json.dumps({"model": cfg.model.name_or_path, "data": cfg.data.model_dump(), "warm": warm,
                      "seed": seed, "eval": [cfg.trainer.eval_success_threshold, [r.model_dump() for r in cfg.rewards],
                                             cfg.rollout.max_completion_length, cfg.rollout.stop], "v": 2},
                     sort_keys=True)
    path = cache_dir() / "warm_start" / hashlib.sha256(key.encode()).hexdigest()[:16]
    path.parent.mkdir(parents=True, exist_ok=True)
    # One process trains, concurrent runs of the same recipe and seed wait and reuse its result.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "config.json").exists():
            return str(path)
        seed_everything(seed)
        model, tok = load_model_and_tokenizer(cfg.model.name_or_path, dtype=cfg.model.dtype)
        # Warm start on its own draw of its split (model.warm_start.split); held-out accuracy from the test split.
        train = build_dataset(cfg.data.name, ws.split, n=ws.num_examples, seed=seed + 1, args=cfg.data.args)
        heldout = build_dataset(cfg.data.name, "test", n=ws.eval_size, seed=seed, args=cfg.data.args)
        engine = make_engine(cfg, model, tok)
        reward_fns = build_reward_fns(cfg.rewards)

        def accuracy() -> float:
            engine.sync_weights(model)
            return greedy_eval(engine, tok, cfg, heldout, reward_fns)["eval/accuracy"]

        stats = warm_start(model, tok, train, heldout, lr=ws.lr, batch_size=ws.batch_size, max_steps=ws.max_steps,
                           target_accuracy=ws.target_accuracy, eval_every=ws.eval_every, seed=seed,
                           max_new_tokens=cfg.rollout.max_completion_length, progress=progress, evaluate=accuracy)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "warm_start.json").write_text(json.dumps(stats, indent=2, default=str))
        tmp.replace(path)  # atomic: a killed run never leaves a half-written model under the final name
    return str(path)


def make_engine(cfg: RecipeConfig, model, tokenizer) -> RolloutEngine:
    engine = build_engine(cfg.rollout.engine, model, tokenizer, max_prompt_length=cfg.rollout.max_prompt_length,
                          generation_batch_size=cfg.rollout.generation_batch_size,
                          add_special_tokens=not cfg.data.use_chat_template,
                          vllm={**cfg.rollout.vllm.model_dump(), "max_completion_length": cfg.rollout.max_completion_length}
                          if cfg.rollout.engine == "vllm" else None)
    if cfg.agent is not None:   # multi-turn tools: the agent loop over the engine (same Protocol)
        from llmrl.research.build import build_agent_engine

        engine = build_agent_engine(engine, tokenizer, cfg.agent)
    return engine


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def resume_conflicts(saved: dict[str, Any], new: RecipeConfig) -> list[str]:
    """Recipe keys that differ from the checkpoint's and cannot change mid-run. A key the
    checkpoint's recipe lacks (added to the schema after it was written) counts as its default,
    so an upgrade alone does not make a checkpoint unresumable."""
    old, cur = _flat(saved), _flat(new.model_dump(mode="json"))
    defaults = _flat(type(new)().model_dump(mode="json"))
    return [f"{k}: checkpoint has {old.get(k)!r}, recipe has {cur.get(k)!r}"
            for k in sorted(old.keys() | cur.keys())
            if old.get(k, defaults.get(k)) != cur.get(k) and k not in RESUMABLE_CHANGES and not k.startswith("logging.")]


def setup(cfg: RecipeConfig, *, resume: bool = False) -> tuple[Run, TrainState]:
    """Build model(s), Updater, engine, rewards, data and logging; restore a checkpoint if asked."""
    from llmrl.data.registry import build_dataset
    from llmrl.models.load import load_model_and_tokenizer

    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    rank, n_procs = init_from_env()  # torchrun / accelerate launch: join the other ranks
    if n_procs > 1:
        check_multi_process(cfg, n_procs)
    output_dir = Path(cfg.trainer.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"trainer.output_dir: {output_dir} is a file; choose a folder")
    device = pick_device(cfg.trainer.device)
    found = ckpt.load_latest(output_dir) if resume else None
    if resume and found is None:
        log.warning("--resume: no checkpoint in %s; starting from step 0", output_dir / "checkpoints")
    if not resume and ckpt.list_checkpoints(output_dir):
        raise ValueError(
            f"trainer.output_dir: {output_dir} already holds checkpoints of an earlier run. "
            "Pass --resume to continue it, or choose another output_dir."
        )
    if found is not None:
        conflicts = resume_conflicts(json.loads(found[2]["recipe"]), cfg)
        if conflicts:
            raise ValueError("--resume: these settings differ from the checkpoint's and cannot change mid-run "
                             "(start a new run in another output_dir instead):\n  - " + "\n  - ".join(conflicts))
        if found[2]["step"] > cfg.trainer.steps:
            raise ValueError(f"--resume: the newest checkpoint in {output_dir} is at step {found[2]['step']}, beyond "
                             f"trainer.steps={cfg.trainer.steps}; set trainer.steps >= {found[2]['step']}")
        if found[2]["step"] >= cfg.trainer.steps and (output_dir / "final").exists():
            raise ValueError(f"--resume: the run in {output_dir} already finished at step {found[2]['step']}; "
                             "raise trainer.steps to train further")
    model_path = warm_started_model(cfg, progress=cfg.logging.progress)
    seed_everything(cfg.trainer.seed)
    lora = cfg.model.lora
    policy, tokenizer = load_model_and_tokenizer(
        model_path, dtype=cfg.model.dtype, device=str(device), trust_remote_code=cfg.model.trust_remote_code,
        lora_r=lora.r if lora else None, lora_alpha=lora.alpha if lora else 16,
        lora_dropout=lora.dropout if lora else 0.0, lora_target_modules=lora.target_modules if lora else None,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    ref = None  # with LoRA the reference is the base model with adapters off: no second copy
    if (cfg.algorithm.kl_coef > 0 or cfg.algorithm.kl_reward_coef > 0) and lora is None:
        ref, _ = load_model_and_tokenizer(model_path, dtype=cfg.model.dtype, device=str(device),
                                          trust_remote_code=cfg.model.trust_remote_code)
        ref.eval().requires_grad_(False)
    tr = cfg.trainer
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = build_optimizer(tr.optimizer, params, lr=tr.lr, weight_decay=tr.weight_decay, args=tr.optimizer_args)
    updater = Updater(
        policy=ParamSet(params, optimizer, build_scheduler(tr.lr_scheduler, optimizer, warmup_steps=tr.warmup_steps,
                                                           total_steps=tr.steps), tr.max_grad_norm),
        micro_batch_size=tr.micro_batch_size,
    )
    critic = build_critic(cfg, model_path, device, updater, policy) if cfg.critic is not None else None
    engine = make_engine(cfg, policy, tokenizer)
    reward_fns = build_reward_fns(cfg.rewards)
    train_data = build_dataset(cfg.data.name, "train", n=cfg.data.train_size, seed=tr.seed, args=cfg.data.args)
    eval_data = build_dataset(cfg.data.name, "test", n=cfg.data.eval_size, seed=tr.seed, args=cfg.data.args)
    if len(train_data) == 0:
        raise ValueError(f"data: {cfg.data.name} produced no training rows (check data.args and the data files)")
    if cfg.data.prompt_column not in train_data.column_names:
        raise ValueError(f"data.prompt_column: {cfg.data.prompt_column!r} is not a column of {cfg.data.name} "
                         f"(columns: {train_data.column_names})")
    sampler = PromptSampler(len(train_data), tr.seed)

    run = Run(cfg=cfg, output_dir=output_dir, device=device, policy=policy, ref=ref, tokenizer=tokenizer,
              updater=updater, engine=engine, reward_fns=reward_fns, train_data=train_data, eval_data=eval_data,
              weighting=TokenWeighting(cfg.algorithm.token_weighting, total_steps=tr.steps, tokenizer=tokenizer,
                                        inspect_path=output_dir / "thr_samples.jsonl"),
              logger=None,  # type: ignore[arg-type]
              has_dropout=any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in policy.modules()), critic=critic)
    state = TrainState(sampler=sampler)
    if found is not None:
        path, weights, saved = found
        ckpt.load_trainable(policy, weights)
        updater.load_state_dict(saved["updater"])
        if critic is not None:
            if "critic_weights" not in saved:
                raise ValueError(f"--resume: {path} holds no critic weights (critic.safetensors)")
            ckpt.load_trainable(critic, saved["critic_weights"])
        sampler.epoch, sampler.position = saved["sampler"]["epoch"], saved["sampler"]["position"]
        state = TrainState.from_dict(sampler, saved["step"], saved["train_state"])
        state.resumed_from.append(saved["step"])
        if saved.get("pending") is not None:   # generated ahead with the weights before the checkpoint's update
            state.pending = Collected.from_state(saved["pending"])
        per_rank = saved.get("rng_ranks")
        if n_procs > 1 and (per_rank is None or len(per_rank) != n_procs):
            log.warning("--resume: the checkpoint was written by %s processes, this run has %d: random streams "
                        "restart from rank 0's", len(per_rank) if per_rank else 1, n_procs)
        ckpt.set_rng_state(per_rank[rank] if per_rank and len(per_rank) == n_procs else saved["rng"])
        engine.sync_weights(policy)  # an engine with its own copy of the weights must sample from the restored ones
        log.warning("resumed from %s (step %d)", path, state.step)
    # Written only once everything above worked: a run that fails to start leaves no folder behind
    # (a new run) or the checkpoint's recipe.yaml untouched (a refused or failed resume).
    # Several processes: only rank 0 writes files (the others log nothing and save nothing).
    if is_main():
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "recipe.yaml").write_text(dump_recipe(cfg))
        run.logger = RunLogger(output_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                               wandb_project=cfg.logging.wandb_project, config=cfg.model_dump(mode="json"),
                               resume_step=state.step if found is not None else None)
    else:
        run.logger = NullLogger()  # type: ignore[assignment]
        run.weighting.inspect_path = None
    barrier()
    return run, state


def check_multi_process(cfg: RecipeConfig, n_procs: int) -> None:
    """What several processes need from the recipe: whole groups per rank, and an estimator
    that needs no statistics of the whole batch (those see only one rank's share). Parameter
    sharding (accelerate's FSDP / DeepSpeed configs) is refused: the Updater holds full
    replicas and sums full gradients itself (DDP semantics), docs/scaling.md says what is missing."""
    sharding = launcher_sharding()
    if sharding is not None:
        raise ValueError(f"accelerate launch asked for {sharding} (its config's distributed_type), which llmrl's "
                         "trainer does not wire in yet: it trains full replicas with summed gradients. Launch with "
                         "recipes/accelerate/ddp.yaml (or torchrun) instead; see docs/scaling.md")
    if cfg.rollout.max_staleness:
        raise ValueError(f"rollout.max_staleness: 1 runs in one process only for now (each of the {n_procs} ranks "
                         "would checkpoint its own batch generated ahead); set rollout.max_staleness: 0 or run one process")
    if cfg.rollout.engine == "vllm" and cfg.rollout.vllm.server_url is not None:
        raise ValueError(f"rollout.vllm.server_url: one server for {n_procs} processes would take every rank's weight "
                         "push while the others sample; remove server_url (each rank then starts its own server) or "
                         "run one process")
    if cfg.trainer.prompts_per_step % n_procs:
        raise ValueError(f"trainer.prompts_per_step: {cfg.trainer.prompts_per_step} is not divisible by the "
                         f"{n_procs} processes; every rank trains whole prompt groups")
    if not ESTIMATORS[cfg.algorithm.advantage].needs_groups:
        allowed = sorted(k for k, e in ESTIMATORS.items() if e.needs_groups)
        raise ValueError(f"algorithm.advantage: {cfg.algorithm.advantage!r} uses statistics of the whole batch, "
                         f"which a rank does not hold with {n_procs} processes; use one of {allowed}, or one process")


def build_critic(cfg: RecipeConfig, model_path: str, device: torch.device, updater: Updater,
                 policy: torch.nn.Module) -> torch.nn.Module:
    """The value model (``llmrl.trainer.critic``), trained by the Updater's second parameter set
    with its own optimizer and constant learning rate ``critic.lr``: a separate model, or with
    ``critic.share_base`` a second adapter + value head on ``policy``'s base."""
    from llmrl.trainer.critic import SharedBaseCritic, load_critic

    c, tr = cfg.critic, cfg.trainer
    if c.share_base:
        critic = SharedBaseCritic(policy, cfg.model.lora)
    else:
        critic = load_critic(c.model or model_path, dtype=cfg.model.dtype, device=str(device),
                             trust_remote_code=cfg.model.trust_remote_code, lora=cfg.model.lora)
    params = [p for p in critic.parameters() if p.requires_grad]
    updater.critic = ParamSet(params, build_optimizer(tr.optimizer, params, lr=c.lr, weight_decay=tr.weight_decay,
                                                      args=tr.optimizer_args), None, c.max_grad_norm)
    return critic


def pretrain_critic(run: Run, state: TrainState, steps: int) -> dict[str, float]:
    """VC-PPO's value pretraining: ``steps`` critic-only updates on rollouts of the frozen initial
    policy, so the first PPO advantages come from a critic that already predicts returns.
    Returns the first and last explained variance (kept in the run's history)."""
    from llmrl.progress import progress as progress_bar

    evs = []
    for _ in progress_bar(range(steps), desc="critic pretraining", enabled=run.cfg.logging.progress):
        m = rl_step(run, state, 0, pretrain=True)
        evs.append(m.get("critic/explained_variance", float("nan")))
    log.info("critic pretraining: %d steps, explained variance %.3f -> %.3f", steps, evs[0], evs[-1])
    return {"steps": steps, "explained_variance_first": evs[0], "explained_variance_last": evs[-1]}


def save(run: Run, state: TrainState, step: int) -> Path:
    """Checkpoint ``step``. Several processes: every rank calls it; rank 0 writes the (identical)
    weights and optimizer state, with every rank's random streams, so a resume is exact."""
    payload = {"updater": run.updater.state_dict(), "sampler": state.sampler.state(), "train_state": state.to_dict(),
               "recipe": json.dumps(run.cfg.model_dump(mode="json")),
               "pending": state.pending.to_state() if state.pending is not None else None}
    rngs = gather_objects(ckpt.rng_state())
    if len(rngs) > 1:
        payload["rng_ranks"] = rngs
    path = ckpt.checkpoint_dir(run.output_dir) / f"step_{step:07d}"
    if is_main():
        path = ckpt.save_checkpoint(run.output_dir, step, run.policy, payload, keep=run.cfg.trainer.keep_checkpoints,
                                    critic=run.critic)
    barrier()
    return path


def evaluate(run: Run, step: int = 0) -> dict[str, float]:
    """Held-out greedy evaluation (``llmrl.trainer.evaluate.greedy_eval``) of the current policy.

    Several processes: each rank evaluates its own contiguous share of the held-out prompts
    (every prompt once over all ranks, not once per rank) and the shares' sums are added up, so
    every rank gets the figures of one process evaluating them all."""
    share = run.eval_data if world()[1] == 1 else run.eval_data.select(shard_rows(len(run.eval_data)))
    m = greedy_eval(run.engine, run.tokenizer, run.cfg, share, run.reward_fns,
                    trainer_state=TrainerState(global_step=step, max_steps=run.cfg.trainer.steps))
    if world()[1] == 1:
        return m
    sums = sum_dicts_across_ranks({"n": float(len(share)), **{k: v * len(share) for k, v in m.items()}})
    n = sums.pop("n")
    return {k: v / n for k, v in sums.items()} if n else {}


class _Interrupted(Exception):
    pass


def train(cfg: RecipeConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run a recipe to the end; returns the summary (also saved as summary.json; the CLI prints it).

    SIGINT / SIGTERM stop after the current step with a checkpoint of it, and say how to resume."""
    from llmrl.progress import progress as progress_bar

    run, state = setup(cfg, resume=resume)
    steps, t0, start = cfg.trainer.steps, time.perf_counter(), state.step
    if "eval_before" not in state.history:
        before = evaluate(run, 0)
        state.history["eval_before"] = before
        if before:  # data.eval_size: 0 evaluates nothing: no eval row, no eval keys in the summary
            run.logger.metrics(0, before)
        log.info("held-out before RL: %s", before)
    if cfg.critic is not None and cfg.critic.pretrain_steps and state.step == 0:
        state.history["critic_pretrain"] = pretrain_critic(run, state, cfg.critic.pretrain_steps)
    bar = progress_bar(total=steps, initial=start, desc="RL", enabled=cfg.logging.progress)
    last_eval: dict[str, float] = {}
    stop_signal: list[int] = []
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in handlers:
        signal.signal(s, lambda signum, frame: stop_signal.append(signum))
    try:
        for step in range(start + 1, steps + 1):
            m = rl_step(run, state, step)
            state.step = step
            if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0 and step < steps:
                last_eval = evaluate(run, step)
                m.update(last_eval)
            run.logger.metrics(step, m)
            bar.update(1)
            bar.set_postfix({"reward": f"{m['reward/mean']:.3f}",
                             **({"acc": f"{last_eval['eval/accuracy']:.3f}"} if last_eval else {})})
            if any_across_ranks(bool(stop_signal)) and step < steps:  # all ranks stop at the same step
                path = save(run, state, step)
                raise _Interrupted(f"stopped by signal {stop_signal[0]} after step {step}; checkpoint {path}. "
                                   f"Resume with: llmrl train RECIPE --resume")
            if cfg.trainer.checkpoint_every and step % cfg.trainer.checkpoint_every == 0 and step < steps:
                save(run, state, step)
    except TrainingDiverged as exc:
        good = ckpt.list_checkpoints(run.output_dir)
        raise TrainingDiverged(
            f"{exc}. Training stopped; nothing from this step was saved. Last good checkpoint: "
            f"{good[-1] if good else 'none'}. Lower trainer.lr or set trainer.max_grad_norm."
        ) from None
    except _Interrupted as exc:
        run.logger.close()
        raise KeyboardInterrupt(str(exc)) from None
    finally:
        bar.close()
        for s, h in handlers.items():
            signal.signal(s, h)
    after = evaluate(run, steps)
    run.logger.metrics(steps, {**after, "final": 1})
    save(run, state, steps)
    if not is_main():
        return {"steps": steps, "rank": world()[0], "output_dir": str(run.output_dir)}
    from llmrl.models.load import save_final

    final_dir = save_final(run.policy, run.tokenizer, run.output_dir / "final")  # LoRA: names its base as given
    run.logger.close()
    if cfg.logging.plot:
        plot_curves(run.output_dir / "metrics.jsonl", run.output_dir / "curves.png", title=f"{cfg.data.name}: {cfg.algorithm.advantage}")
    rows = read_metrics(run.output_dir / "metrics.jsonl")
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    before = state.history["eval_before"]
    summary = {
        "steps": steps,
        # absent, never nan, when there is no held-out data (data.eval_size: 0)
        **({"eval/accuracy_before": before["eval/accuracy"]} if "eval/accuracy" in before else {}),
        **({"eval/accuracy_after": after["eval/accuracy"]} if "eval/accuracy" in after else {}),
        "reward/mean_first10": float(np.mean(rewards[:10])) if rewards else float("nan"),
        "reward/mean_last10": float(np.mean(rewards[-10:])) if rewards else float("nan"),
        "resumed_from": state.resumed_from,
        "steps_this_session": steps - start,
        "wall_s_this_session": round(time.perf_counter() - t0, 1),
        "output_dir": str(run.output_dir),
    }
    (run.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if cfg.trainer.push_to_hub:  # last: a failed push leaves the finished run (final/, summary.json) as it is
        from llmrl.trainer.hub import push_final

        summary["pushed_to"] = push_final(final_dir, cfg.trainer.push_to_hub,
                                          commit_message=f"llmrl: {cfg.data.name} {cfg.algorithm.advantage}, "
                                                         f"{steps} steps")
        (run.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
