"""One RL step, phase by phase, each a function on explicit data (DESIGN.md, "One RL step"):

    batch    = rollout(engine, prompt ids, sampling, G)            RolloutBatch, N = B*G rows
    rewards  = score(...)                                           [N] (failures are outcomes)
    rows     = rows_to_train(rewards, ...)                          drop flat groups (not with KL)
    fw       = Forwards(old_policy_forward, reference_forward)      [N, C] log-probs (+ THR inputs)
    adv      = estimate(estimator, rewards, mask, values, ref)      Advantages: tokens [N, C]
    tok_adv  = token_advantages(weighting, adv, ...)                [N, C]: THR, or broadcast
    stats    = update_policy(updater, batch, fw, tok_adv, ...)      optimizer steps
    engine.sync_weights(policy)
    metrics  = step_metrics(...)                                    after the math, never inside it

``collect_and_score`` does the first two; with ``rollout.max_staleness: 1`` it scores this step's
batch (generated during the previous step) on a thread while it generates the next step's.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterator

import torch

from llmrl.algorithms.advantages import (ESTIMATORS, Advantages, TokenParams, adaptive_kl_coef, estimate,
                                         zero_variance_groups)
from llmrl.algorithms.losses import explained_variance, policy_loss
from llmrl.algorithms.sampler_correction import correction_enabled, tis_weights
from llmrl.config.schema import AlgorithmConfig
from llmrl.rewards.runner import RewardResult, TrainerState, score
from llmrl.rollout.types import RolloutBatch, SamplingParams
from llmrl.trainer.distributed import any_across_ranks, gather_rows, merge_metrics, shard_groups, sum_across_ranks, world
from llmrl.trainer.critic import CriticUpdate, critic_loss, values_forward
from llmrl.trainer.evaluate import columns_for, format_prompts
from llmrl.trainer.forward import ForwardOut, forward_completions
from llmrl.trainer.token_weighting import TokenWeighting
from llmrl.trainer.updater import Updater, UpdateDiverged

if TYPE_CHECKING:
    from llmrl.trainer.loop import Run, TrainState

log = logging.getLogger("llmrl")


class TrainingDiverged(RuntimeError):
    """The loss or gradient became NaN/inf; the run stopped with its last good checkpoint kept."""


class DegenerateSignal(RuntimeError):
    """The reward carried no learning signal for too long (every advantage was 0)."""


@dataclass
class Timers:
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


# ----------------------------------------------------------------------------------- phases
def rollout(engine, contexts: list[list[int]], sampling: SamplingParams, n: int, step: int) -> RolloutBatch:
    try:
        return engine.generate_tokens(contexts, sampling, n=n)
    except RuntimeError as exc:  # torch.multinomial on NaN/inf probabilities: weights diverged
        if "inf" in str(exc) or "nan" in str(exc):
            raise TrainingDiverged(f"step {step}: sampling met NaN/inf probabilities ({exc})") from None
        raise


def no_signal_groups(rewards: torch.Tensor, group_size: int, advantage: str) -> torch.Tensor:
    """[B] True where the estimator sees no reward difference: flat groups for group
    estimators; for the others the whole batch is one 'group'."""
    return zero_variance_groups(rewards, group_size if ESTIMATORS[advantage].needs_groups else len(rewards))


def rows_to_train(flat: torch.Tensor, n_rows: int, group_size: int, alg: AlgorithmConfig) -> torch.Tensor:
    """Row indices the update sees. Flat groups have zero advantages and are dropped when the
    recipe asks, except with a KL term: its gradient does not need an advantage, and dropping
    them would silently remove their KL pull (TRL keeps them too). Token-level estimators keep
    every row: batch whitening gives flat groups non-zero advantages, and a critic learns from them.
    Several processes: each rank drops its own flat groups (a group never spans ranks), so the
    global batch keeps exactly the groups one process would; a rank left with no rows still
    joins every optimizer step with an empty share (``update_policy``)."""
    est = ESTIMATORS[alg.advantage]
    if not est.needs_groups or est.tokens is not None or not alg.skip_zero_variance_groups or alg.kl_coef > 0:
        return torch.arange(n_rows)
    return (~flat).repeat_interleave(group_size).nonzero().squeeze(1)


@dataclass
class Forwards:
    """Per-token log-probs the estimator and the loss need, all [N, C] on the CPU.

    old_logps None means on-policy: the update's own detached log-probs are the old ones."""

    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    values: torch.Tensor | None = None


@torch.no_grad()
def old_policy_forward(policy, batch: RolloutBatch, *, micro_batch_size: int, temperature: float,
                       weighting: TokenWeighting) -> torch.Tensor:
    """[N, C] old log-probs, fixed across update epochs. When THR is on, its hidden states and
    probabilities go to the THR collector here: THR needs no forward pass of its own."""
    was_training = policy.training
    policy.eval()
    out = torch.empty(batch.completion_ids.shape, dtype=torch.float32)
    weighting.begin(batch)
    for rows in torch.arange(len(batch)).split(micro_batch_size):
        fwd = forward_completions(policy, batch, rows, temperature=temperature,
                                  want_hidden=weighting.needs_hidden, keep_logits=weighting.needs_hidden)
        out[rows] = fwd.logps.float().cpu()
        weighting.observe(rows, fwd)
    policy.train(was_training)
    return out


@torch.no_grad()
def reference_forward(policy, ref, batch: RolloutBatch, *, micro_batch_size: int, temperature: float) -> torch.Tensor:
    """[N, C] reference log-probs for the KL term. ``ref`` None (LoRA): the reference is the
    base model with the adapters switched off, so no second copy is loaded."""
    out = torch.empty(batch.completion_ids.shape, dtype=torch.float32)
    for rows in torch.arange(len(batch)).split(micro_batch_size):
        if ref is not None:
            fwd = forward_completions(ref, batch, rows, temperature=temperature)
        else:
            with policy.disable_adapter():
                fwd = forward_completions(policy, batch, rows, temperature=temperature)
        out[rows] = fwd.logps.float().cpu()
    return out


class FixedTokenAdvantages:
    """Token advantages known before the update (broadcast, or THR from the old-policy pass)."""

    needs_hidden = False

    def __init__(self, tokens: torch.Tensor):
        self.tokens, self.stats = tokens, {}

    def __call__(self, rows: torch.Tensor, fwd: ForwardOut) -> torch.Tensor:
        return self.tokens[rows]


class ThrFromUpdateForward:
    """THR computed from the update forward's own (detached) hidden states, before its loss.

    Valid only fully on-policy with the whole batch in one micro-batch: then that forward *is*
    pi_old's, and THR costs no forward pass at all."""

    needs_hidden = True

    def __init__(self, weighting: TokenWeighting, response: torch.Tensor, rewards: torch.Tensor,
                 batch: RolloutBatch, step: int):
        self.weighting, self.response, self.rewards, self.batch, self.step = weighting, response, rewards, batch, step
        self.tokens: torch.Tensor | None = None
        self.stats: dict[str, float] = {}

    def __call__(self, rows: torch.Tensor, fwd: ForwardOut) -> torch.Tensor:
        if self.tokens is None:
            if len(rows) != len(self.batch):
                raise RuntimeError("fused THR needs the whole batch in one micro-batch")
            t0 = time.perf_counter()
            self.weighting.begin(self.batch)
            with torch.no_grad():
                self.weighting.observe(rows, ForwardOut(fwd.logps.detach(), fwd.logits.detach(), fwd.hidden.detach()))
            self.tokens, self.stats = self.weighting.apply(self.response, self.rewards, self.batch, self.step)
            self.stats["perf/token_weighting_s"] = time.perf_counter() - t0
        return self.tokens[rows]


def token_advantages(weighting: TokenWeighting, adv: Advantages, rewards: torch.Tensor, batch: RolloutBatch,
                     step: int, *, fused: bool):
    """The update's token advantages: the weighting of response advantages when the estimator
    gives them (THR, or a broadcast), else the estimator's own token advantages."""
    if adv.response is None:
        return FixedTokenAdvantages(adv.tokens)
    if fused:
        return ThrFromUpdateForward(weighting, adv.response, rewards, batch, step)
    tokens, stats = weighting.apply(adv.response, rewards, batch, step)
    src = FixedTokenAdvantages(tokens)
    src.stats = stats
    return src


def minibatches(n_rows: int, num_minibatches: int) -> list[torch.Tensor]:
    """Shuffled row indices cut into minibatches. Several processes: always exactly
    ``num_minibatches`` (empty ones where a rank holds few or no rows), because every rank must
    join every optimizer step's collectives."""
    parts = list(torch.randperm(n_rows).chunk(num_minibatches))
    if world()[1] > 1:
        parts += [torch.zeros(0, dtype=torch.long)] * (num_minibatches - len(parts))
    return parts


def update_policy(updater: Updater, policy, batch: RolloutBatch, fw: Forwards, tok_adv, alg: AlgorithmConfig, *,
                  temperature: float, max_len: int, step: int, critic: CriticUpdate | None = None,
                  train_actor: bool = True, tis_cap: float | None = None) -> dict[str, float]:
    """``alg.epochs`` passes x ``alg.num_minibatches`` optimizer steps; each micro-batch's loss is
    normalised by its whole minibatch so accumulation equals one big batch. With a critic, its
    clipped value loss joins the policy loss (disjoint parameters: the Updater clips and steps
    each set on its own); ``train_actor`` False trains the critic alone (warm-up, pretraining).
    ``tis_cap``: weight each token by min(pi_old / pi_sampler, tis_cap) from
    ``batch.sampler_logps`` (truncated importance sampling; None = off)."""
    mask = batch.loss_mask.float()
    totals: dict[str, float] = {}
    n_updates = 0
    names = {"loss": "loss/policy" if critic is None else "loss/total"}
    policy.train()
    if critic is not None:
        critic.model.train()
    for _epoch in range(alg.epochs):
        for mb in minibatches(len(batch), alg.num_minibatches):
            num_tokens = sum_across_ranks(float(mask[mb].sum()))  # the global minibatch's (1 process: this)
            num_seqs = int(sum_across_ranks(len(mb)))

            def loss_fn(rows: torch.Tensor, num_seqs=num_seqs, num_tokens=num_tokens):
                loss, stats = torch.zeros(()), {}
                if train_actor:
                    fwd = forward_completions(policy, batch, rows, temperature=temperature,
                                              want_hidden=tok_adv.needs_hidden, keep_logits=tok_adv.needs_hidden)
                    dev = fwd.logps.device
                    adv_rows = tok_adv(rows, fwd)
                    old = fwd.logps.detach() if fw.old_logps is None else fw.old_logps[rows].to(dev)
                    weights, tis_stats = (None, {}) if tis_cap is None else tis_weights(
                        old, batch.sampler_logps[rows], mask[rows].to(dev), cap=tis_cap)
                    loss, stats = policy_loss(
                        fwd.logps, old, adv_rows.to(dev), mask[rows].to(dev), kind=alg.policy_loss,
                        clip_eps_low=alg.clip_eps_low, clip_eps_high=alg.clip_eps_high, loss_agg=alg.loss_agg,
                        kl_coef=alg.kl_coef, ref_logps=fw.ref_logps[rows].to(dev) if fw.ref_logps is not None else None,
                        kl_estimator=alg.kl_estimator, num_seqs=num_seqs, num_tokens=num_tokens, max_len=max_len,
                        token_weights=weights,
                    )
                    stats.update(tis_stats)
                if critic is None:
                    return loss, stats
                v_loss, v_stats = critic_loss(critic, batch, rows, num_tokens=num_tokens)
                # The Updater averages stats with each micro-batch's share of rows; these two are
                # parts of the minibatch loss (sums), so undo the share.
                per_share = num_seqs / len(rows)
                stats = {**stats, **v_stats, "policy": loss.detach() * per_share, "value": v_loss.detach() * per_share}
                return loss.to(v_loss.device) + v_loss, stats

            try:
                st = updater.step(mb, loss_fn)
            except UpdateDiverged as exc:
                raise TrainingDiverged(f"step {step}: {exc}") from None
            for k, v in st.items():
                key = names.get(k, k if "/" in k else f"loss/{k}")   # namespaced stats keep their name
                totals[key] = totals.get(key, 0.0) + v
            n_updates += 1
    return {**{k: v / n_updates for k, v in totals.items()}, **tok_adv.stats}


def step_metrics(batch: RolloutBatch, rewards: RewardResult, flat: torch.Tensor, max_completion_length: int,
                 step: int) -> dict[str, Any]:
    m: dict[str, Any] = {
        "reward/mean": rewards.total.mean().item(),
        "reward/std": rewards.total.std().item() if len(rewards.total) > 1 else 0.0,
        "reward/zero_variance_frac": flat.float().mean().item(),
        "rollout/truncated_frac": batch.truncated.float().mean().item(),
        "rollout/completion_len": batch.loss_mask.sum(1).float().mean().item(),
    }
    if "agent" in batch.extras:   # multi-turn tool use: turns, searches, malformed calls, timeouts
        from llmrl.rollout.agent import agent_metrics

        m.update(agent_metrics(batch.extras["agent"]))
    for name, vals in rewards.per_reward.items():
        m[f"reward/{name}/mean"] = torch.nan_to_num(vals, nan=0.0).mean().item()
    for name, why in rewards.failures.items():
        m[f"reward/{name}/failed"] = 1
        log.warning("step %d: reward %s failed: %s", step, name, why)
    all_none = getattr(rewards, "all_none_rows", 0)
    if all_none:
        m["reward/all_none_rows"] = all_none
    if m["rollout/truncated_frac"] > 0.9:
        log.warning("step %d: %.0f%% of completions hit rollout.max_completion_length=%d; raise it or "
                    "shorten the expected answers", step, 100 * m["rollout/truncated_frac"], max_completion_length)
    return m


def sampling_seed(cfg, step: int, first_prompt: int) -> int | None:
    """The sampler's seed of this rank's first prompt of ``step`` (``SamplingParams.seed``), or
    None (the process's own stream) in one process unless ``rollout.seed_per_chunk``. Seeded by
    the prompt's index in the step, samples are the same whatever the number of processes."""
    if not cfg.rollout.seed_per_chunk and world()[1] == 1:
        return None
    return (cfg.trainer.seed * 1_000_003 + step) * 1_000_003 + first_prompt


@dataclass
class Collected:
    """One step's prompts and their rollouts. ``staleness``: how many updates the weights that
    sampled ``batch`` are behind the weights it trains (0 on-policy; 1 when it was generated
    during the previous step, ``rollout.max_staleness: 1``)."""

    step: int                       # the step that trains on it
    indices: list[int]              # this rank's prompt rows of the training data
    raw: list                       # their prompt-column values (what rewards receive)
    batch: RolloutBatch             # N = B*G rows
    staleness: int = 0
    rollout_s: float = 0.0

    def to_state(self) -> dict[str, Any]:
        """Plain tensors and containers (a checkpoint loads them with ``weights_only=True``)."""
        batch = {f.name: getattr(self.batch, f.name) for f in fields(RolloutBatch)}
        return {"step": self.step, "indices": list(self.indices), "raw": list(self.raw), "batch": batch,
                "staleness": self.staleness, "rollout_s": self.rollout_s}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> "Collected":
        return cls(step=d["step"], indices=d["indices"], raw=d["raw"], batch=RolloutBatch(**d["batch"]),
                   staleness=d["staleness"], rollout_s=d["rollout_s"])


def collect(run: "Run", state: "TrainState", step: int, *, staleness: int = 0) -> Collected:
    """Draw the next prompts of ``step`` (this rank's whole groups) and generate G completions
    each with the engine's current weights."""
    cfg, alg = run.cfg, run.cfg.algorithm
    G = cfg.rollout.num_generations
    indices = state.sampler.next(cfg.trainer.prompts_per_step)
    mine = shard_groups(len(indices))        # several processes: this rank's whole prompt groups
    indices = indices[mine]
    raw = run.train_data[indices][cfg.data.prompt_column]
    prompt_texts = format_prompts(cfg, run.tokenizer, raw)
    tis = correction_enabled(alg.sampler_correction, cfg.rollout.engine)
    sampling = SamplingParams(temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, top_k=cfg.rollout.top_k,
                              max_new_tokens=cfg.rollout.max_completion_length, stop=tuple(cfg.rollout.stop),
                              seed=sampling_seed(cfg, step, mine.start), logprobs=tis)   # sampler log-probs for TIS
    t0 = time.perf_counter()
    batch = rollout(run.engine, run.engine.encode(prompt_texts), sampling, G, step)   # N = B*G rows
    batch.prompts = [p for p in prompt_texts for _ in range(G)]
    if tis and batch.sampler_logps is None:
        raise ValueError(f"algorithm.sampler_correction needs the sampler's log-probs, and rollout.engine "
                         f"{cfg.rollout.engine!r} returned none (RolloutBatch.sampler_logps); set "
                         "algorithm.sampler_correction: false or return them")
    return Collected(step, indices, raw, batch, staleness, time.perf_counter() - t0)


def score_collected(run: "Run", c: Collected, columns: dict[str, list],
                    completion_ids: list[list[int]]) -> tuple[RewardResult, float]:
    """The rewards of a collected batch (``llmrl.rewards.runner.score``) and the seconds they took."""
    cfg, G = run.cfg, run.cfg.rollout.num_generations
    t0 = time.perf_counter()
    rewards = score([p for p in c.raw for _ in range(G)], c.batch.completions, columns, run.reward_fns,
                    completion_ids=completion_ids,
                    trainer_state=TrainerState(global_step=c.step, max_steps=cfg.trainer.steps))
    return rewards, time.perf_counter() - t0


def collect_and_score(run: "Run", state: "TrainState", step: int, timers: Timers, *,
                      pretrain: bool = False) -> tuple[Collected, RewardResult]:
    """This step's rollouts and rewards.

    On-policy (``rollout.max_staleness: 0``): generate, then score. With one step of staleness
    the batch was generated during the previous step; its rewards are scored on a thread while
    the *next* step's batch generates here with the current weights (before this step's
    update), which makes that batch one update stale. The update waits for the rewards only.
    The first step has nothing generated ahead (staleness 0), the last generates nothing ahead."""
    cfg, G = run.cfg, run.cfg.rollout.num_generations
    if state.pending is not None and not pretrain:
        cur, state.pending = state.pending, None
        timers.seconds["rollout"] = 0.0
    else:
        cur = collect(run, state, step)
        timers.seconds["rollout"] = cur.rollout_s
    # Read here, not on the scoring thread, which then runs only the reward functions.
    columns = columns_for(run.train_data, cur.indices, cfg.data.prompt_column, G)
    ids = cur.batch.policy_ids()
    if not cfg.rollout.max_staleness or pretrain or step >= cfg.trainer.steps:
        rewards, timers.seconds["reward"] = score_collected(run, cur, columns, ids)
        return cur, rewards
    with ThreadPoolExecutor(1, thread_name_prefix="llmrl-reward") as pool:
        scoring = pool.submit(score_collected, run, cur, columns, ids)
        state.pending = collect(run, state, step + 1, staleness=1)   # the weights before this step's update
        timers.seconds["rollout"] += state.pending.rollout_s
        with timers("reward_wait"):
            rewards, timers.seconds["reward"] = scoring.result()
    return cur, rewards


# ----------------------------------------------------------------------------------- the step
def kl_reward_coefficient(alg: AlgorithmConfig, state: "TrainState") -> float:
    """This step's per-token KL coefficient in the reward: ``algorithm.kl_reward_coef``, or where
    the adaptive controller moved it (kept in the checkpointed history, so a resume continues it)."""
    return float(state.history.get("kl_reward_coef", alg.kl_reward_coef))


def kl_reward_step(alg: AlgorithmConfig, state: "TrainState", fw: Forwards, batch: RolloutBatch,
                   coef: float) -> dict[str, float]:
    """Metrics of the KL in the reward; with ``algorithm.kl_reward_target`` the adaptive
    controller moves the coefficient for the next step."""
    m = batch.loss_mask.bool()
    kl = (fw.old_logps - fw.ref_logps)[m].mean().item() if m.any() else 0.0     # k1 per policy token
    if alg.kl_reward_target is not None:
        state.history["kl_reward_coef"] = adaptive_kl_coef(coef, kl, target=alg.kl_reward_target, n_seqs=len(batch),
                                                           horizon=alg.kl_reward_horizon)
    return {"kl_reward/coef": coef, "kl_reward/mean": kl}


def critic_metrics(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """The critic before this step's update, over the whole batch (never averaged per micro-batch)."""
    m = mask.bool()
    return {"critic/explained_variance": explained_variance(values, returns, mask),
            "critic/value_mean": values[m].mean().item() if m.any() else 0.0,
            "critic/return_mean": returns[m].mean().item() if m.any() else 0.0}


def rl_step(run: "Run", state: "TrainState", step: int, *, pretrain: bool = False) -> dict[str, Any]:
    """One RL step; returns its metrics. ``pretrain``: a critic-only step on rollouts of the frozen
    policy (``critic.pretrain_steps``, before RL): neither the actor nor its schedule moves."""
    cfg, alg = run.cfg, run.cfg.algorithm
    G = cfg.rollout.num_generations
    timers = Timers()
    t_step = time.perf_counter()
    tis = correction_enabled(alg.sampler_correction, cfg.rollout.engine)
    collected, rewards = collect_and_score(run, state, step, timers, pretrain=pretrain)
    batch = collected.batch
    flat = no_signal_groups(rewards.total, G, alg.advantage)                            # [B] (or [1])
    all_flat = not any_across_ranks(not bool(flat.all()))                               # over the global batch
    state.degenerate_steps = state.degenerate_steps + 1 if all_flat else 0
    if state.degenerate_steps >= cfg.trainer.degenerate_patience:
        raise DegenerateSignal(
            f"for {state.degenerate_steps} consecutive steps every reward the estimator compares was equal "
            f"(mean {rewards.total.mean().item():.3f}), so every advantage was 0 and nothing was learned. The task "
            "is too hard or too easy for the model, or a reward returns a constant/None: check samples.jsonl, "
            "warm-start the model, or change the reward."
        )

    keep = rows_to_train(flat, len(batch), G, alg)
    train_batch = batch.select(keep) if len(keep) < len(batch) else batch
    stats: dict[str, Any] = {}
    adv_all = None
    if any_across_ranks(len(train_batch) > 0):   # a rank with no rows left joins the others' update
        # Fully on-policy (one optimizer step per rollout batch): pi_old == pi at the update, so the
        # old log-probs are the update's own, detached (as TRL does), and THR can read the update
        # forward's hidden states when the batch is one micro-batch (not with active dropout: the
        # update forward runs in train mode, the old pass in eval mode). Either way THR adds no pass.
        thr = run.weighting.needs_hidden
        on_policy = alg.epochs == 1 and alg.num_minibatches == 1
        fused = on_policy and thr and not run.has_dropout and len(train_batch) <= cfg.trainer.micro_batch_size
        fw = Forwards()
        mb, temp = cfg.trainer.micro_batch_size, cfg.rollout.temperature
        kl_reward = kl_reward_coefficient(alg, state)       # KL in the reward needs pi_old's log-probs
        with timers("old_forward"):
            if not on_policy or (thr and not fused) or kl_reward:
                fw.old_logps = old_policy_forward(run.policy, train_batch, micro_batch_size=mb, temperature=temp,
                                                  weighting=run.weighting)
        if alg.kl_coef > 0 or kl_reward:
            with timers("ref_forward"):
                fw.ref_logps = reference_forward(run.policy, run.ref, train_batch, micro_batch_size=mb,
                                                 temperature=temp)
        if run.critic is not None:
            with timers("values_forward"):
                fw.values = values_forward(run.critic, train_batch, micro_batch_size=mb)        # [N, C]
        train_rewards = rewards.total[keep]
        params = TokenParams(gamma=alg.gamma, lambda_actor=alg.lambda_actor, lambda_critic=alg.lambda_critic,
                             whiten=alg.whiten_advantages, kl_coef=kl_reward)
        adv = estimate(alg.advantage, train_rewards, train_batch.loss_mask, group_size=G,
                       values=fw.values, ref_logps=fw.ref_logps, old_logps=fw.old_logps, params=params)
        adv_all = torch.zeros(len(batch))
        if adv.response is not None:
            adv_all[keep] = adv.response
        with nullcontext() if fused else timers("token_weighting"):  # fused: timed inside the update
            tok_adv = token_advantages(run.weighting, adv, train_rewards, train_batch, step, fused=fused)
        critic = None
        if run.critic is not None:
            critic = CriticUpdate(run.critic, fw.values, adv.returns, cfg.critic.value_clip)
            stats.update(critic_metrics(fw.values, adv.returns, train_batch.loss_mask))
        train_actor = not pretrain and (cfg.critic is None or step > cfg.critic.warmup_steps)
        with timers("update"):
            stats.update(update_policy(run.updater, run.policy, train_batch, fw, tok_adv, alg, temperature=temp,
                                       max_len=cfg.rollout.max_completion_length, step=step, critic=critic,
                                       train_actor=train_actor, tis_cap=alg.sampler_correction_cap if tis else None))
        if kl_reward:
            stats.update(kl_reward_step(alg, state, fw, train_batch, kl_reward))
    if not pretrain:
        run.updater.end_rl_step()   # a step with no update (all groups flat) still advances the schedule
    run.engine.sync_weights(run.policy)

    m = step_metrics(batch, rewards, flat, cfg.rollout.max_completion_length, step)
    m.update(stats)
    m["train/rows"] = len(train_batch)
    if cfg.rollout.max_staleness:
        m["rollout/staleness"] = collected.staleness
    dt = time.perf_counter() - t_step
    m.update({f"perf/{k}_s": v for k, v in timers.seconds.items()})
    m["perf/step_s"] = dt
    m["perf/tokens_per_s"] = float(batch.completion_mask.sum()) / max(dt, 1e-9)
    m["lr"] = run.updater.lr
    if world()[1] > 1:  # the global batch's figures, identical on every rank
        totals = gather_rows(rewards.total)
        m = merge_metrics(m, summed=("train/rows", "perf/tokens_per_s"))
        m["reward/std"] = totals.std().item() if len(totals) > 1 else 0.0
    if cfg.logging.samples_per_step and not pretrain:
        k = cfg.logging.samples_per_step
        run.logger.samples(step, [
            {"prompt": batch.prompts[i], "completion": batch.completions[i], "reward": rewards.total[i].item(),
             "advantage": adv_all[i].item() if adv_all is not None else 0.0,
             "finish_reason": batch.finish_reason[i], **({"details": rewards.details[i]} if rewards.details[i] else {})}
            for i in range(min(k, len(batch)))
        ])
    return m
