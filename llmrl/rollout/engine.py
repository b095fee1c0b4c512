"""The rollout-engine interface and its factory.

``hf`` (transformers ``generate``) is the default and runs anywhere; ``vllm`` is a GPU extra.
The trainer only talks to this Protocol, so engines swap by recipe key."""
from __future__ import annotations

from typing import Protocol

import torch

from llmrl.rollout.types import RolloutBatch, SamplingParams


class RolloutEngine(Protocol):
    def generate(self, prompts: list[str], sampling: SamplingParams, *, n: int) -> RolloutBatch:
        """n completions per prompt, prompt-major."""

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Make the engine sample from the policy's current weights."""


def build_engine(kind: str, model, tokenizer, *, max_prompt_length: int, generation_batch_size: int | None = None,
                 add_special_tokens: bool = True) -> RolloutEngine:
    if kind == "hf":
        from llmrl.rollout.hf_engine import HFEngine

        return HFEngine(model, tokenizer, max_prompt_length=max_prompt_length, generation_batch_size=generation_batch_size,
                        add_special_tokens=add_special_tokens)
    if kind == "vllm":
        # Planned (DESIGN.md decision 4): colocated vLLM with weight sync. Not built yet; say so
        # rather than fall back silently to a slower engine.
        raise ValueError("rollout.engine: 'vllm' is not available in this release yet; use rollout.engine: hf")
    raise ValueError(f"rollout.engine: unknown engine {kind!r}; allowed: hf, vllm")
