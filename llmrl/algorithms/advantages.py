"""Advantage estimators and their registry.

Rewards are laid out prompt-major, [B*G] with G consecutive completions per prompt. Each
estimator in ``ESTIMATORS`` declares what it needs (groups, critic values, reference log-probs),
so the trainer runs only those forwards, and ``estimate`` returns token advantages [N, C]: the
shape a critic-based estimator (GAE) or a per-token KL reward (REINFORCE++) produces too.
Token-level shaping (THR) happens afterwards in ``llmrl.trainer.token_weighting``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.ndim != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}")
    return rewards.view(-1, group_size)  # [B, G]


def grpo_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO (Shao et al. 2024, eq. 3): A_i = (r_i - mean(r)) / (std(r) + eps) within the group.

    ``scale=False`` is Dr. GRPO (Liu et al. 2025, sec. 3.1): dividing by the group std up-weights
    near-uniform groups (too easy or too hard questions), a question-level difficulty bias.
    std is the unbiased one, as in TRL, so losses match TRL's on the same batch.

    >>> grpo_advantages(torch.tensor([1., 0., 0., 1.]), 2).tolist()   # mean .5, std .7071
    [0.7070..., -0.7070..., -0.7070..., 0.7070...]
    """
    r = _groups(rewards, group_size)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (r.std(dim=1, keepdim=True) + eps)
    return adv.reshape(-1)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, eq. 4): A_i = r_i - mean_{j != i} r_j.

    >>> rloo_advantages(torch.tensor([1., 0., 0., 0.]), 4).tolist()   # 1 - 0, 0 - 1/3
    [1.0, -0.3333..., -0.3333..., -0.3333...]
    """
    if group_size < 2:
        raise ValueError("rloo needs rollout.num_generations >= 2 (leave-one-out baseline)")
    r = _groups(rewards, group_size)
    baseline = (r.sum(dim=1, keepdim=True) - r) / (group_size - 1)
    return (r - baseline).reshape(-1)


def compute_advantages(name: str, rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Response advantages [N] of a registered estimator (``ESTIMATORS``)."""
    if name not in ESTIMATORS:
        raise ValueError(f"algorithm.advantage: unknown estimator {name!r}; allowed: {', '.join(ESTIMATORS)}")
    if ESTIMATORS[name].fn is None:
        raise ValueError(f"algorithm.advantage: {name!r} is a token-level estimator; use estimate()")
    return ESTIMATORS[name].fn(rewards, group_size)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B] True where every completion of the prompt got the same reward (no learning signal)."""
    r = _groups(rewards, group_size)
    return (r == r[:, :1]).all(dim=1)


def reinforce_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE with the batch-mean baseline: A_i = r_i - mean_j r_j over the whole batch.

    Needs no groups, so it runs with ``rollout.num_generations: 1`` (one completion per prompt).

    >>> reinforce_advantages(torch.tensor([1., 0., 0., 1.])).tolist()
    [0.5, -0.5, -0.5, 0.5]
    """
    return rewards - rewards.mean()


# --------------------------------------------------------------------- token-level (critic, REINFORCE++)
# Token layout: [N, C] completion positions; ``mask`` 1 on policy tokens. Environment tokens
# (tool results) and padding are *transparent*: they carry no reward, no value and no TD error,
# and the recursions pass straight through them (verl's observation-aware GAE), so the last
# policy token before a tool result bootstraps from the first policy token after it.

def masked_whiten(x: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var) over the masked tokens of the whole batch, 0 elsewhere.

    The population variance clamped at ``eps``, as OpenRLHF normalises GAE and REINFORCE++
    advantages (experience_maker.py at 3c3be62): statistics of the whole batch, never per row
    or per micro-batch (OpenRLHF#830 / #924 were about exactly this)."""
    m = mask.to(x.dtype)
    n = m.sum().clamp(min=1)
    mean = (x * m).sum() / n
    var = ((x - mean) ** 2 * m).sum() / n
    return (x - mean) * var.clamp(min=eps).rsqrt() * m


def token_rewards(rewards: torch.Tensor, mask: torch.Tensor, *, kl: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> torch.Tensor:
    """[N, C] per-token rewards: the verifiable reward on each row's last policy token, plus
    ``-kl_coef * kl`` on every policy token (the per-token KL penalty; OpenRLHF compute_reward).
    A row without policy tokens gets nothing."""
    m = mask.to(rewards.dtype)
    C = m.shape[1]
    last = C - 1 - m.flip(1).argmax(dim=1)                              # index of the last policy token
    out = torch.zeros_like(m).scatter_(1, last.unsqueeze(1), rewards.unsqueeze(1)) * m
    if kl is not None and kl_coef:
        out = out - kl_coef * kl.to(out.dtype) * m
    return out


def adaptive_kl_coef(coef: float, kl: float, *, target: float, n_seqs: int, horizon: int) -> float:
    """Next KL coefficient of the adaptive controller (Ziegler et al. 2019, sec. 2.2; OpenRLHF
    ``AdaptiveKLController``): e = clip(kl / target - 1, -0.2, 0.2), coef * (1 + e * n_seqs / horizon).

    >>> round(adaptive_kl_coef(0.1, 0.2, target=0.1, n_seqs=100, horizon=1000), 6)   # e clipped to .2: * 1.02
    0.102
    """
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * n_seqs / horizon)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float) -> torch.Tensor:
    """[N, C] GAE advantages (Schulman et al. 2016) over policy tokens, V = 0 after the end.

    delta_t = r_t + gamma V_next - V_t ; A_t = delta_t + gamma lam A_next, where "next" is the
    next *policy* token (non-policy tokens are skipped). Returns for the critic are
    ``gae(..., lam=lambda_critic) + values`` (VC-PPO: lambda_critic 1 gives unbiased targets,
    lambda_actor < 1 lower-variance advantages)."""
    m = mask.to(values.dtype)
    N, C = values.shape
    next_v = torch.zeros(N, dtype=values.dtype, device=values.device)   # V of the next policy token
    last = torch.zeros(N, dtype=values.dtype, device=values.device)     # A of the next policy token
    out = torch.zeros_like(values)
    for t in reversed(range(C)):
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        cand = delta + gamma * lam * last
        next_v = m[:, t] * values[:, t] + (1 - m[:, t]) * next_v
        last = m[:, t] * cand + (1 - m[:, t]) * last
        out[:, t] = last * m[:, t]
    return out


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, *, gamma: float) -> torch.Tensor:
    """[N, C] G_t = r_t + gamma G_next over policy tokens (non-policy tokens skipped, as in ``gae``:
    this is ``gae`` with V = 0 and lam = 1)."""
    return gae(rewards, torch.zeros_like(rewards), mask, gamma=gamma, lam=1.0)


@dataclass(frozen=True)
class TokenParams:
    """Settings of the token-level estimators (recipe: algorithm.gamma, lambda_actor, ...)."""

    gamma: float = 1.0
    lambda_actor: float = 1.0
    lambda_critic: float = 1.0
    whiten: bool = True
    kl_coef: float = 0.0          # per-token KL penalty in the reward (k1 = logp - ref_logp)


def gae_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int, *, values: torch.Tensor,
                   kl: torch.Tensor | None, p: TokenParams) -> "Advantages":
    """PPO with a critic: token rewards (reward on the last policy token, KL penalty per token),
    GAE(gamma, lambda_actor) advantages whitened over the batch, critic targets
    GAE(gamma, lambda_critic) + V (unwhitened)."""
    r = token_rewards(rewards, mask, kl=kl, kl_coef=p.kl_coef)
    adv = gae(r, values, mask, gamma=p.gamma, lam=p.lambda_actor)
    returns = (gae(r, values, mask, gamma=p.gamma, lam=p.lambda_critic) + values) * mask.to(values.dtype)
    return Advantages(tokens=masked_whiten(adv, mask) if p.whiten else adv, returns=returns)


def reinforce_pp_advantages(rewards: torch.Tensor, mask: torch.Tensor, group_size: int, *, values=None,
                            kl: torch.Tensor | None, p: TokenParams, baseline: bool = False) -> "Advantages":
    """REINFORCE++ (Hu 2025; OpenRLHF ``reinforce`` / ``reinforce_baseline``), exactly:

    1. ``baseline``: r_i <- r_i - mean of its group's rewards (the G completions of its prompt);
    2. token rewards: r_i on the last policy token, ``-kl_coef * (logp - ref_logp)`` (k1) on
       every policy token;
    3. A_t = discounted return sum_{k>=t} gamma^(k-t) r_k over policy tokens (no critic);
       the baseline variant uses gamma = 1 (as OpenRLHF forces);
    4. whitening over *all policy tokens of the whole batch*: (A - mean) / std, population std,
       not per prompt and not per micro-batch.
    """
    if baseline:
        rewards = (_groups(rewards, group_size) - _groups(rewards, group_size).mean(dim=1, keepdim=True)).reshape(-1)
    r = token_rewards(rewards, mask, kl=kl, kl_coef=p.kl_coef)
    ret = discounted_returns(r, mask, gamma=1.0 if baseline else p.gamma)
    return Advantages(tokens=masked_whiten(ret, mask) if p.whiten else ret)


# ----------------------------------------------------------------------------------- the registry
@dataclass
class Advantages:
    """What an estimator hands the token-weighting and update phases.

    tokens    [N, C] advantage per completion position (0 where the loss mask is 0)
    response  [N]    one advantage per completion, for estimators that have one (group
                     estimators): token weighting (THR) reweights these per token
    returns   [N, C] value targets for a critic (None when no critic is trained)
    """

    tokens: torch.Tensor
    response: torch.Tensor | None = None
    returns: torch.Tensor | None = None


@dataclass(frozen=True)
class Estimator:
    """An advantage estimator and what it needs; the trainer runs only the forwards it asks for
    and applies the group-only checks only to group estimators."""

    fn: Callable[..., torch.Tensor] | None  # (rewards [N], group_size) -> response advantages [N]
    needs_groups: bool
    needs_values: bool = False
    needs_ref: bool = False
    summary: str = ""
    # token estimators: (rewards [N], mask [N, C], group_size, *, values, kl, p) -> Advantages
    tokens: Callable[..., "Advantages"] | None = None


ESTIMATORS: dict[str, Estimator] = {
    "grpo": Estimator(lambda r, g: grpo_advantages(r, g, scale=True), needs_groups=True,
                      summary="(r - group mean) / group std"),
    "dr_grpo": Estimator(lambda r, g: grpo_advantages(r, g, scale=False), needs_groups=True,
                         summary="r - group mean (no std: no difficulty bias)"),
    "rloo": Estimator(rloo_advantages, needs_groups=True, summary="r - mean of the other completions of the prompt"),
    "reinforce": Estimator(lambda r, g: reinforce_advantages(r), needs_groups=False,
                           summary="r - batch mean; works with num_generations 1"),
    "gae": Estimator(None, needs_groups=False, needs_values=True, tokens=gae_advantages,
                     summary="PPO with a learned critic: GAE(gamma, lambda_actor), batch-whitened (needs critic:)"),
    "reinforce_pp": Estimator(None, needs_groups=False, tokens=reinforce_pp_advantages,
                              summary="REINFORCE++: discounted return (KL in the reward), whitened over the batch"),
    "reinforce_pp_baseline": Estimator(
        None, needs_groups=True, tokens=lambda *a, **k: reinforce_pp_advantages(*a, **k, baseline=True),
        summary="REINFORCE++-baseline: r - group mean, then return whitened over the batch"),
}


def estimate(name: str, rewards: torch.Tensor, loss_mask: torch.Tensor, *, group_size: int,
             values: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None,
             old_logps: torch.Tensor | None = None, params: TokenParams = TokenParams()) -> Advantages:
    """Token advantages [N, C] from rewards [N] (and values / reference log-probs for the
    estimators that declare they need them). A KL penalty in the reward (``params.kl_coef``)
    needs ``old_logps`` and ``ref_logps``: k1 = old_logps - ref_logps per token."""
    est = ESTIMATORS.get(name)
    if est is None:
        raise ValueError(f"algorithm.advantage: unknown estimator {name!r}; allowed: {', '.join(ESTIMATORS)}")
    if est.needs_values and values is None:
        raise ValueError(f"algorithm.advantage: {name!r} needs critic values")
    if est.needs_ref and ref_logps is None:
        raise ValueError(f"algorithm.advantage: {name!r} needs reference log-probs")
    if est.tokens is not None:
        kl = None
        if params.kl_coef:
            if ref_logps is None or old_logps is None:
                raise ValueError("a KL penalty in the reward needs old and reference log-probs")
            kl = old_logps - ref_logps
        return est.tokens(rewards, loss_mask, group_size, values=values, kl=kl, p=params)
    if params.kl_coef:
        raise ValueError(f"algorithm.kl_reward_coef: {name!r} has no per-token rewards; use gae, reinforce_pp "
                         "or reinforce_pp_baseline, or put the KL in the loss (algorithm.kl_coef)")
    response = est.fn(rewards, group_size)
    return Advantages(tokens=response.unsqueeze(1) * loss_mask.to(response.dtype), response=response)
