"""Parameter groups for per-group clipping: one LoRA adapter (its lora_A and lora_B together),
or one layer's weights for full fine-tuning.

Why groups: RLDP clips and noises each adapter on its own scale; clipping lora_A and lora_B of
one adapter jointly keeps the product B @ A's sensitivity in one place."""
from __future__ import annotations

import re

import torch

_LORA = re.compile(r"^(?P<module>.*)\.lora_[AB](\..*)?$")


def parameter_groups(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """Trainable parameters grouped by adapter (LoRA) or by owning module (full fine-tuning).

    Keys are module names (``...layers.0.self_attn.q_proj`` for its adapter); the order follows
    ``model.named_parameters()``. Frozen parameters are left out.
    """
    groups: dict[str, list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        m = _LORA.match(name)
        key = m.group("module") if m else name.rsplit(".", 1)[0]
        groups.setdefault(key, []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters: nothing to fine-tune privately")
    return groups
