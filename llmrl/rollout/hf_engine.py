"""Rollouts with transformers ``generate``: batched, left-padded, n samples per prompt.

The engine holds the policy module itself, so weight sync is free; on a GPU the vllm engine is
faster, but this one needs nothing beyond transformers and is the reference behaviour."""
from __future__ import annotations

import torch

from llmrl.rollout.types import PAD, POLICY, RolloutBatch, SamplingParams


def _end_token_ids(tokenizer, model) -> list[int]:
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif isinstance(gen_eos, (list, tuple)):
        ids.update(gen_eos)
    return sorted(i for i in ids if i is not None)


def completion_owner(completion_ids: torch.Tensor, end_ids: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Owner mask and truncation flags for sampled completions.

    Tokens up to and including the first end token belong to the policy (the end token is
    trained: the model must learn to stop); everything after is padding.

    >>> ids = torch.tensor([[5, 2, 0], [5, 6, 7]])      # 2 = eos, 0 = pad
    >>> owner, trunc = completion_owner(ids, [2], 0)
    >>> owner.tolist(), trunc.tolist()
    ([[1, 1, 0], [1, 1, 1]], [False, True])
    """
    is_end = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in end_ids:
        is_end |= completion_ids == e
    # position of the first end token (C if none)
    C = completion_ids.shape[1]
    first_end = torch.where(is_end.any(1), is_end.float().argmax(1), torch.full_like(is_end[:, 0], C, dtype=torch.long))
    pos = torch.arange(C, device=completion_ids.device).unsqueeze(0)
    owner = torch.where(pos <= first_end.unsqueeze(1), POLICY, PAD).to(torch.int8)
    return owner, ~is_end.any(1)


class HFEngine:
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
    def _generate_chunk(self, prompts: list[str], sampling: SamplingParams, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tok = self.tokenizer
        tok.padding_side = "left"
        tok.truncation_side = "left"  # an over-long prompt loses its start, not the end next to the answer
        enc = tok(prompts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_prompt_length,
                  add_special_tokens=self.add_special_tokens)
        device = next(self.model.parameters()).device
        input_ids = enc["input_ids"].to(device).repeat_interleave(n, dim=0)  # [N, P]
        attn = enc["attention_mask"].to(device).repeat_interleave(n, dim=0)
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=self.end_ids)
        if sampling.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            # top_k=0 must reach generate as 0 (disabled): None would fall back to generation_config's 50.
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(input_ids=input_ids, attention_mask=attn, **kwargs)
        self.model.train(was_training)
        completion = out[:, input_ids.shape[1]:]
        if completion.shape[1] == 0:  # every row stopped at once (cannot happen with max_new_tokens>0)
            completion = torch.full((len(input_ids), 1), tok.pad_token_id, device=device)
        return input_ids, attn, completion

    def generate(self, prompts: list[str], sampling: SamplingParams, *, n: int) -> RolloutBatch:
        chunk = self.generation_batch_size or len(prompts)
        parts = [self._generate_chunk(prompts[i:i + chunk], sampling, n) for i in range(0, len(prompts), chunk)]
        pad = self.tokenizer.pad_token_id
        P = max(p[0].shape[1] for p in parts)
        C = max(p[2].shape[1] for p in parts)
        prompt_ids = torch.cat([torch.nn.functional.pad(p[0], (P - p[0].shape[1], 0), value=pad) for p in parts])
        prompt_mask = torch.cat([torch.nn.functional.pad(p[1], (P - p[1].shape[1], 0), value=0) for p in parts])
        completion_ids = torch.cat([torch.nn.functional.pad(p[2], (0, C - p[2].shape[1]), value=pad) for p in parts])
        owner, truncated = completion_owner(completion_ids, self.end_ids, pad)
        completion_ids = torch.where(owner == PAD, torch.full_like(completion_ids, pad), completion_ids)
        texts = self.tokenizer.batch_decode(
            [row[m.bool()] for row, m in zip(completion_ids, owner == POLICY)], skip_special_tokens=True
        )
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            token_owner=owner,
            group_ids=torch.arange(len(prompts), device=prompt_ids.device).repeat_interleave(n),
            truncated=truncated,
            prompts=[p for p in prompts for _ in range(n)],
            completions=texts,
        )
