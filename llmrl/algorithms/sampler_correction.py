"""Truncated importance sampling (TIS) for the sampler/trainer mismatch.

Why: an engine with its own copy of the weights (vLLM: other kernels, other batching, maybe
another dtype) samples from pi_sampler, which is close to but not exactly the trainer's pi_old.
The policy gradient assumes samples from pi_old, so each token's term is reweighted by

    w_t = min(pi_old(y_t) / pi_sampler(y_t), C)       (Yao et al. 2025, "Your Efficient RL
                                                       Framework Secretly Brings You Off-Policy
                                                       RL Training"; TRL's token_truncate mode)

computed from the sampler's own per-token log-probs (``RolloutBatch.sampler_logps``), detached,
and multiplied into the per-token policy loss before the KL term is added (as TRL does:
``vllm_importance_sampling_correction`` / ``vllm_importance_sampling_cap``, default C = 2; verl
calls it ``rollout_is`` with a token-level threshold). When the sampler is the trainer (the
``hf`` engine) w_t = 1 exactly, so the correction is off there by default (with rollouts one
update behind, ``rollout.max_staleness: 1``, ``true`` makes w_t correct that lag).

Tokens the sampler gave no log-prob for (NaN) and tokens outside the loss mask get w = 1."""
from __future__ import annotations

import torch


def correction_enabled(setting: bool | None, engine: str) -> bool:
    """``algorithm.sampler_correction``: None means on for every engine but ``hf`` (whose sampler
    is the trainer's own model, so w would be 1 anyway). With ``rollout.max_staleness: 1`` the
    hf sampler is the previous step's policy; ``true`` then corrects that lag too (off by
    default, as in verl's one-step off-policy recipe; docs/scaling.md has the measurement)."""
    return engine != "hf" if setting is None else setting


@torch.no_grad()
def tis_weights(old_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor, *,
                cap: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """[N, T] weights min(exp(old - sampler), cap), 1 off the mask or where ``sampler_logps`` is NaN.

    Stats (over masked tokens): ``sampler/logp_diff_abs_mean`` = mean |log pi_old - log pi_sampler|,
    ``sampler/is_ratio_mean`` (before the cap), ``sampler/is_clipped_frac`` (share above the cap).

    >>> w, s = tis_weights(torch.tensor([[0., -1.]]), torch.tensor([[-1., -1.]]), torch.ones(1, 2), cap=2.0)
    >>> w.tolist(), round(s["sampler/is_clipped_frac"].item(), 2)   # e^1 = 2.72 -> capped at 2
    ([[2.0, 1.0]], 0.5)
    """
    m = mask.bool() & ~torch.isnan(sampler_logps)
    log_ratio = torch.where(m, old_logps.detach() - sampler_logps.to(old_logps.device), torch.zeros_like(old_logps))
    ratio = torch.exp(log_ratio)
    weights = torch.clamp(ratio, max=cap)
    n = m.sum().clamp(min=1)
    stats = {"sampler/logp_diff_abs_mean": log_ratio.abs().sum() / n,
             "sampler/is_ratio_mean": (ratio * m).sum() / n,
             "sampler/is_clipped_frac": ((ratio > cap) & m).sum() / n}
    return weights, stats
