"""Policy losses, their aggregation over tokens, and the reference-KL penalty.

Shapes: N sequences, T completion positions. ``mask`` is the loss mask (policy tokens only)."""
from __future__ import annotations

from typing import Literal

import torch

LossAgg = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
PolicyLoss = Literal["ppo_clip", "gspo", "gspo_token"]


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, mode: LossAgg, *, num_seqs: int | None = None,
              num_tokens: float | None = None, max_len: int | None = None) -> torch.Tensor:
    """Reduce a [N, T] per-token loss to a scalar.

    token-mean               sum(l*m) / sum(m)                     (DAPO; TRL "bnpo")
    seq-mean-token-mean      mean_i( sum_t(l*m)_i / sum_t(m)_i )    (GRPO paper; TRL "grpo")
    seq-mean-token-sum-norm  sum(l*m) / (N * max_len)               (Dr. GRPO; TRL "dr_grpo")

    ``num_seqs``/``num_tokens`` let a micro-batch be normalised by its whole minibatch so that
    gradient accumulation over micro-batches gives the same gradient as one big batch.

    >>> l = torch.tensor([[1., 3.], [2., 0.]]); m = torch.tensor([[1, 1], [1, 0]])
    >>> [aggregate(l, m, k, max_len=2).item() for k in ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")]
    [2.0, 2.0, 1.5]
    """
    m = mask.to(per_token.dtype)
    n = per_token.shape[0] if num_seqs is None else num_seqs
    if mode == "token-mean":
        denom = m.sum() if num_tokens is None else num_tokens
        return (per_token * m).sum() / max(float(denom), 1.0)
    if mode == "seq-mean-token-mean":
        return ((per_token * m).sum(1) / m.sum(1).clamp(min=1.0)).sum() / n
    if mode == "seq-mean-token-sum-norm":
        T = per_token.shape[1] if max_len is None else max_len
        return (per_token * m).sum() / (n * T)
    raise ValueError(f"algorithm.loss_agg: unknown mode {mode!r}; allowed: token-mean, seq-mean-token-mean, seq-mean-token-sum-norm")


def importance_log_ratio(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor, kind: PolicyLoss) -> torch.Tensor:
    """log of the importance ratio used by each loss, [N, T].

    ppo_clip:   log pi/pi_old per token.
    gspo:       the sequence ratio (Zheng et al. 2025, eq. 7): mean_t log(pi/pi_old), broadcast.
    gspo_token: sg[sequence ratio] * pi/sg[pi] (GSPO eq. 13): the value equals the sequence ratio,
                the gradient is per token, so token-level advantages (THR) still apply.
    """
    log_ratio = logps - old_logps
    if kind == "ppo_clip":
        return log_ratio
    m = mask.to(logps.dtype)
    seq = (log_ratio * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)  # [N, 1]
    if kind == "gspo":
        return seq.expand_as(logps)
    if kind == "gspo_token":
        return seq.detach() + logps - logps.detach()
    raise ValueError(f"algorithm.policy_loss: unknown loss {kind!r}; allowed: ppo_clip, gspo, gspo_token")


def clipped_surrogate(log_ratio: torch.Tensor, advantages: torch.Tensor, *, clip_eps_low: float,
                      clip_eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped objective as a per-token loss (Schulman et al. 2017, eq. 7), with separate
    lower/upper clip (DAPO clip-higher, Yu et al. 2025, eq. 10). Returns (loss [N,T], clipped [N,T]).

    ratio 1 gives loss -A, whatever the clip:
    >>> loss, _ = clipped_surrogate(torch.zeros(1, 2), torch.tensor([[1., -2.]]), clip_eps_low=.2, clip_eps_high=.28)
    >>> loss.tolist()
    [[-1.0, 2.0]]
    """
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.clamp(ratio, 1 - clip_eps_low, 1 + clip_eps_high)
    unclipped, clipped = ratio * advantages, clipped_ratio * advantages
    loss = -torch.min(unclipped, clipped)
    return loss, (clipped < unclipped)


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: Literal["k1", "k2", "k3"]) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from samples of pi (Schulman 2020, "Approximating KL").

    k1 = log pi - log ref; k2 = (log pi - log ref)^2 / 2; k3 = exp(ref - pi) - (ref - pi) - 1 (>= 0).

    >>> kl_penalty(torch.tensor([0.]), torch.tensor([0.]), "k3").item()
    0.0
    """
    d = ref_logps - logps
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "k3":
        return torch.exp(d) - d - 1
    raise ValueError(f"algorithm.kl_estimator: unknown {estimator!r}; allowed: k1, k2, k3")


def policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
                kind: PolicyLoss = "ppo_clip", clip_eps_low: float = 0.2, clip_eps_high: float = 0.2,
                loss_agg: LossAgg = "token-mean", kl_coef: float = 0.0, ref_logps: torch.Tensor | None = None,
                kl_estimator: Literal["k1", "k2", "k3"] = "k3", num_seqs: int | None = None,
                num_tokens: float | None = None, max_len: int | None = None,
                token_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The whole per-minibatch policy objective. advantages is [N, T] (token level) or [N].

    Returns (scalar loss, detached stats). With kl_coef > 0 the KL estimate is added per token
    before aggregation (GRPO eq. 3; as TRL does). ``token_weights`` [N, T] (detached) multiply
    the clipped surrogate per token, before the KL term: the sampler/trainer mismatch
    correction (``llmrl.algorithms.sampler_correction``)."""
    if advantages.ndim == 1:
        advantages = advantages.unsqueeze(1).expand_as(logps)
    log_ratio = importance_log_ratio(logps, old_logps, mask, kind)
    per_token, clipped = clipped_surrogate(log_ratio, advantages, clip_eps_low=clip_eps_low, clip_eps_high=clip_eps_high)
    if token_weights is not None:
        per_token = per_token * token_weights
    stats: dict[str, torch.Tensor] = {}
    if kl_coef > 0:
        if ref_logps is None:
            raise ValueError("kl_coef > 0 needs ref_logps (the reference model's per-token log-probs)")
        kl = kl_penalty(logps, ref_logps, kl_estimator)
        per_token = per_token + kl_coef * kl
        stats["kl"] = aggregate(kl.detach(), mask, "token-mean")
    agg = dict(num_seqs=num_seqs, num_tokens=num_tokens, max_len=max_len)
    loss = aggregate(per_token, mask, loss_agg, **agg)
    m = mask.bool()
    stats["clip_frac"] = clipped[m].float().mean() if m.any() else torch.tensor(0.0)
    stats["ratio_mean"] = torch.exp(log_ratio.detach())[m].mean() if m.any() else torch.tensor(1.0)
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               clip: float | None, num_tokens: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss (PPO2 / OpenRLHF ValueLoss / verl compute_value_loss):

        V_clip = old + clamp(V - old, -clip, clip)
        loss_t = 0.5 * max((V - R)^2, (V_clip - R)^2)

    summed over policy tokens and divided by ``num_tokens`` (the minibatch's policy tokens, so
    micro-batches accumulate to the minibatch mean). ``clip`` None: unclipped 0.5 (V - R)^2.
    Stats: ``value_clipfrac`` = share of tokens where the clipped term is the larger one."""
    m = mask.to(values.dtype)
    err = (values - returns) ** 2
    if clip is None:
        per_token, clipped = err, torch.zeros_like(err)
    else:
        v_clip = old_values + (values - old_values).clamp(-clip, clip)
        err_clip = (v_clip - returns) ** 2
        per_token, clipped = torch.maximum(err, err_clip), (err_clip > err).to(values.dtype)
    loss = 0.5 * (per_token * m).sum() / max(num_tokens, 1.0)
    n = m.sum().clamp(min=1)
    return loss, {"value_clipfrac": ((clipped * m).sum() / n).detach(), "value_mse": ((err * m).sum() / n).detach()}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens of the *whole batch* (population variances):
    1 = the critic predicts returns perfectly, 0 = no better than a constant, < 0 worse. NaN when
    the returns do not vary. Averaging it per micro-batch (as some trainers log it) is wrong:
    the mean of ratios is not the ratio of the batch's variances.

    >>> explained_variance(torch.tensor([[1., 2.]]), torch.tensor([[1., 3.]]), torch.ones(1, 2))  # 1 - .25 / 1
    0.75
    """
    m = mask.bool()
    v, r = values[m].double(), returns[m].double()
    if len(r) == 0 or r.var(unbiased=False) == 0:
        return float("nan")
    return float(1 - (r - v).var(unbiased=False) / r.var(unbiased=False))
