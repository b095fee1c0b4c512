"""Token Hidden Reward (THR): per-token credit from the lm_head geometry, and the token weights built on it.

Spec: docs/thr.md, whose sections the comments below cite (paper: "Token Hidden Reward",
arXiv 2510.03669; definition from its predecessor NTHR, arXiv 2505.18830). For one prompt group of G responses, with
``g_{j,k} = onehot(y_{j,k}) - pi_{j,k}`` restricted to the group's sampled vocabulary V* and
``h_{j,k}`` the final (post-norm) hidden state that predicts ``y_{j,k}``:

    s_{j,k}   = sum_{i in P} sum_{k'} <g_{i,k'}, g_{j,k}> * <h_{i,k'}, h_{j,k}>        (spec "Definition")
    THR_{j,k} = A_j * s_{j,k}

Why this is the right quantity: ``d log pi(y|h) / dW = g h^T`` for the lm_head weight W, and
``<g_i h_i^T, g_j h_j^T>_F = <g_i, g_j><h_i, h_j>``. So ``THR_{j,k}`` is the first-order change of
the correct responses' summed log-likelihood caused by token (j, k)'s policy-gradient term, through
the lm_head weight (rows restricted to V*). Positive: the token's update helps the correct
responses; negative: it hurts them. (With sampling temperature tau the logits are ``W h / tau``
and the gradient inner product is ``THR / tau^2``: a positive constant that changes no sign and,
since tau_s scales the same way, no dominance decision. The tests check both identities.)

Pieces, in the order the trainer uses them (all math is pure and importable; no hidden state):

* :func:`correct_mask` - the anchor set P (spec "Symbols").
* :func:`group_vocab` - V* per group and each token's index in it.
* :class:`ThrCollector` - fills fp32 buffers from the old-policy forward, micro-batch by
  micro-batch (no extra forward pass), then calls :func:`token_hidden_reward`.
* :func:`token_hidden_reward` - the scores s and THR (matrix "sum first" form).
* :func:`thr_token_advantages` - the reweighted token advantages A~ (spec "Reweighting").
* :func:`steering_p` - the p schedule.

Everything here runs under ``torch.no_grad`` in fp32 and is computed once per rollout batch; the
resulting token advantages stay fixed across PPO mini-epochs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "GroupVocab",
    "ThrCollector",
    "ThrScores",
    "correct_mask",
    "dominant_tokens",
    "group_vocab",
    "steering_p",
    "thr_token_advantages",
    "token_hidden_reward",
]

ThrMode = Literal["reweight", "mask"]
ThrThreshold = Literal["nthr", "percentile"]
PSchedule = Literal["constant", "linear"]


# --------------------------------------------------------------------------------------------
# Anchor set P
# --------------------------------------------------------------------------------------------
def correct_mask(rewards: Tensor, group_ids: Tensor, *, threshold: float | None = None) -> Tensor:
    """Which responses are "correct", i.e. the anchor set P of their group (spec "Symbols").

    Default rule (``threshold=None``): a response is correct when its reward equals its group's
    maximum AND that maximum is above the group's minimum. So a group whose rewards are all equal
    has no correct response (and gets THR = 0), and for binary 0/1 rewards this is exactly
    ``reward == 1`` in every group that has both outcomes. With a ``threshold``, correct means
    ``reward >= threshold`` (``threshold=1.0`` gives ``reward == 1`` for binary rewards). NaN
    rewards (failed reward functions) are never correct and are ignored for the group max/min.

    Args:
        rewards: ``[N]`` float, one scalar reward per response.
        group_ids: ``[N]`` int, the prompt group of each response (any integer labels).
        threshold: optional absolute correctness threshold.

    Returns:
        ``[N]`` bool.

    >>> correct_mask(torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 1, 1])).tolist()
    [True, False, True, False, False]
    >>> correct_mask(torch.tensor([0.2, 0.7, 0.7, 0.5]), torch.tensor([0, 0, 0, 0])).tolist()
    [False, True, True, False]
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"correct_mask: rewards and group_ids must both be [N]; got {tuple(rewards.shape)} and "
            f"{tuple(group_ids.shape)}. Pass one scalar reward per response (sum reward functions first)."
        )
    r = rewards.float()
    finite = torch.isfinite(r)
    if threshold is not None:
        return finite & (r >= threshold)
    _, inv = torch.unique(group_ids, return_inverse=True)  # [N] dense group index
    n_groups = int(inv.max().item()) + 1 if inv.numel() else 0
    neg_inf = torch.full((n_groups,), -math.inf, device=r.device)
    pos_inf = torch.full((n_groups,), math.inf, device=r.device)
    g_max = neg_inf.scatter_reduce(0, inv[finite], r[finite], reduce="amax")  # [n_groups]
    g_min = pos_inf.scatter_reduce(0, inv[finite], r[finite], reduce="amin")  # [n_groups]
    return finite & (r == g_max[inv]) & (g_max[inv] > g_min[inv])


# --------------------------------------------------------------------------------------------
# THR scores (pure)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ThrScores:
    """THR of one rollout batch (all tensors fp32 on the device the inputs were on).

    Attributes:
        s: ``[N, T]`` hidden-reward scores s_{j,k} (after ``len_norm`` / ``exclude_self`` when on);
            0 at non-completion positions and in inactive groups.
        thr: ``[N, T]`` THR_{j,k} = A_j * s_{j,k}; 0 where ``s`` is 0.
        active: ``[N]`` bool, the row's group has at least one correct and one incorrect response
            (only those groups carry THR, spec "Definition").
        mean_s: ``[N]`` mean of s over the row's completion tokens (0 for an empty row) - the
            per-response input of the NTHR threshold tau_s.
        anchor_min: ``[N]`` for each row, its group's ``min_{i in P} mean_k s_{i,k}`` (0 for
            inactive groups); ``tau_s = max(0, beta * anchor_min)`` (spec "Reweighting").
        time_s: wall seconds spent computing THR (for the ``thr/time_s`` metric).
    """

    s: Tensor
    thr: Tensor
    active: Tensor
    mean_s: Tensor
    anchor_min: Tensor
    time_s: float = 0.0


def _check_common(token_mask: Tensor, advantages: Tensor, correct: Tensor, group_ids: Tensor) -> tuple[int, int]:
    if token_mask.dim() != 2:
        raise ValueError(f"token_mask must be [N, T]; got shape {tuple(token_mask.shape)}.")
    n, t = token_mask.shape
    if advantages.shape not in ((n,), (n, t)):
        raise ValueError(
            f"advantages must be [N] (one per response) or [N, T] (per token, e.g. GAE) with N={n}, T={t}; "
            f"got {tuple(advantages.shape)}."
        )
    for name, x in (("correct", correct), ("group_ids", group_ids)):
        if x.shape != (n,):
            raise ValueError(f"{name} must be [N] with N={n} (one entry per response); got {tuple(x.shape)}.")
    if correct.dtype != torch.bool:
        raise ValueError(
            f"correct must be a bool tensor; got {correct.dtype}. Build it with correct_mask(rewards, group_ids)."
        )
    return n, t


def _broadcast_adv(advantages: Tensor, t: int) -> Tensor:
    """``[N]`` or ``[N, T]`` -> ``[N, T]`` view."""
    return advantages[:, None].expand(-1, t) if advantages.dim() == 1 else advantages


@torch.no_grad()
def token_hidden_reward(
    hidden: Tensor,
    vstar_probs: Tensor,
    vstar_index: Tensor,
    token_mask: Tensor,
    advantages: Tensor,
    correct: Tensor,
    group_ids: Tensor,
    *,
    len_norm: bool = False,
    exclude_self: bool = False,
) -> ThrScores:
    """Token Hidden Reward of every completion token (spec "Definition", matrix form).

    Per group, with G the rows ``g_{j,k}`` and H the rows ``h_{j,k}`` of all completion tokens, and
    ``G_P, H_P`` those of the correct responses only ("sum first": the P-sum is folded into one
    ``|V*| x d`` matrix, so the cost is linear, not quadratic, in the number of tokens):

        M = G_P^T H_P                       in R^{|V*| x d}
        s = rowsum((G M) * H)               s_{j,k} = g_{j,k}^T M h_{j,k}
        THR = A_j * s

    ``len_norm`` (SWITCH ``thr.len_norm``) multiplies s_{j,k} by 1/|y_j|. ``exclude_self`` (SWITCH
    ``thr.exclude_self``) uses ``M - G_j^T H_j`` for a correct response j, i.e. leaves j out of its
    own anchor sum. Groups with no correct or only correct responses get s = THR = 0.

    Args:
        hidden: ``[N, T, d]`` final post-norm hidden states at the positions that PREDICT each
            completion token (``hidden_states[-1][:, P-1:-1]``, so that ``lm_head(hidden) = logits``).
        vstar_probs: ``[N, T, K]`` old-policy probabilities (same temperature as the loss) at the
            ids of the row's group V*, in V*'s sorted order; 0 beyond that group's |V*| (K is the
            largest |V*|). Not renormalised.
        vstar_index: ``[N, T]`` int, index of the sampled token y_{j,k} inside its group's V*
            (any value where ``token_mask`` is 0).
        token_mask: ``[N, T]`` 1 for completion tokens the policy generated, 0 for padding and
            environment/tool tokens. Only masked-in tokens are anchors or get scores.
        advantages: ``[N]`` response advantages A_j (or ``[N, T]`` per-token advantages).
        correct: ``[N]`` bool, the anchor set P (see :func:`correct_mask`).
        group_ids: ``[N]`` int, prompt group of each response (a group may be scattered).
        len_norm: multiply s_{j,k} by ``1/|y_j|``.
        exclude_self: leave a correct response out of its own anchor sum.

    Returns:
        :class:`ThrScores` (fp32, same device as ``hidden``).

    Example: one group, one token each, d = 1, V* = {a, b}. Response 0 (correct, A=1) sampled a,
    response 1 (incorrect, A=-1) sampled b, both with pi = (.5, .5): g_0 = (.5, -.5),
    g_1 = (-.5, .5), h_0 = 1, h_1 = 2, so s_0 = <g_0,g_0><h_0,h_0> = .5 and
    s_1 = <g_0,g_1><h_0,h_1> = -.5 * 2 = -1: response 1's token fights the correct one, and with
    A_1 = -1 pushing it down helps (THR = +1).

    >>> sc = token_hidden_reward(
    ...     hidden=torch.tensor([[[1.0]], [[2.0]]]), vstar_probs=torch.full((2, 1, 2), 0.5),
    ...     vstar_index=torch.tensor([[0], [1]]), token_mask=torch.ones(2, 1),
    ...     advantages=torch.tensor([1.0, -1.0]), correct=torch.tensor([True, False]),
    ...     group_ids=torch.tensor([0, 0]))
    >>> sc.s.tolist(), sc.thr.tolist()
    ([[0.5], [-1.0]], [[0.5], [1.0]])
    """
    t0 = time.perf_counter()
    n, t = _check_common(token_mask, advantages, correct, group_ids)
    if hidden.dim() != 3 or hidden.shape[:2] != (n, t):
        raise ValueError(f"hidden must be [N, T, d] with N={n}, T={t}; got {tuple(hidden.shape)}.")
    if vstar_probs.dim() != 3 or vstar_probs.shape[:2] != (n, t):
        raise ValueError(f"vstar_probs must be [N, T, K] with N={n}, T={t}; got {tuple(vstar_probs.shape)}.")
    if vstar_index.shape != (n, t):
        raise ValueError(f"vstar_index must be [N, T] with N={n}, T={t}; got {tuple(vstar_index.shape)}.")
    k_max = vstar_probs.shape[-1]
    dev = hidden.device
    mask = token_mask.to(device=dev).bool()  # [N, T]
    idx = torch.where(mask, vstar_index.to(dev).long(), torch.zeros((), dtype=torch.long, device=dev))  # [N, T]
    if mask.any() and (idx[mask].min() < 0 or idx[mask].max() >= k_max):
        raise ValueError(
            f"vstar_index has values outside [0, K={k_max}) at completion tokens: every sampled token must be in "
            f"its group's V*. Build vstar_index and vstar_probs with group_vocab() on the same completion ids."
        )
    maskf = mask.float()
    h = hidden.float() * maskf[..., None]  # [N, T, d], zero rows at padding
    # g = onehot(y) - pi, restricted to V* and zeroed at padding.                         [N, T, K]
    g = -vstar_probs.to(dev).float()
    g.scatter_add_(-1, idx[..., None], torch.ones_like(idx[..., None], dtype=g.dtype))
    g = g * maskf[..., None]
    corr = correct.to(dev)
    gid = group_ids.to(dev)

    s = torch.zeros(n, t, device=dev)  # [N, T]
    active = torch.zeros(n, dtype=torch.bool, device=dev)
    for gval in torch.unique(gid):
        rows = (gid == gval).nonzero(as_tuple=True)[0]  # [n_g]
        p_rows = rows[corr[rows]]  # [n_P]
        if p_rows.numel() == 0 or p_rows.numel() == rows.numel():
            continue  # no contrast in this group: THR = 0 (spec)
        active[rows] = True
        g_p, h_p = g[p_rows].flatten(0, 1), h[p_rows].flatten(0, 1)  # [n_P*T, K], [n_P*T, d]
        m = g_p.T @ h_p  # [K, d]   M = G_P^T H_P
        s[rows] = ((g[rows] @ m) * h[rows]).sum(-1)  # [n_g, T]   s = rowsum((G M) * H)
        if exclude_self:
            for j in p_rows.tolist():
                m_j = m - g[j].T @ h[j]  # [K, d]   anchors without response j
                s[j] = ((g[j] @ m_j) * h[j]).sum(-1)  # [T]
    if len_norm:
        lengths = maskf.sum(-1).clamp(min=1.0)  # [N]   |y_j|
        s = s / lengths[:, None]
    s = s * maskf * active[:, None].float()

    n_tok = maskf.sum(-1)  # [N]
    mean_s = s.sum(-1) / n_tok.clamp(min=1.0)  # [N]   mean_k s_{j,k}
    # Per row: min over its group's anchors of mean_k s_{i,k} (the NTHR tau input).
    anchor_min = torch.zeros(n, device=dev)
    for gval in torch.unique(gid[active]):
        rows = (gid == gval).nonzero(as_tuple=True)[0]
        anchor_min[rows] = mean_s[rows[corr[rows]]].min()
    thr = _broadcast_adv(advantages.to(dev).float(), t) * s  # [N, T]
    return ThrScores(s=s, thr=thr, active=active, mean_s=mean_s, anchor_min=anchor_min, time_s=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# Token weighting (spec "Reweighting")
# --------------------------------------------------------------------------------------------
def _dominant(
    scores: ThrScores, mask: Tensor, gid: Tensor, *, threshold: ThrThreshold, beta: float, percentile: float
) -> tuple[Tensor, list[float]]:
    """Dominant-token mask ``[N, T]`` and the threshold of every active group (spec "Reweighting")."""
    n, t = mask.shape
    s, thr, active = scores.s, scores.thr, scores.active
    taus: list[float] = []
    if threshold == "nthr":
        tau_row = (beta * scores.anchor_min).clamp(min=0.0)  # [N]   tau_s of the row's group
        dominant = s.abs() > tau_row[:, None]  # [N, T]
        taus = [float(tau_row[gid == gv][0]) for gv in torch.unique(gid[active])]
    else:
        dominant = torch.zeros(n, t, dtype=torch.bool, device=s.device)
        for gv in torch.unique(gid[active]):
            sel = (gid == gv)[:, None] & mask  # [N, T]   this group's completion tokens
            q = torch.quantile(thr[sel].abs(), percentile)
            dominant |= sel & (thr.abs() > q)
            taus.append(float(q))
    return dominant & mask & active[:, None], taus


@torch.no_grad()
def dominant_tokens(
    scores: ThrScores,
    token_mask: Tensor,
    group_ids: Tensor,
    *,
    threshold: ThrThreshold = "nthr",
    beta: float = 1.0,
    percentile: float = 0.8,
) -> Tensor:
    """``[N, T]`` bool: the tokens :func:`thr_token_advantages` reweights (same rule, for analysis
    and :func:`llmrl.algorithms.thr_html.thr_inspect_records`).

    >>> sc = token_hidden_reward(torch.tensor([[[1.0]], [[2.0]]]), torch.full((2, 1, 2), 0.5),
    ...     torch.tensor([[0], [1]]), torch.ones(2, 1), torch.tensor([1.0, -1.0]),
    ...     torch.tensor([True, False]), torch.tensor([0, 0]))
    >>> dominant_tokens(sc, torch.ones(2, 1), torch.tensor([0, 0])).tolist()
    [[False], [True]]
    """
    if threshold not in ("nthr", "percentile"):
        raise ValueError(f"thr threshold={threshold!r} is unknown; use 'nthr' or 'percentile'.")
    dev = scores.s.device
    mask = token_mask.to(dev).bool()
    return _dominant(scores, mask, group_ids.to(dev), threshold=threshold, beta=beta, percentile=percentile)[0]


@torch.no_grad()
def thr_token_advantages(
    advantages: Tensor,
    scores: ThrScores,
    token_mask: Tensor,
    group_ids: Tensor,
    correct: Tensor,
    *,
    p: float,
    mode: ThrMode = "reweight",
    threshold: ThrThreshold = "nthr",
    beta: float = 1.0,
    percentile: float = 0.8,
) -> tuple[Tensor, dict[str, float]]:
    """Token advantages A~ reweighted by THR (spec "Reweighting"); they replace the broadcast
    advantage in the unchanged clipped surrogate (or GSPO-token).

        tau_s    = max(0, beta * min_{i in P} mean_k s_{i,k})      per group ("nthr")
        dominant = |s_{j,k}| > tau_s
        A~_{j,k} = A_j * (1 + p * sign(THR_{j,k}))                 on dominant tokens
                 = A_j (mode "reweight") or 0 (mode "mask")        elsewhere

    With ``threshold="percentile"`` a token is dominant when its |THR| is above the ``percentile``
    quantile of |THR| over its group's completion tokens (per group, like tau_s). Only groups with
    both correct and incorrect responses have dominant tokens, so in mode "mask" inactive groups
    get 0 advantage everywhere. Because ``|p| < 1``, ``1 + p * sign`` is in (0, 2): reweighting
    never flips an advantage's sign. With ``p = 0`` and mode "reweight" the result is bitwise the
    broadcast advantage, so the loss equals plain GRPO (spec).

    Args:
        advantages: ``[N]`` response advantages A_j, or ``[N, T]`` per-token advantages.
        scores: :func:`token_hidden_reward` output for the same batch.
        token_mask: ``[N, T]`` completion-token mask.
        group_ids: ``[N]`` prompt group of each response.
        correct: ``[N]`` bool anchor set (used for consistency checks; tau comes from ``scores``).
        p: steering strength in (-1, 1); p > 0 exploitation, p < 0 exploration.
        mode: "reweight" (default) keeps A_j on non-dominant tokens, "mask" zeroes them.
        threshold: "nthr" (default, tau_s above) or "percentile".
        beta: scale of tau_s (default 1.0).
        percentile: quantile in [0, 1) for ``threshold="percentile"``.

    Returns:
        ``(adv_tok [N, T], stats)``: ``adv_tok`` has the dtype of ``advantages`` (padding positions
        keep A_j in "reweight" mode and are 0 in "mask" mode; the loss masks them anyway); ``stats``
        holds floats ``thr/dominant_frac``, ``thr/pos_frac``, ``thr/neg_frac`` (fractions of
        completion tokens), ``thr/tau`` (mean threshold over active groups, 0 if none),
        ``thr/abs_mean`` (mean |THR| over completion tokens), ``thr/time_s``.

    Example (the doctest of :func:`token_hidden_reward`): s = (.5, -1), anchor mean .5, so
    tau_s = .5; only token 1 is dominant (|-1| > .5) and THR_1 = +1, so
    A~_1 = -1 * (1 + .5 * 1) = -1.5 while A~_0 stays 1.

    >>> adv, corr, gid, mask = torch.tensor([1.0, -1.0]), torch.tensor([True, False]), torch.tensor([0, 0]), torch.ones(2, 1)
    >>> sc = token_hidden_reward(torch.tensor([[[1.0]], [[2.0]]]), torch.full((2, 1, 2), 0.5),
    ...                          torch.tensor([[0], [1]]), mask, adv, corr, gid)
    >>> a, stats = thr_token_advantages(adv, sc, mask, gid, corr, p=0.5)
    >>> a.tolist(), stats["thr/dominant_frac"], stats["thr/tau"]
    ([[1.0], [-1.5]], 0.5, 0.5)
    """
    n, t = _check_common(token_mask, advantages, correct, group_ids)
    if not -1.0 < p < 1.0:
        raise ValueError(
            f"thr p={p} is outside (-1, 1): with |p| >= 1 a token's advantage would vanish or flip sign. "
            f"Use p in (-1, 1): p > 0 for exploitation, p < 0 for exploration."
        )
    if mode not in ("reweight", "mask"):
        raise ValueError(f"thr mode={mode!r} is unknown; use 'reweight' (keep A_j off-dominant) or 'mask'.")
    if threshold not in ("nthr", "percentile"):
        raise ValueError(f"thr threshold={threshold!r} is unknown; use 'nthr' or 'percentile'.")
    if threshold == "percentile" and not 0.0 <= percentile < 1.0:
        raise ValueError(f"thr percentile={percentile} must be in [0, 1) (e.g. 0.8 keeps the top 20% |THR|).")
    if scores.s.shape != (n, t):
        raise ValueError(
            f"scores are for a batch of shape {tuple(scores.s.shape)} but token_mask is {(n, t)}; "
            f"compute the scores and the token advantages on the same rollout batch."
        )
    dev = scores.s.device
    mask = token_mask.to(dev).bool()  # [N, T]
    thr = scores.thr
    dominant, taus = _dominant(scores, mask, group_ids.to(dev), threshold=threshold, beta=beta, percentile=percentile)

    adv = _broadcast_adv(advantages.to(dev), t)  # [N, T]
    sign = torch.sign(thr)  # [N, T] in {-1, 0, 1}
    off = 1.0 if mode == "reweight" else 0.0
    weight = torch.where(dominant, 1.0 + p * sign, torch.full_like(sign, off))  # [N, T]
    adv_tok = (adv * weight).to(advantages.dtype)  # A * 1.0 is exact, so p = 0 is bitwise GRPO

    n_tok = max(int(mask.sum()), 1)
    stats = {
        "thr/dominant_frac": float(dominant.sum()) / n_tok,
        "thr/pos_frac": float(((thr > 0) & mask).sum()) / n_tok,
        "thr/neg_frac": float(((thr < 0) & mask).sum()) / n_tok,
        "thr/tau": sum(taus) / len(taus) if taus else 0.0,
        "thr/abs_mean": float(thr.abs()[mask].sum()) / n_tok,
        "thr/time_s": float(scores.time_s),
    }
    return adv_tok, stats


def steering_p(schedule: PSchedule, *, p_start: float, p_end: float, step: int, total_steps: int) -> float:
    """The THR steering strength p at ``step`` (0-based) of ``total_steps``.

    ``"constant"`` returns ``p_start``; ``"linear"`` goes from ``p_start`` at step 0 to ``p_end`` at
    the last step (``total_steps - 1``) and stays there. p is a plain config value because the best
    sign differs by model family (spec "Reference results").

    >>> steering_p("linear", p_start=0.0, p_end=0.2, step=5, total_steps=11)
    0.1
    >>> steering_p("constant", p_start=-0.1, p_end=0.3, step=7, total_steps=10)
    -0.1
    """
    for name, v in (("p_start", p_start), ("p_end", p_end)):
        if not -1.0 < v < 1.0:
            raise ValueError(f"thr {name}={v} is outside (-1, 1); THR's p must keep 1 + p*sign(THR) positive.")
    if schedule == "constant":
        return float(p_start)
    if schedule == "linear":
        if total_steps < 1:
            raise ValueError(f"total_steps={total_steps} must be >= 1 for a linear p schedule.")
        frac = min(max(step, 0) / max(total_steps - 1, 1), 1.0)
        return float(p_start + (p_end - p_start) * frac)
    raise ValueError(f"thr p schedule {schedule!r} is unknown; use 'constant' or 'linear'.")


# --------------------------------------------------------------------------------------------
# Bridge from the old-policy forward (micro-batched)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupVocab:
    """V* of every group of a rollout batch (spec "Symbols": sorted unique sampled ids).

    Attributes:
        ids: ``[n_groups, K]`` long, each group's V* sorted ascending, padded with 0 after ``sizes``.
        valid: ``[n_groups, K]`` bool, True on the first ``sizes[g]`` entries.
        sizes: ``[n_groups]`` long, |V*| per group.
        row_group: ``[N]`` long, dense group index (row of ``ids``) of every response.
        index: ``[N, T]`` long, index of ``completion_ids[j, k]`` in its group's V* (0 off-mask).
        token_mask: ``[N, T]`` bool, the completion-token mask V* was built from.
        group_ids: ``[N]`` the caller's group labels.
    """

    ids: Tensor
    valid: Tensor
    sizes: Tensor
    row_group: Tensor
    index: Tensor
    token_mask: Tensor
    group_ids: Tensor


@torch.no_grad()
def group_vocab(completion_ids: Tensor, token_mask: Tensor, group_ids: Tensor) -> GroupVocab:
    """Build V* (sorted unique sampled token ids, per group) and each token's index in it.

    Only masked-in tokens (the ones the policy generated) enter V*; padding and tool-output tokens
    do not.

    Args:
        completion_ids: ``[N, T]`` long, completion token ids (padding: any id).
        token_mask: ``[N, T]`` 1 on policy-generated completion tokens.
        group_ids: ``[N]`` int prompt group of each response.

    >>> v = group_vocab(torch.tensor([[5, 3, 0], [3, 9, 9], [7, 7, 7]]),
    ...                 torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]]), torch.tensor([4, 4, 2]))
    >>> v.ids.tolist(), v.sizes.tolist(), v.row_group.tolist(), v.index.tolist()
    ([[7, 0, 0], [3, 5, 9]], [1, 3], [1, 1, 0], [[1, 0, 0], [0, 2, 2], [0, 0, 0]])
    """
    if completion_ids.dim() != 2 or token_mask.shape != completion_ids.shape:
        raise ValueError(
            f"completion_ids and token_mask must both be [N, T]; got {tuple(completion_ids.shape)} and "
            f"{tuple(token_mask.shape)}."
        )
    if group_ids.shape != completion_ids.shape[:1]:
        raise ValueError(f"group_ids must be [N={completion_ids.shape[0]}]; got {tuple(group_ids.shape)}.")
    mask = token_mask.bool()
    ids = completion_ids.long()
    _, row_group = torch.unique(group_ids, return_inverse=True)  # [N]
    n_groups = int(row_group.max().item()) + 1 if row_group.numel() else 0
    vocabs = [torch.unique(ids[row_group == gi][mask[row_group == gi]]) for gi in range(n_groups)]  # sorted
    sizes = torch.tensor([v.numel() for v in vocabs], dtype=torch.long, device=ids.device)
    k_max = max(int(sizes.max()) if n_groups else 0, 1)
    table = torch.zeros(n_groups, k_max, dtype=torch.long, device=ids.device)
    index = torch.zeros_like(ids)
    for gi, v in enumerate(vocabs):
        table[gi, : v.numel()] = v
        rows = row_group == gi
        pos = torch.searchsorted(v, ids[rows]).clamp(max=max(v.numel() - 1, 0))  # [n_g, T]
        index[rows] = torch.where(mask[rows], pos, torch.zeros_like(pos))
    valid = torch.arange(k_max, device=ids.device)[None, :] < sizes[:, None]
    return GroupVocab(ids=table, valid=valid, sizes=sizes, row_group=row_group, index=index,
                      token_mask=mask, group_ids=group_ids)


class ThrCollector:
    """Collects what THR needs from the old-policy forward, one micro-batch at a time.

    The trainer's old-policy forward already computes (temperature-scaled) logits for the old
    log-probs; THR only needs, in addition, the final hidden states of the same forward
    (``output_hidden_states=-1`` keeps only that one in transformers >= 5). A group's responses
    may be split across micro-batches, and the anchor matrix M needs all of a group's correct
    responses, so the collector keeps per-row fp32 buffers (hidden ``[N, T, d]`` and probabilities
    on V* ``[N, T, K]``) and computes the scores once every row is in.

    >>> ids, mask, gid = torch.tensor([[1, 2], [2, 0]]), torch.ones(2, 2), torch.tensor([0, 0])
    >>> col = ThrCollector(group_vocab(ids, mask, gid))
    >>> col.add(torch.tensor([0]), torch.zeros(1, 2, 3), torch.ones(1, 2, 4))  # micro-batch 1: row 0
    >>> col.add(torch.tensor([1]), torch.zeros(1, 2, 3), torch.ones(1, 2, 4))  # micro-batch 2: row 1
    >>> sc = col.scores(torch.tensor([1.0, -1.0]), torch.tensor([True, False]))
    >>> tuple(sc.thr.shape), bool(sc.active.all())
    ((2, 2), True)
    """

    def __init__(self, vocab: GroupVocab, *, device: torch.device | str | None = None) -> None:
        self.vocab = vocab
        self.device = torch.device(device) if device is not None else None
        self._hidden: Tensor | None = None  # [N, T, d] fp32
        self._probs: Tensor | None = None  # [N, T, K] fp32
        n = vocab.token_mask.shape[0]
        self._filled = torch.zeros(n, dtype=torch.bool)
        self._time_s = 0.0

    @torch.no_grad()
    def add(self, rows: Tensor, logits: Tensor, hidden: Tensor) -> None:
        """Store one micro-batch.

        Args:
            rows: ``[n]`` long, the batch rows (response indices 0..N-1) of this micro-batch.
            logits: ``[n, T', V]`` logits at completion-predicting positions, ALREADY divided by the
                sampling temperature (the same tensor the old log-probs come from). ``T' <= T``:
                a micro-batch trimmed to its own longest completion is fine.
            hidden: ``[n, T', d]`` ``hidden_states[-1]`` sliced exactly like ``logits``.
        """
        t0 = time.perf_counter()
        n_all, t_all = self.vocab.token_mask.shape
        rows = rows.long().cpu()
        if rows.dim() != 1 or logits.dim() != 3 or hidden.dim() != 3:
            raise ValueError(
                f"ThrCollector.add expects rows [n], logits [n, T, V], hidden [n, T, d]; got {tuple(rows.shape)}, "
                f"{tuple(logits.shape)}, {tuple(hidden.shape)}."
            )
        n, t_mb = logits.shape[:2]
        if rows.numel() != n or hidden.shape[:2] != (n, t_mb):
            raise ValueError(
                f"rows, logits and hidden disagree on the micro-batch shape: rows {tuple(rows.shape)}, logits "
                f"{tuple(logits.shape)}, hidden {tuple(hidden.shape)}. Slice hidden_states[-1] exactly like the logits."
            )
        if n and (rows.min() < 0 or rows.max() >= n_all):
            raise ValueError(f"rows must index the rollout batch of N={n_all} responses; got {rows.tolist()}.")
        if t_mb > t_all or bool(self.vocab.token_mask[rows.to(self.vocab.token_mask.device), t_mb:].any()):
            raise ValueError(
                f"micro-batch covers {t_mb} completion positions but these rows have completion tokens up to "
                f"T={t_all}; pass logits/hidden for every completion position (slice [:, P-1:-1])."
            )
        dev = self.device or hidden.device
        if self._hidden is None:
            k = self.vocab.ids.shape[1]
            self._hidden = torch.zeros(n_all, t_all, hidden.shape[-1], device=dev)
            self._probs = torch.zeros(n_all, t_all, k, device=dev)
        assert self._probs is not None
        # p(v) = exp(logit_v - logsumexp(logits)) at v in the row's V*: gathers K of V logits, and
        # the fp32 copy needed for logsumexp is made one row at a time to bound peak memory.
        rg = self.vocab.row_group.to(logits.device)[rows.to(logits.device)]  # [n]
        vids = self.vocab.ids.to(logits.device)[rg]  # [n, K]
        valid = self.vocab.valid.to(logits.device)[rg]  # [n, K]
        lse = torch.stack([torch.logsumexp(logits[i].float(), dim=-1) for i in range(n)]) if n else logits.new_zeros(0, t_mb)
        picked = logits.gather(-1, vids[:, None, :].expand(n, t_mb, vids.shape[-1])).float()  # [n, T', K]
        probs = torch.exp(picked - lse[..., None]) * valid[:, None, :]  # [n, T', K]
        rd = rows.to(dev)
        self._probs[rd] = 0.0
        self._hidden[rd] = 0.0
        self._probs[rd, :t_mb] = probs.to(dev)
        self._hidden[rd, :t_mb] = hidden.detach().float().to(dev)
        self._filled[rows] = True
        self._time_s += time.perf_counter() - t0

    def scores(self, advantages: Tensor, correct: Tensor, *, len_norm: bool = False, exclude_self: bool = False) -> ThrScores:
        """THR of the whole batch once every row was added (see :func:`token_hidden_reward`)."""
        if self._hidden is None or not bool(self._filled.all()):
            missing = (~self._filled).nonzero(as_tuple=True)[0].tolist()
            raise ValueError(
                f"ThrCollector.scores: rows {missing[:10]}{'...' if len(missing) > 10 else ''} were never added; "
                f"call add(rows, logits, hidden) for every micro-batch of the old-policy forward first."
            )
        assert self._probs is not None
        dev = self._hidden.device
        sc = token_hidden_reward(
            self._hidden, self._probs, self.vocab.index.to(dev), self.vocab.token_mask.to(dev),
            advantages.to(dev), correct.to(dev), self.vocab.group_ids.to(dev),
            len_norm=len_norm, exclude_self=exclude_self,
        )
        return replace(sc, time_s=sc.time_s + self._time_s)
