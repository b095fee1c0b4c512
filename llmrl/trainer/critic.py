"""The learned critic of PPO (``algorithm.advantage: gae``): a separate value model, its forwards
and its clipped value loss.

The value model is the policy's architecture with a one-output token-classification head
(``AutoModelForTokenClassification``, ``num_labels=1``, dropout 0), initialised from the policy's
weights, as OpenRLHF builds its critic when rewards are functions rather than a reward model: a
randomly initialised trunk has no idea of the task, a copy of the policy's already encodes it.
The new head starts near 0 (transformers' init, std ``initializer_range``), so early values are
small and the first value losses are the squared returns. With ``model.lora`` the critic gets
LoRA adapters of its own (the head trains in full); it still loads a second copy of the base,
unless ``critic.share_base``: then the critic is :class:`SharedBaseCritic`, a second adapter and
a value head on the policy's own frozen base, so PPO costs no second base model (OpenRLHF#230).

V_t is read at the position that *predicts* completion token t (the same position the policy's
log-prob of token t comes from): the value of the state before token t is chosen.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from llmrl.algorithms.losses import value_loss
from llmrl.rollout.types import PAD, RolloutBatch

log = logging.getLogger("llmrl")


def load_critic(name_or_path: str, *, dtype: str = "float32", device: str = "cpu", trust_remote_code: bool = False,
                lora=None) -> torch.nn.Module:
    """A value model [n, T] -> [n, T, 1] initialised from ``name_or_path`` (the policy's weights).

    ``lora`` (a ``LoraConfig`` section, or None): adapters on the critic's linear layers; the value
    head is trained in full (peft's TOKEN_CLS task saves it with the adapters)."""
    from transformers import AutoConfig, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    from llmrl.models.load import ModelLoadError, resolve_tiny

    source = str(resolve_tiny(name_or_path)) if str(name_or_path).startswith("tiny://") else str(name_or_path)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()   # "score.weight newly initialized": expected, the head is new
    try:
        config = AutoConfig.from_pretrained(source, num_labels=1, trust_remote_code=trust_remote_code)
        config.classifier_dropout = 0.0   # dropout would make V noisy and differ between forwards
        model = AutoModelForTokenClassification.from_pretrained(source, config=config, dtype=getattr(torch, dtype),
                                                                trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"critic: could not load a value model (token classification, 1 label) from "
                             f"{name_or_path!r}: {type(e).__name__}: {e}. Set critic.model to a model whose "
                             "architecture has a *ForTokenClassification class.") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = 0
    model.to(device)
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        # the head trains in full (modules_to_save), so it must not also get an adapter
        model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                 target_modules=lora.target_modules, exclude_modules=["score"],
                                                 modules_to_save=["score"], task_type="TOKEN_CLS"))
    return model


#: The peft adapter name of a :class:`SharedBaseCritic` on the policy (the policy's is "default").
CRITIC_ADAPTER = "critic"


@contextmanager
def active_adapter(model, name: str) -> Iterator[None]:
    """Run ``model`` (a peft model) with adapter ``name`` alone active, then the previous one again.

    peft's ``set_adapter`` also freezes every other adapter; here each parameter keeps its
    ``requires_grad``, because the policy's and the critic's losses are summed into one backward
    and each adapter must still receive its own gradient."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    previous = model.active_adapter

    def restore_flags() -> None:
        for p, flag in flags:
            p.requires_grad_(flag)

    model.set_adapter(name)
    restore_flags()
    try:
        yield
    finally:
        model.set_adapter(previous)
        restore_flags()


class SharedBaseCritic(torch.nn.Module):
    """The critic as a second LoRA adapter plus a value head on the policy's frozen base.

    One base model holds two adapters: the policy's (``default``) and the critic's
    (:data:`CRITIC_ADAPTER`, same rank/alpha/targets as ``model.lora``, B = 0 at the start so the
    critic's trunk starts as the warm-started policy's). V is ``score(trunk(x))`` with only the
    critic's adapter active; the policy's forwards see only the policy's adapter, so neither
    loss reaches the other's parameters and the base (frozen) is shared, not copied.

    The policy is deliberately not a submodule: ``parameters()`` / ``named_parameters()`` are the
    critic's own (its adapter under the policy's names, and ``score.*``), which is what the
    critic's optimizer and ``critic.safetensors`` hold. ``train()`` / ``eval()`` also set the
    shared model's mode, so the values forward runs without LoRA dropout."""

    def __init__(self, policy: torch.nn.Module, lora) -> None:
        super().__init__()
        from peft import LoraConfig, PeftModel

        if not isinstance(policy, PeftModel):
            raise ValueError("critic.share_base: the policy has no LoRA adapters to share its base with; set "
                             "model.lora, or critic.share_base: false")
        object.__setattr__(self, "policy", policy)        # shared, not owned (see the class docstring)
        policy.add_adapter(CRITIC_ADAPTER, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                      target_modules=lora.target_modules or "all-linear",
                                                      task_type="CAUSAL_LM"))
        self._adapter = [(n, p) for n, p in policy.named_parameters() if CRITIC_ADAPTER in n.split(".")]
        for _, p in self._adapter:     # add_adapter leaves a non-active adapter frozen
            p.requires_grad_(True)
        base = policy.get_base_model()
        ref = next(p for p in base.parameters())
        self.score = torch.nn.Linear(base.config.hidden_size, 1, device=ref.device, dtype=ref.dtype)
        # as transformers initialises a new token-classification head: small weights, so V starts near 0
        torch.nn.init.normal_(self.score.weight, std=getattr(base.config, "initializer_range", 0.02))
        torch.nn.init.zeros_(self.score.bias)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from super().named_parameters(prefix=prefix, recurse=recurse, remove_duplicate=remove_duplicate)
        yield from ((f"{prefix}.{n}" if prefix else n, p) for n, p in self._adapter)

    def train(self, mode: bool = True) -> "SharedBaseCritic":
        super().train(mode)
        self.policy.train(mode)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool = False):
        from transformers.modeling_outputs import TokenClassifierOutput

        base = self.policy.get_base_model()
        trunk = getattr(base, base.base_model_prefix)        # e.g. LlamaForCausalLM.model: no lm_head
        with active_adapter(self.policy, CRITIC_ADAPTER):
            hidden = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache).last_hidden_state
        return TokenClassifierOutput(logits=self.score(hidden))                   # [n, T, 1]


def critic_values(critic: torch.nn.Module, batch: RolloutBatch, rows: torch.Tensor) -> torch.Tensor:
    """[n, C] values of ``rows`` at the positions predicting each completion token (with grad)."""
    device = next(critic.parameters()).device
    completion = batch.completion_ids[rows].to(device)
    input_ids = torch.cat([batch.prompt_ids[rows].to(device), completion], dim=1)
    attention_mask = torch.cat([batch.prompt_mask[rows], (batch.token_owner[rows] != PAD).long()], dim=1).to(device)
    C = completion.shape[1]
    out = critic(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.logits[:, -(C + 1):-1, 0].float()


@torch.no_grad()
def values_forward(critic: torch.nn.Module, batch: RolloutBatch, *, micro_batch_size: int) -> torch.Tensor:
    """[N, C] values before the update (GAE's V and the value clip's V_old), 0 off the loss mask."""
    was_training = critic.training
    critic.eval()
    out = torch.zeros(batch.completion_ids.shape, dtype=torch.float32)
    for rows in torch.arange(len(batch)).split(micro_batch_size):
        out[rows] = critic_values(critic, batch, rows).cpu()
    critic.train(was_training)
    return out * batch.loss_mask.float()


@dataclass
class CriticUpdate:
    """What the update needs to train the critic alongside the policy (all [N, C] on the CPU)."""

    model: torch.nn.Module
    old_values: torch.Tensor     # V before the update (values_forward)
    returns: torch.Tensor        # GAE(gamma, lambda_critic) + V: the regression targets
    clip: float | None           # critic.value_clip


def critic_loss(c: CriticUpdate, batch: RolloutBatch, rows: torch.Tensor, *, num_tokens: float):
    """Clipped value loss of ``rows`` normalised by the minibatch's policy tokens
    (``llmrl.algorithms.losses.value_loss``)."""
    values = critic_values(c.model, batch, rows)
    dev = values.device
    return value_loss(values, c.old_values[rows].to(dev), c.returns[rows].to(dev), batch.loss_mask[rows].to(dev),
                      clip=c.clip, num_tokens=num_tokens)
