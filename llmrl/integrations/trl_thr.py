"""THR token weighting for users who stay on TRL: a ``trl.GRPOTrainer`` subclass.

Same math as llmrl's own trainer (:mod:`llmrl.algorithms.thr`, docs/thr.md):
after TRL generates, scores and computes its per-sequence advantages, this trainer replaces them with
THR-reweighted per-token advantages ``[B, T]`` (TRL's loss accepts ``(B, T)`` advantages as is).

Cost, and why llmrl has its own loop: TRL's fused lm_head returns log-probs only and discards the
hidden states THR needs, so this adapter runs ONE extra no-grad forward per generation batch (the
model's plain forward with ``output_hidden_states``). llmrl's trainer takes both from the
old-policy forward it already runs.

Supported: exactly ``trl==1.16.0``, the ``llmrl[trl]`` extra (this overrides the private
``GRPOTrainer._generate_and_score_completions`` / ``_calculate_rewards``), text-only models,
token-level importance sampling with loss types grpo / bnpo / dr_grpo / dapo / cispo / sapo.

Example::

    from llmrl.integrations.trl_thr import ThrGRPOTrainer, ThrOptions
    trainer = ThrGRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(...),
                             train_dataset=ds, processing_class=tok, thr=ThrOptions(p=0.1))
    trainer.train()     # logs thr/dominant_frac, thr/pos_frac, thr/neg_frac, thr/tau, thr/abs_mean, thr/time_s
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from llmrl.algorithms.thr import (
    ThrCollector,
    ThrMode,
    ThrThreshold,
    correct_mask,
    group_vocab,
    steering_p,
    thr_token_advantages,
)

#: The TRL releases this adapter is tested with; pyproject's ``trl`` extra pins the same
#: (tests/test_dependencies.py checks they agree).
SUPPORTED_TRL_VERSIONS = ("1.16.0",)
SUPPORTED_TRL_VERSION = SUPPORTED_TRL_VERSIONS[-1]
SUPPORTED_TRL = " or ".join(f"trl=={v}" for v in SUPPORTED_TRL_VERSIONS)


def check_trl_version(version: str) -> None:
    """Raise ImportError naming the supported range unless ``version`` is a tested TRL release."""
    if version not in SUPPORTED_TRL_VERSIONS:
        raise ImportError(
            f"llmrl.integrations.trl_thr supports {SUPPORTED_TRL} only, found trl=={version}: it overrides "
            "private GRPOTrainer methods whose contract changes between TRL releases. Install "
            f"`pip install 'llmrl[trl]'` ({SUPPORTED_TRL}), or use llmrl's own trainer "
            "(algorithm.token_weighting in the recipe, docs/thr.md).")


try:
    import trl
except ImportError as exc:
    raise ImportError(f"llmrl.integrations.trl_thr needs TRL: `pip install 'llmrl[trl]'` ({SUPPORTED_TRL}).") from exc
check_trl_version(trl.__version__)

from trl import GRPOTrainer  # noqa: E402  (after the version check, on purpose)

__all__ = ["SUPPORTED_TRL", "SUPPORTED_TRL_VERSION", "SUPPORTED_TRL_VERSIONS", "ThrGRPOTrainer", "ThrOptions",
           "check_trl_version"]

_TOKEN_LEVEL_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo")


@dataclass(frozen=True)
class ThrOptions:
    """THR settings (the names of llmrl's recipe ``thr`` section).

    Attributes:
        p: steering strength in (-1, 1); > 0 exploitation, < 0 exploration; 0 with "reweight" is plain GRPO.
        p_end: if set, p goes linearly from ``p`` at step 0 to ``p_end`` at the last step.
        mode: "reweight" (non-dominant tokens keep A_j) or "mask" (they get 0).
        threshold: "nthr" (tau_s = max(0, beta * min_{i in P} mean_k s_{i,k})) or "percentile".
        beta: tau_s scale. percentile: quantile of |THR| for ``threshold="percentile"``.
        len_norm, exclude_self: the spec's switches.
        correct_threshold: reward >= this is correct; None: reward == group max > group min.
    """

    p: float = 0.0
    p_end: float | None = None
    mode: ThrMode = "reweight"
    threshold: ThrThreshold = "nthr"
    beta: float = 1.0
    percentile: float = 0.8
    len_norm: bool = False
    exclude_self: bool = False
    correct_threshold: float | None = None

    def __post_init__(self) -> None:
        errors = []
        for name in ("p", "p_end"):
            v = getattr(self, name)
            if v is not None and not -1.0 < v < 1.0:
                errors.append(f"thr.{name}={v} must be in (-1, 1) so that 1 + p*sign(THR) stays positive")
        if self.mode not in ("reweight", "mask"):
            errors.append(f"thr.mode={self.mode!r} must be 'reweight' or 'mask'")
        if self.threshold not in ("nthr", "percentile"):
            errors.append(f"thr.threshold={self.threshold!r} must be 'nthr' or 'percentile'")
        if not 0.0 <= self.percentile < 1.0:
            errors.append(f"thr.percentile={self.percentile} must be in [0, 1)")
        if errors:
            raise ValueError("Invalid THR options:\n  - " + "\n  - ".join(errors))


class ThrGRPOTrainer(GRPOTrainer):
    """``trl.GRPOTrainer`` whose advantages are THR-reweighted per token (spec "Reweighting").

    Takes every ``GRPOTrainer`` argument plus ``thr: ThrOptions``. Groups must be whole on each
    process (TRL's sampler repeats each prompt ``num_generations`` times consecutively; the local
    batch must be a multiple of ``num_generations``).
    """

    def __init__(self, *args: Any, thr: ThrOptions | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.thr = thr or ThrOptions()
        if self.importance_sampling_level != "token" or self.loss_type not in _TOKEN_LEVEL_LOSSES:
            raise ValueError(
                f"THR needs a token-level loss: got loss_type={self.loss_type!r}, importance_sampling_level="
                f"{self.importance_sampling_level!r}. Sequence-level ratios cannot carry token weights (spec); use "
                f"importance_sampling_level='token' and loss_type in {_TOKEN_LEVEL_LOSSES}."
            )
        self._thr_rewards: torch.Tensor | None = None

    @torch.no_grad()
    def _thr_forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Temperature-scaled logits ``[n, T, V]`` and ``hidden_states[-1]`` ``[n, T, d]`` at the positions
        predicting the last ``t`` tokens (the completion), from the model's plain (unfused) forward."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                         logits_to_keep=t + 1, use_cache=False)
        logits = out.logits[:, :-1] / self.temperature  # [n, T, V]
        hidden = out.hidden_states[-1][:, -t - 1 : -1]  # [n, T, d] post-norm lm_head input
        return logits, hidden

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[override]
        # Keep the gathered per-function rewards: the anchor set P is defined on rewards (spec "Symbols").
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._thr_rewards = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):  # type: ignore[override]
        output = super()._generate_and_score_completions(inputs)
        if not self.model.training:
            return output  # eval keeps TRL's plain advantages
        if "pixel_values" in output:
            raise ValueError("ThrGRPOTrainer supports text-only models (the extra THR forward passes no images).")
        t0 = time.perf_counter()
        adv = output["advantages"]  # [B]
        b = adv.shape[0]
        g = self.num_generations
        if b % g:
            raise ValueError(
                f"THR needs whole groups on each process, but the local batch has {b} completions and "
                f"num_generations={g}. Make per_device_train_batch_size * steps_per_generation a multiple of num_generations."
            )
        # Rewards of this process's rows (TRL gathered them across processes), weighted like TRL's total reward.
        assert self._thr_rewards is not None
        start = self.accelerator.process_index * b
        rpf = self._thr_rewards[start : start + b]  # [B, n_funcs]
        rewards = (rpf * self.reward_weights.to(rpf.device)[None]).nansum(-1)
        rewards[torch.isnan(rpf).all(-1)] = torch.nan  # unscorable: never correct
        group_ids = torch.arange(b, device=adv.device) // g  # [B]
        correct = correct_mask(rewards.to(adv.device), group_ids, threshold=self.thr.correct_threshold)

        prompt_ids, prompt_mask = output["prompt_ids"], output["prompt_mask"]
        completion_ids, completion_mask = output["completion_ids"], output["completion_mask"]
        token_mask = completion_mask if "tool_mask" not in output else completion_mask * output["tool_mask"]  # [B, T]
        t = completion_ids.shape[1]
        input_ids = torch.cat([prompt_ids, completion_ids], 1)
        attention_mask = torch.cat([prompt_mask, completion_mask], 1)
        collector = ThrCollector(group_vocab(completion_ids, token_mask, group_ids))
        mb = self.args.per_device_train_batch_size
        # The one extra pass (micro-batched like TRL's): TRL's own forward is fused (log-probs only); the
        # plain forward's logits include any softcapping / logit scale the model applies.
        for s in range(0, b, mb):
            rows = torch.arange(s, min(s + mb, b))
            collector.add(rows, *self._thr_forward(input_ids[rows], attention_mask[rows], t))
        scores = collector.scores(adv, correct, len_norm=self.thr.len_norm, exclude_self=self.thr.exclude_self)
        p = steering_p("linear" if self.thr.p_end is not None else "constant", p_start=self.thr.p,
                       p_end=self.thr.p if self.thr.p_end is None else self.thr.p_end,
                       step=self.state.global_step, total_steps=max(self.state.max_steps, 1))
        adv_tok, stats = thr_token_advantages(
            adv, scores, token_mask, group_ids, correct, p=p, mode=self.thr.mode,
            threshold=self.thr.threshold, beta=self.thr.beta, percentile=self.thr.percentile,
        )
        output["advantages"] = adv_tok  # [B, T]; TRL's loss takes (B, T) advantages unchanged
        stats["thr/time_s"] = time.perf_counter() - t0
        stats["thr/p"] = p
        for key, value in stats.items():
            self._metrics["train"][key].append(value)
        return output
