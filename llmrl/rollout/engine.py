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


def build_engine(kind: str, model, tokenizer, *, max_prompt_length: int, generation_batch_size: int | None = None) -> RolloutEngine:
    if kind == "hf":
        from llmrl.rollout.hf_engine import HFEngine

        return HFEngine(model, tokenizer, max_prompt_length=max_prompt_length, generation_batch_size=generation_batch_size)
    if kind == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise ValueError(
                "rollout.engine: 'vllm' needs the vllm extra and a GPU: pip install 'llmrl[vllm]'. "
                "On a CPU use rollout.engine: hf."
            ) from None
        from llmrl.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model, tokenizer, max_prompt_length=max_prompt_length)
    raise ValueError(f"rollout.engine: unknown engine {kind!r}; allowed: hf, vllm")
