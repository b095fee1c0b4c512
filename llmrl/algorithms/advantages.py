"""Response-level advantage estimators for group sampling (one scalar per completion).

All take rewards laid out prompt-major, [B*G] with G consecutive completions per prompt, and
return [B*G]. Token-level shaping (THR) happens afterwards in ``token_weighting``."""
from __future__ import annotations

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
    """Dispatch on the recipe's ``algorithm.advantage``."""
    if name == "grpo":
        return grpo_advantages(rewards, group_size, scale=True)
    if name == "dr_grpo":
        return grpo_advantages(rewards, group_size, scale=False)
    if name == "rloo":
        return rloo_advantages(rewards, group_size)
    raise ValueError(f"algorithm.advantage: unknown estimator {name!r}; allowed: grpo, dr_grpo, rloo")


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B] True where every completion of the prompt got the same reward (no learning signal)."""
    r = _groups(rewards, group_size)
    return (r == r[:, :1]).all(dim=1)
