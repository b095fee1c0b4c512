"""The one RL trainer. GRPO, Dr. GRPO, RLOO, GSPO and THR variants are recipe settings of this
loop, not copies of it. One step reads like the algorithm (DESIGN.md, "One RL step"):

    rollouts = engine.generate(prompts)                 # G per prompt, token owners + masks
    rewards  = score(rollouts, columns, reward_fns)     # [B*G], failures are outcomes
    adv      = compute_advantages(rewards)              # [B*G]
    old      = old_policy_forward(policy, rollouts)     # [N, C] logps (+ THR from its hidden states)
    adv_tok  = token_weighting(adv, old)                # [N, C]: THR, or broadcast
    stats    = update(policy, optimizer, rollouts, old, adv_tok)
    engine.sync_weights(policy)
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import random
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from llmrl.algorithms.advantages import compute_advantages, zero_variance_groups
from llmrl.algorithms.losses import policy_loss
from llmrl.config.load import dump_recipe
from llmrl.config.schema import RecipeConfig
from llmrl.rewards.runner import RewardFn, build_reward_fns, score
from llmrl.rollout.engine import RolloutEngine, build_engine
from llmrl.rollout.types import RolloutBatch, SamplingParams
from llmrl.trainer import checkpoint as ckpt
from llmrl.trainer.forward import ForwardOut, forward_completions
from llmrl.trainer.reporting import RunLogger, plot_curves, read_metrics
from llmrl.trainer.token_weighting import TokenWeighting

log = logging.getLogger("llmrl")


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/inf; the run stopped with its last good checkpoint kept."""


class DegenerateSignal(RuntimeError):
    """The reward carried no learning signal for too long (every group had equal rewards)."""


# ----------------------------------------------------------------------------------- plumbing
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
class Timers:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


@dataclass
class Run:
    """Everything a step needs, built once by ``setup``."""

    cfg: RecipeConfig
    output_dir: Path
    device: torch.device
    policy: torch.nn.Module
    ref: torch.nn.Module | None
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    engine: RolloutEngine
    reward_fns: list[RewardFn]
    train_data: Any
    eval_data: Any
    sampler: PromptSampler
    weighting: TokenWeighting
    logger: RunLogger
    has_dropout: bool = False           # any active dropout layer in the policy (fixed after setup)
    start_step: int = 0
    degenerate_steps: int = 0
    history: dict[str, Any] = field(default_factory=dict)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def format_prompts(cfg: RecipeConfig, tokenizer, raw: list[str]) -> list[str]:
    if not cfg.data.use_chat_template:
        return raw
    out = []
    for text in raw:
        messages = ([{"role": "system", "content": cfg.data.system_prompt}] if cfg.data.system_prompt else [])
        messages.append({"role": "user", "content": text})
        out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return out


def columns_for(dataset, indices: list[int], prompt_column: str, repeat: int) -> dict[str, list]:
    """Dataset columns for the chosen rows, each repeated G times (one per completion)."""
    rows = dataset.select(indices)
    return {c: [v for v in rows[c] for _ in range(repeat)] for c in rows.column_names if c != prompt_column}


def warm_started_model(cfg: RecipeConfig, *, progress: bool) -> str:
    """Path of the warm-started model for this recipe, trained once and cached by content hash."""
    ws = cfg.model.warm_start
    if ws is None:
        return cfg.model.name_or_path
    from llmrl.data.registry import build_dataset
    from llmrl.models.load import load_model_and_tokenizer
    from llmrl.models.warm_start import warm_start
    from llmrl.paths import cache_dir

    seed = cfg.trainer.seed if ws.seed is None else ws.seed
    key = json.dumps({"model": cfg.model.name_or_path, "data": cfg.data.model_dump(), "warm": ws.model_dump(),
                      "seed": seed, "v": 1}, sort_keys=True)
    path = cache_dir() / "warm_start" / hashlib.sha256(key.encode()).hexdigest()[:16]
    path.parent.mkdir(parents=True, exist_ok=True)
    # One process trains, concurrent runs of the same recipe and seed wait and reuse its result.
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / "config.json").exists():
            return str(path)
        seed_everything(seed)
        model, tok = load_model_and_tokenizer(cfg.model.name_or_path, dtype=cfg.model.dtype)
        # Warm start on its own draw of the train split; held-out accuracy from the test split.
        train = build_dataset(cfg.data.name, "train", n=ws.num_examples, seed=seed + 1, args=cfg.data.args)
        heldout = build_dataset(cfg.data.name, "test", n=ws.eval_size, seed=seed, args=cfg.data.args)
        stats = warm_start(model, tok, train, heldout, lr=ws.lr, batch_size=ws.batch_size, max_steps=ws.max_steps,
                           target_accuracy=ws.target_accuracy, eval_every=ws.eval_every, seed=seed,
                           max_new_tokens=cfg.rollout.max_completion_length, progress=progress)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "warm_start.json").write_text(json.dumps(stats, indent=2, default=str))
        tmp.replace(path)  # atomic: a killed run never leaves a half-written model under the final name
    return str(path)


def build_scheduler(cfg: RecipeConfig, optimizer: torch.optim.Optimizer):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[cfg.trainer.lr_scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=cfg.trainer.warmup_steps, num_training_steps=cfg.trainer.steps)


def setup(cfg: RecipeConfig, *, resume: bool = False) -> Run:
    """Build model(s), optimizer, engine, rewards, data and logging; restore a checkpoint if asked."""
    from llmrl.data.registry import build_dataset
    from llmrl.models.load import load_model_and_tokenizer

    if cfg.trainer.num_threads:
        torch.set_num_threads(cfg.trainer.num_threads)
    output_dir = Path(cfg.trainer.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = ckpt.load_latest(output_dir) if resume else None
    if resume and state is None:
        log.warning("--resume: no checkpoint in %s; starting from step 0", output_dir / "checkpoints")
    if not resume and ckpt.list_checkpoints(output_dir):
        raise ValueError(
            f"trainer.output_dir: {output_dir} already holds checkpoints of an earlier run. "
            "Pass --resume to continue it, or choose another output_dir."
        )
    (output_dir / "recipe.yaml").write_text(dump_recipe(cfg))
    device = pick_device(cfg.trainer.device)

    model_path = warm_started_model(cfg, progress=cfg.logging.progress)
    seed_everything(cfg.trainer.seed)
    lora = cfg.model.lora
    policy, tokenizer = load_model_and_tokenizer(
        model_path, dtype=cfg.model.dtype, device=str(device), trust_remote_code=cfg.model.trust_remote_code,
        lora_r=lora.r if lora else None, lora_alpha=lora.alpha if lora else 16,
        lora_dropout=lora.dropout if lora else 0.0, lora_target_modules=lora.target_modules if lora else None,
    )
    ref = None  # with LoRA the reference is the base model with adapters off: no second copy
    if cfg.algorithm.kl_coef > 0 and lora is None:
        ref, _ = load_model_and_tokenizer(model_path, dtype=cfg.model.dtype, device=str(device),
                                          trust_remote_code=cfg.model.trust_remote_code)
        ref.eval().requires_grad_(False)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.trainer.lr, weight_decay=cfg.trainer.weight_decay)
    scheduler = build_scheduler(cfg, optimizer)
    engine = build_engine(cfg.rollout.engine, policy, tokenizer, max_prompt_length=cfg.rollout.max_prompt_length,
                          generation_batch_size=cfg.rollout.generation_batch_size,
                          add_special_tokens=not cfg.data.use_chat_template)
    reward_fns = build_reward_fns(cfg.rewards)
    train_data = build_dataset(cfg.data.name, "train", n=cfg.data.train_size, seed=cfg.trainer.seed, args=cfg.data.args)
    eval_data = build_dataset(cfg.data.name, "test", n=cfg.data.eval_size, seed=cfg.trainer.seed, args=cfg.data.args)
    if cfg.data.prompt_column not in train_data.column_names:
        raise ValueError(f"data.prompt_column: {cfg.data.prompt_column!r} is not a column of {cfg.data.name} "
                         f"(columns: {train_data.column_names})")
    sampler = PromptSampler(len(train_data), cfg.trainer.seed)

    run = Run(cfg=cfg, output_dir=output_dir, device=device, policy=policy, ref=ref, tokenizer=tokenizer,
              optimizer=optimizer, scheduler=scheduler, engine=engine, reward_fns=reward_fns,
              train_data=train_data, eval_data=eval_data, sampler=sampler,
              weighting=TokenWeighting(cfg.algorithm.token_weighting, total_steps=cfg.trainer.steps, tokenizer=tokenizer,
                                        inspect_path=output_dir / "thr_samples.jsonl"),
              logger=None,  # type: ignore[arg-type]
              has_dropout=any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in policy.modules()))
    if state is not None:
        policy.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.epoch, sampler.position = state["sampler"]["epoch"], state["sampler"]["position"]
        run.start_step, run.degenerate_steps, run.history = state["step"], state["degenerate_steps"], state["history"]
        ckpt.set_rng_state(state["rng"])
        log.info("resumed from step %d", run.start_step)
    run.logger = RunLogger(output_dir, tensorboard=cfg.logging.tensorboard, wandb=cfg.logging.wandb,
                           wandb_project=cfg.logging.wandb_project, config=cfg.model_dump(mode="json"),
                           resume_step=run.start_step if state is not None else None)
    return run


def save(run: Run, step: int) -> Path:
    payload = {"model": run.policy.state_dict(), "optimizer": run.optimizer.state_dict(),
               "scheduler": run.scheduler.state_dict(), "sampler": run.sampler.state(),
               "degenerate_steps": run.degenerate_steps, "history": run.history}
    return ckpt.save_checkpoint(run.output_dir, step, payload, keep=run.cfg.trainer.keep_checkpoints)


# ----------------------------------------------------------------------------------- the algorithm
@torch.no_grad()
def old_policy_forward(run: Run, batch: RolloutBatch) -> torch.Tensor:
    """[N, C] old log-probs, kept fixed across update epochs. When THR is on, its hidden states and
    probabilities are handed to the THR collector here: THR needs no forward pass of its own."""
    cfg, weighting = run.cfg, run.weighting
    was_training = run.policy.training
    run.policy.eval()
    N = len(batch)
    out = torch.empty(batch.completion_ids.shape, dtype=torch.float32)
    weighting.begin(batch)
    for rows in torch.arange(N).split(cfg.trainer.micro_batch_size):
        fwd = forward_completions(run.policy, batch, rows, temperature=cfg.rollout.temperature,
                                  want_hidden=weighting.needs_hidden, keep_logits=weighting.needs_hidden)
        out[rows] = fwd.logps.float().cpu()
        weighting.observe(rows, fwd)
    run.policy.train(was_training)
    return out


@torch.no_grad()
def reference_forward(run: Run, batch: RolloutBatch) -> torch.Tensor | None:
    """[N, C] reference log-probs for the KL term (None when kl_coef is 0)."""
    if run.cfg.algorithm.kl_coef == 0:
        return None
    out = torch.empty(batch.completion_ids.shape, dtype=torch.float32)
    for rows in torch.arange(len(batch)).split(run.cfg.trainer.micro_batch_size):
        if run.ref is not None:
            fwd = forward_completions(run.ref, batch, rows, temperature=run.cfg.rollout.temperature)
        else:  # LoRA: the reference is the base model with adapters switched off
            with run.policy.disable_adapter():
                fwd = forward_completions(run.policy, batch, rows, temperature=run.cfg.rollout.temperature)
        out[rows] = fwd.logps.float().cpu()
    return out


def update(run: Run, batch: RolloutBatch, old_logps: torch.Tensor | None, ref_logps: torch.Tensor | None,
           adv_tok: torch.Tensor | tuple[torch.Tensor, torch.Tensor], step: int) -> dict[str, float]:
    """``algorithm.epochs`` passes x ``num_minibatches`` optimizer steps, micro-batched; each micro-batch's
    loss is normalised by its whole minibatch so accumulation equals one big batch.

    ``old_logps`` None means on-policy: every micro-batch runs before the single optimizer step, so
    the current log-probs, detached, are exactly the old ones. ``adv_tok`` given as (response
    advantages [N], rewards [N]) means the same for THR: the batch is one micro-batch and THR is
    computed from this forward's detached hidden states, before its loss (no extra pass)."""
    cfg, alg = run.cfg, run.cfg.algorithm
    mask = batch.loss_mask.float()
    totals: dict[str, float] = {}
    weighting_stats: dict[str, float] = {}
    n_updates = 0
    run.policy.train()
    for _epoch in range(alg.epochs):
        perm = torch.randperm(len(batch))
        for mb in perm.chunk(alg.num_minibatches):
            run.optimizer.zero_grad(set_to_none=True)
            num_tokens = float(mask[mb].sum())
            for rows in mb.split(cfg.trainer.micro_batch_size):
                fused = isinstance(adv_tok, tuple)
                fwd = forward_completions(run.policy, batch, rows, temperature=cfg.rollout.temperature,
                                          want_hidden=fused, keep_logits=fused)
                if fused:  # THR from this forward (see docstring); the values are pi_old's
                    t0 = time.perf_counter()
                    run.weighting.begin(batch)
                    with torch.no_grad():
                        run.weighting.observe(rows, ForwardOut(fwd.logps.detach(), fwd.logits.detach(), fwd.hidden.detach()))
                    adv_tok, weighting_stats = run.weighting.apply(*adv_tok, batch, step)
                    weighting_stats["perf/token_weighting_s"] = time.perf_counter() - t0
                dev = fwd.logps.device
                old = fwd.logps.detach() if old_logps is None else old_logps[rows].to(dev)
                loss, st = policy_loss(
                    fwd.logps, old, adv_tok[rows].to(dev), mask[rows].to(dev),
                    kind=alg.policy_loss, clip_eps_low=alg.clip_eps_low, clip_eps_high=alg.clip_eps_high,
                    loss_agg=alg.loss_agg, kl_coef=alg.kl_coef,
                    ref_logps=ref_logps[rows].to(dev) if ref_logps is not None else None,
                    kl_estimator=alg.kl_estimator, num_seqs=len(mb), num_tokens=num_tokens,
                    max_len=cfg.rollout.max_completion_length,
                )
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"step {step}: the policy loss is {loss.item()}")
                loss.backward()
                share = len(rows) / len(mb)
                totals["loss/policy"] = totals.get("loss/policy", 0.0) + loss.item()
                for k, v in st.items():
                    totals[f"loss/{k}"] = totals.get(f"loss/{k}", 0.0) + v.item() * share
            params = [p for p in run.policy.parameters() if p.requires_grad]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.trainer.max_grad_norm or float("inf"))
            if not torch.isfinite(grad_norm):
                raise TrainingDiverged(f"step {step}: the gradient norm is {grad_norm.item()}")
            run.optimizer.step()
            totals["loss/grad_norm"] = totals.get("loss/grad_norm", 0.0) + grad_norm.item()
            n_updates += 1
    return {**{k: v / n_updates for k, v in totals.items()}, **weighting_stats}


def rl_step(run: Run, step: int) -> dict[str, Any]:
    """One RL step; returns its metrics."""
    cfg = run.cfg
    G = cfg.rollout.num_generations
    timers = Timers()
    t_step = time.perf_counter()
    indices = run.sampler.next(cfg.trainer.prompts_per_step)
    raw = run.train_data.select(indices)[cfg.data.prompt_column]
    prompts = format_prompts(cfg, run.tokenizer, raw)
    sampling = SamplingParams(temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                              max_new_tokens=cfg.rollout.max_completion_length)

    with timers("rollout"):
        try:
            batch = run.engine.generate(prompts, sampling, n=G)                    # N = B*G rows
        except RuntimeError as exc:  # torch.multinomial on NaN/inf probabilities: weights diverged
            if "inf" in str(exc) or "nan" in str(exc):
                raise TrainingDiverged(f"step {step}: sampling met NaN/inf probabilities ({exc})") from None
            raise
    with timers("reward"):
        columns = columns_for(run.train_data, indices, cfg.data.prompt_column, G)
        rewards = score([p for p in raw for _ in range(G)], batch.completions, columns, run.reward_fns)
    adv = compute_advantages(cfg.algorithm.advantage, rewards.total, G)             # [N]

    flat = zero_variance_groups(rewards.total, G)                                    # [B]
    m: dict[str, Any] = {
        "reward/mean": rewards.total.mean().item(),
        "reward/std": rewards.total.std().item(),
        "reward/zero_variance_frac": flat.float().mean().item(),
        "rollout/truncated_frac": batch.truncated.float().mean().item(),
        "rollout/completion_len": batch.loss_mask.sum(1).float().mean().item(),
    }
    for name, vals in rewards.per_reward.items():
        m[f"reward/{name}/mean"] = torch.nan_to_num(vals, nan=0.0).mean().item()
    for name, why in rewards.failures.items():
        m[f"reward/{name}/failed"] = 1
        log.warning("step %d: reward %s failed: %s", step, name, why)
    if m["rollout/truncated_frac"] > 0.9:
        log.warning("step %d: %.0f%% of completions hit rollout.max_completion_length=%d; raise it or "
                    "shorten the expected answers", step, 100 * m["rollout/truncated_frac"], cfg.rollout.max_completion_length)

    run.degenerate_steps = run.degenerate_steps + 1 if bool(flat.all()) else 0
    if run.degenerate_steps >= cfg.trainer.degenerate_patience:
        raise DegenerateSignal(
            f"for {run.degenerate_steps} consecutive steps every group had equal rewards (mean {m['reward/mean']:.3f}), "
            "so every advantage was 0 and nothing was learned. The task is too hard or too easy for the model, or a "
            "reward returns a constant/None: check samples.jsonl, warm-start the model, or change the reward."
        )

    keep_rows = torch.arange(len(batch))
    if cfg.algorithm.skip_zero_variance_groups:
        keep_rows = (~flat).repeat_interleave(G).nonzero().squeeze(1)
    train_batch = batch.select(keep_rows) if len(keep_rows) < len(batch) else batch
    if len(train_batch):
        # Fully on-policy (one optimizer step per rollout batch): pi_old == pi at the update, so the
        # old log-probs are the update's own, detached (as TRL does), and THR can read the update
        # forward's hidden states when the batch is one micro-batch. Otherwise the old-policy pass
        # runs and THR takes its hidden states from it. Either way THR adds no forward pass.
        alg, thr = cfg.algorithm, run.weighting.needs_hidden
        on_policy = alg.epochs == 1 and alg.num_minibatches == 1
        # (not with active dropout: the update forward runs in train mode, the old pass in eval mode)
        fused_thr = on_policy and thr and not run.has_dropout and len(train_batch) <= cfg.trainer.micro_batch_size
        with timers("old_forward"):
            needs_old = not on_policy or (thr and not fused_thr)
            old_logps = old_policy_forward(run, train_batch) if needs_old else None
        ref_logps = reference_forward(run, train_batch)
        response_adv = (adv[keep_rows], rewards.total[keep_rows])
        if fused_thr:
            adv_tok = response_adv  # weighted inside update(), from its own forward
        else:
            with timers("token_weighting"):
                adv_tok, tw_stats = run.weighting.apply(*response_adv, train_batch, step)
            m.update(tw_stats)
        with timers("update"):
            m.update(update(run, train_batch, old_logps, ref_logps, adv_tok, step))
    with warnings.catch_warnings():  # a step with no update (all groups flat) still advances the schedule
        warnings.filterwarnings("ignore", message="Detected call of")
        run.scheduler.step()
    run.engine.sync_weights(run.policy)

    dt = time.perf_counter() - t_step
    m.update({f"perf/{k}_s": v for k, v in timers.seconds.items()})
    m["perf/step_s"] = dt
    m["perf/tokens_per_s"] = float(batch.completion_mask.sum()) / max(dt, 1e-9)
    m["lr"] = run.scheduler.get_last_lr()[0]
    if cfg.logging.samples_per_step:
        k = cfg.logging.samples_per_step
        run.logger.samples(step, [
            {"prompt": batch.prompts[i], "completion": batch.completions[i], "reward": rewards.total[i].item(),
             "advantage": adv[i].item(), **({"details": rewards.details[i]} if rewards.details[i] else {})}
            for i in range(min(k, len(batch)))
        ])
    return m


@torch.no_grad()
def evaluate(run: Run, *, batch_size: int = 256) -> dict[str, float]:
    """Held-out greedy decoding; ``eval/accuracy`` is the share of prompts whose first reward
    (the task's verifier) is >= 1, ``eval/reward_mean`` the mean combined reward."""
    cfg, data = run.cfg, run.eval_data
    if len(data) == 0:
        return {}
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_completion_length, greedy=True)
    correct, total = 0, 0.0
    for start in range(0, len(data), batch_size):
        idx = list(range(start, min(start + batch_size, len(data))))
        raw = data.select(idx)[cfg.data.prompt_column]
        batch = run.engine.generate(format_prompts(cfg, run.tokenizer, raw), sampling, n=1)
        res = score(raw, batch.completions, columns_for(data, idx, cfg.data.prompt_column, 1), run.reward_fns)
        first = res.per_reward[run.reward_fns[0].name]
        correct += int((torch.nan_to_num(first, nan=0.0) >= 1.0).sum())
        total += float(res.total.sum())
    return {"eval/accuracy": correct / len(data), "eval/reward_mean": total / len(data)}


def train(cfg: RecipeConfig, *, resume: bool = False) -> dict[str, Any]:
    """Run a recipe to the end; returns the summary (also saved as summary.json; the CLI prints it)."""
    from tqdm.auto import tqdm

    run = setup(cfg, resume=resume)
    steps, t0 = cfg.trainer.steps, time.perf_counter()
    if "eval_before" not in run.history:
        before = evaluate(run)
        run.history["eval_before"] = before
        run.logger.metrics(0, before)
        log.info("held-out before RL: %s", before)
    bar = tqdm(total=steps, initial=run.start_step, desc="RL", disable=not cfg.logging.progress, dynamic_ncols=True)
    last_eval: dict[str, float] = {}
    step = run.start_step
    try:
        for step in range(run.start_step + 1, steps + 1):
            m = rl_step(run, step)
            if cfg.trainer.eval_every and step % cfg.trainer.eval_every == 0 and step < steps:
                last_eval = evaluate(run)
                m.update(last_eval)
            run.logger.metrics(step, m)
            bar.update(1)
            bar.set_postfix({"reward": f"{m['reward/mean']:.3f}",
                             **({"acc": f"{last_eval['eval/accuracy']:.3f}"} if last_eval else {})})
            if cfg.trainer.checkpoint_every and step % cfg.trainer.checkpoint_every == 0 and step < steps:
                save(run, step)
    except TrainingDiverged as exc:
        good = ckpt.list_checkpoints(run.output_dir)
        raise TrainingDiverged(
            f"{exc}. Training stopped; nothing from this step was saved. Last good checkpoint: "
            f"{good[-1] if good else 'none'}. Lower trainer.lr or set trainer.max_grad_norm."
        ) from None
    finally:
        bar.close()
    after = evaluate(run)
    run.logger.metrics(steps, {**after, "final": 1})
    save(run, steps)
    final_dir = run.output_dir / "final"
    run.policy.save_pretrained(final_dir)
    run.tokenizer.save_pretrained(final_dir)
    run.logger.close()
    if cfg.logging.plot:
        plot_curves(run.output_dir / "metrics.jsonl", run.output_dir / "curves.png", title=f"{cfg.data.name}: {cfg.algorithm.advantage}")
    rows = read_metrics(run.output_dir / "metrics.jsonl")
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    before = run.history["eval_before"]
    summary = {
        "steps": steps,
        "eval/accuracy_before": before.get("eval/accuracy", float("nan")),
        "eval/accuracy_after": after.get("eval/accuracy", float("nan")),
        "reward/mean_first10": float(np.mean(rewards[:10])) if rewards else float("nan"),
        "reward/mean_last10": float(np.mean(rewards[-10:])) if rewards else float("nan"),
        "wall_s_this_session": round(time.perf_counter() - t0, 1),
        "output_dir": str(run.output_dir),
    }
    (run.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
