"""Shared by the vLLM tests (colocated and server mode): a LoRA policy whose adapters matter,
and the policy's own per-token log-probs of a batch (what the sampler's must equal)."""
from __future__ import annotations

import torch

from llmrl.trainer.forward import forward_completions


def policy_logps(policy, batch, temperature: float = 1.0) -> torch.Tensor:
    """[N, C] the policy's log-prob of each completion token (at the sampling temperature)."""
    with torch.no_grad():
        return forward_completions(policy, batch, torch.arange(len(batch)), temperature=temperature).logps.float()


def lora_policy(seed: int = 1):
    """The tiny Llama with rank-4 LoRA adapters that change its outputs (peft initialises B = 0,
    which would make the adapters a no-op and a missing merge invisible)."""
    from llmrl.models.load import load_model_and_tokenizer

    torch.manual_seed(seed)
    lora, tok = load_model_and_tokenizer("tiny://arithmetic", lora_r=4, lora_alpha=8)
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return lora, tok
