"""Rollouts with transformers ``generate``: batched, left-padded, n samples per prompt.

The engine holds the policy module itself, so weight sync is free; on a GPU the vllm engine is
faster, but this one needs nothing beyond transformers and is the reference behaviour.

Sampling warpers (temperature, top-k, top-p) are applied by this module's own logits processor
rather than by ``generate``'s: custom processors run *before* generate's warpers, so only by
owning the warping can the engine record the log-prob of each sampled token under the
distribution it was really drawn from (``SamplingParams.logprobs``)."""
from __future__ import annotations

import dataclasses
import math

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from llmrl.rollout.engine import TextPrompts
from llmrl.rollout.types import PAD, POLICY, RolloutBatch, SamplingParams


def _end_token_ids(tokenizer, model) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(gen_eos)
    return sorted(i for i in ids if i is not None)


def completion_owner(completion_ids: torch.Tensor, end_ids: list[int], pad_id: int,
                     stop_at: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Owner mask and truncation flags for sampled completions.

    Tokens up to and including the first end token (or ``stop_at[i]``, the index of the token
    that completed a stop string) belong to the policy (the end is trained: the model must learn
    to stop); everything after is padding.

    >>> ids = torch.tensor([[5, 2, 0], [5, 6, 7]])      # 2 = eos, 0 = pad
    >>> owner, trunc = completion_owner(ids, [2], 0)
    >>> owner.tolist(), trunc.tolist()
    ([[1, 1, 0], [1, 1, 1]], [False, True])
    """
    is_end = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in end_ids:
        is_end |= completion_ids == e
    C = completion_ids.shape[1]
    first_end = torch.where(is_end.any(1), is_end.float().argmax(1), torch.full_like(is_end[:, 0], C, dtype=torch.long))
    if stop_at is not None:
        first_end = torch.minimum(first_end, stop_at.to(first_end.device))
    pos = torch.arange(C, device=completion_ids.device).unsqueeze(0)
    owner = torch.where(pos <= first_end.unsqueeze(1), POLICY, PAD).to(torch.int8)
    return owner, first_end >= C


def stop_string_end(tokenizer, ids: list[int], stops: tuple[str, ...]) -> int | None:
    """Index of the token whose decoding first completes one of ``stops`` (None if none does).

    Containment grows with the prefix, so a binary search over prefix lengths finds it in
    O(log C) decodes."""
    if not stops or not any(s in tokenizer.decode(ids) for s in stops):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in tokenizer.decode(ids[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo - 1


class _WarpAndRecord(LogitsProcessor):
    """Applies temperature / top-k / top-p and keeps log p(sampled token) per step."""

    def __init__(self, sampling: SamplingParams, record: bool):
        self.warpers = []
        if not sampling.greedy:
            if sampling.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k:
                self.warpers.append(TopKLogitsWarper(top_k=sampling.top_k))
            if sampling.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p=sampling.top_p))
        self.record = record
        self._last: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for w in self.warpers:
            scores = w(input_ids, scores)
        if self.record:
            self._take(input_ids[:, -1])
            self._last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _take(self, chosen: torch.Tensor) -> None:
        if self._last is not None:
            self.steps.append(self._last.gather(1, chosen.unsqueeze(1)).squeeze(1))

    def finish(self, sequences: torch.Tensor, num_new: int) -> torch.Tensor:
        """[N, num_new] log-probs of the generated tokens."""
        if num_new:
            self._take(sequences[:, -1])
        out = torch.stack(self.steps, dim=1) if self.steps else torch.empty(len(sequences), 0)
        return out[:, :num_new]


def _offset(sampling: SamplingParams, first: int) -> SamplingParams:
    """The sampling of a chunk whose first context is number ``first`` of the call."""
    return sampling if sampling.seed is None else dataclasses.replace(sampling, seed=sampling.seed + first)


class HFEngine(TextPrompts):
    def __init__(self, model, tokenizer, *, max_prompt_length: int, generation_batch_size: int | None = None,
                 add_special_tokens: bool = True):
        self.model, self.tokenizer = model, tokenizer
        # False when prompts already went through a chat template (it adds its own <bos>).
        self.add_special_tokens = add_special_tokens
        self.max_prompt_length = max_prompt_length
        self.generation_batch_size = generation_batch_size
        self.end_ids = _end_token_ids(tokenizer, model)
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has no pad token; set tokenizer.pad_token (e.g. to eos) before rollouts")

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Nothing to copy: this engine samples from the policy module itself."""

    @torch.no_grad()
    def _generate_chunk(self, contexts: list[list[int]], sampling: SamplingParams, n: int):
        pad = self.tokenizer.pad_token_id
        device = next(self.model.parameters()).device
        # An over-long context loses its start, not the end next to the answer.
        contexts = [c[-self.max_prompt_length:] for c in contexts]
        P = max(len(c) for c in contexts)
        input_ids = torch.full((len(contexts), P), pad, dtype=torch.long)
        attn = torch.zeros((len(contexts), P), dtype=torch.long)
        for i, c in enumerate(contexts):
            input_ids[i, P - len(c):] = torch.tensor(c, dtype=torch.long)
            attn[i, P - len(c):] = 1
        input_ids = input_ids.to(device).repeat_interleave(n, dim=0)  # [N, P]
        attn = attn.to(device).repeat_interleave(n, dim=0)
        end_ids = sorted(set(self.end_ids) | set(sampling.stop_token_ids))
        warp = _WarpAndRecord(sampling, record=sampling.logprobs)
        # generate's own warpers are neutralised (temperature 1, top-k 0, top-p 1): ours apply them.
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=end_ids,
                      logits_processor=LogitsProcessorList([warp]), temperature=None, top_p=None, top_k=None,
                      do_sample=not sampling.greedy)
        if not sampling.greedy:
            kwargs.update(temperature=1.0, top_p=1.0, top_k=0)
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        was_training = self.model.training
        self.model.eval()
        if sampling.seed is None or sampling.greedy:
            out = self.model.generate(input_ids=input_ids, attention_mask=attn, **kwargs)
        else:  # this chunk's own stream; the process's RNG is left where it was
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(sampling.seed)
                out = self.model.generate(input_ids=input_ids, attention_mask=attn, **kwargs)
        self.model.train(was_training)
        completion = out[:, input_ids.shape[1]:]
        logps = warp.finish(out, completion.shape[1]).cpu() if sampling.logprobs else None
        if completion.shape[1] == 0:  # every row stopped at once (cannot happen with max_new_tokens>0)
            completion = torch.full((len(input_ids), 1), pad, device=device)
            logps = torch.full((len(input_ids), 1), math.nan) if logps is not None else None
        return input_ids, attn, completion, logps, end_ids

    def generate_tokens(self, contexts: list[list[int]], sampling: SamplingParams, *, n: int = 1) -> RolloutBatch:
        """n completions per context (any token prefix: a prompt, or a trajectory so far).

        ``prompts`` of the returned batch are the decoded contexts (for logs only)."""
        chunk = self.generation_batch_size or len(contexts)
        parts = [self._generate_chunk(contexts[i:i + chunk], _offset(sampling, i), n) for i in range(0, len(contexts), chunk)]
        pad = self.tokenizer.pad_token_id
        P = max(p[0].shape[1] for p in parts)
        C = max(p[2].shape[1] for p in parts)
        prompt_ids = torch.cat([torch.nn.functional.pad(p[0], (P - p[0].shape[1], 0), value=pad) for p in parts])
        prompt_mask = torch.cat([torch.nn.functional.pad(p[1], (P - p[1].shape[1], 0), value=0) for p in parts])
        completion_ids = torch.cat([torch.nn.functional.pad(p[2], (0, C - p[2].shape[1]), value=pad) for p in parts])
        stop_at = None
        if sampling.stop:
            ends = [stop_string_end(self.tokenizer, row.tolist(), sampling.stop) for row in completion_ids]
            stop_at = torch.tensor([C if e is None else e for e in ends])
        owner, truncated = completion_owner(completion_ids, parts[0][4], pad, stop_at)
        completion_ids = torch.where(owner == PAD, torch.full_like(completion_ids, pad), completion_ids)
        sampler_logps = None
        if sampling.logprobs:
            sampler_logps = torch.cat([torch.nn.functional.pad(p[3], (0, C - p[3].shape[1]), value=math.nan)
                                       for p in parts])
            sampler_logps = torch.where(owner.cpu() == POLICY, sampler_logps, torch.full_like(sampler_logps, math.nan))
        texts = self.tokenizer.batch_decode(
            [row[m.bool()] for row, m in zip(completion_ids, owner == POLICY)], skip_special_tokens=True
        )
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            token_owner=owner,
            group_ids=torch.arange(len(contexts), device=prompt_ids.device).repeat_interleave(n),
            finish_reason=["length" if t else "stop" for t in truncated.tolist()],
            prompts=[text for text in self.tokenizer.batch_decode(contexts) for _ in range(n)],
            completions=texts,
            sampler_logps=sampler_logps,
        )
