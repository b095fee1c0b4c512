"""Token-level advantages from response advantages: broadcast, or Token Hidden Reward (THR).

THR's inputs come from the old-policy forward that runs anyway: ``begin`` sees the rollout batch,
``observe`` each of its micro-batches (logits + final hidden states), ``apply`` turns response
advantages into token advantages. With type "none" all three are trivial."""
from __future__ import annotations

from pathlib import Path

import torch

from llmrl.config.schema import TokenWeightingConfig
from llmrl.rollout.types import RolloutBatch
from llmrl.trainer.forward import ForwardOut


class TokenWeighting:
    def __init__(self, cfg: TokenWeightingConfig, *, total_steps: int, tokenizer=None, inspect_path: Path | None = None):
        self.cfg, self.total_steps = cfg, total_steps
        self.tokenizer, self.inspect_path = tokenizer, inspect_path
        self._collector = None

    @property
    def needs_hidden(self) -> bool:
        return self.cfg.type == "thr"

    def begin(self, batch: RolloutBatch) -> None:
        if self.cfg.type == "thr":
            from llmrl.algorithms.thr import ThrCollector, group_vocab

            self._collector = ThrCollector(group_vocab(batch.completion_ids, batch.loss_mask, batch.group_ids))

    def observe(self, rows: torch.Tensor, fwd: ForwardOut) -> None:
        if self._collector is not None:
            self._collector.add(rows, fwd.logits, fwd.hidden)

    def apply(self, adv: torch.Tensor, rewards: torch.Tensor, batch: RolloutBatch, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """adv [N] -> ([N, C] token advantages, metrics)."""
        N, C = batch.completion_ids.shape
        if self.cfg.type == "none":
            return adv.unsqueeze(1).expand(N, C), {}
        from llmrl.algorithms.thr import correct_mask, steering_p, thr_token_advantages

        cfg = self.cfg
        correct = correct_mask(rewards, batch.group_ids)
        scores = self._collector.scores(adv, correct, len_norm=cfg.len_norm, exclude_self=cfg.exclude_self)
        p = steering_p(cfg.schedule, p_start=cfg.p, p_end=cfg.p if cfg.p_end is None else cfg.p_end,
                       step=step - 1, total_steps=self.total_steps)
        adv_tok, stats = thr_token_advantages(adv, scores, batch.loss_mask, batch.group_ids, correct, p=p,
                                              mode=cfg.mode, threshold=cfg.threshold, beta=cfg.beta,
                                              percentile=cfg.percentile)
        self._collector = None
        if cfg.inspect_every and step % cfg.inspect_every == 0 and self.inspect_path is not None:
            self._dump_inspect(batch, rewards, adv, correct, scores, step)
        return adv_tok, {**stats, "thr/p": p}

    def _dump_inspect(self, batch, rewards, adv, correct, scores, step: int) -> None:
        """A few groups' tokens with their THR, for `llmrl thr inspect` to color as HTML."""
        from llmrl.algorithms.thr import dominant_tokens
        from llmrl.algorithms.thr_html import thr_inspect_records, write_thr_inspect_jsonl

        cfg = self.cfg
        dominant = dominant_tokens(scores, batch.loss_mask, batch.group_ids, threshold=cfg.threshold,
                                   beta=cfg.beta, percentile=cfg.percentile)
        records = thr_inspect_records(tokenizer=self.tokenizer, completion_ids=batch.completion_ids,
                                      token_mask=batch.loss_mask, group_ids=batch.group_ids, rewards=rewards,
                                      advantages=adv, correct=correct, scores=scores, dominant=dominant,
                                      prompts=batch.prompts, step=step)
        write_thr_inspect_jsonl(records, self.inspect_path)
