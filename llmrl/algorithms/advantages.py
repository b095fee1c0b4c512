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

    fn: Callable[..., torch.Tensor]        # (rewards [N], group_size) -> response advantages [N]
    needs_groups: bool
    needs_values: bool = False
    needs_ref: bool = False
    summary: str = ""


ESTIMATORS: dict[str, Estimator] = {
    "grpo": Estimator(lambda r, g: grpo_advantages(r, g, scale=True), needs_groups=True,
                      summary="(r - group mean) / group std"),
    "dr_grpo": Estimator(lambda r, g: grpo_advantages(r, g, scale=False), needs_groups=True,
                         summary="r - group mean (no std: no difficulty bias)"),
    "rloo": Estimator(rloo_advantages, needs_groups=True, summary="r - mean of the other completions of the prompt"),
    "reinforce": Estimator(lambda r, g: reinforce_advantages(r), needs_groups=False,
                           summary="r - batch mean; works with num_generations 1"),
}


def estimate(name: str, rewards: torch.Tensor, loss_mask: torch.Tensor, *, group_size: int,
             values: torch.Tensor | None = None, ref_logps: torch.Tensor | None = None) -> Advantages:
    """Token advantages [N, C] from rewards [N] (and values / reference log-probs for the
    estimators that declare they need them)."""
    est = ESTIMATORS.get(name)
    if est is None:
        raise ValueError(f"algorithm.advantage: unknown estimator {name!r}; allowed: {', '.join(ESTIMATORS)}")
    if est.needs_values and values is None:
        raise ValueError(f"algorithm.advantage: {name!r} needs critic values")
    if est.needs_ref and ref_logps is None:
        raise ValueError(f"algorithm.advantage: {name!r} needs reference log-probs")
    response = est.fn(rewards, group_size)
    return Advantages(tokens=response.unsqueeze(1) * loss_mask.to(response.dtype), response=response)
