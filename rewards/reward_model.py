"""A learned reward: any sequence-classification model (``AutoModelForSequenceClassification``,
local folder or hub name) scores prompt + completion; the reward is its first logit.

Recipe use::

    rewards:
      - name: reward_model
        args: {model: OpenAssistant/reward-model-deberta-v3-large-v2, batch_size: 16, device: cuda}

The model and tokenizer are loaded once per (model, device) and kept for the process (the trainer,
its warm start and evaluation share one copy). Scoring pads on the right, so a completion's score
does not depend on what else is in its batch. Chat-format prompts and completions (lists of
messages) are rendered with the tokenizer's chat template when it has one.
"""
from __future__ import annotations

import threading
from typing import Any

_MODELS: dict[tuple[str, str], tuple[Any, Any]] = {}
_LOCK = threading.Lock()


def load_reward_model(model: str, device: str = "cpu"):
    """``(model, tokenizer)`` for ``model`` on ``device``, loaded on first use and cached."""
    key = (str(model), str(device))
    with _LOCK:  # rewards run in threads: one load per key
        if key not in _MODELS:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(model)
                net = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch.float32)
            except (OSError, ValueError) as exc:
                raise ValueError(f"rewards.args.model: cannot load {model!r} as a sequence-classification model "
                                 f"({type(exc).__name__}: {exc}); give a local folder or hub name of an "
                                 "AutoModelForSequenceClassification checkpoint") from None
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "right"  # left padding would shift positions and change scores
            if net.config.pad_token_id is None:  # the classifier pools at the last non-pad token
                net.config.pad_token_id = tokenizer.pad_token_id
            _MODELS[key] = (net.to(device).eval(), tokenizer)
        return _MODELS[key]


def _render(tokenizer, prompt, completion) -> str:
    if isinstance(prompt, list) or isinstance(completion, list):  # chat format: lists of messages
        messages = (prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]) + \
            (completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}])
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False)
        return "\n".join(str(m.get("content", "")) for m in messages)
    return f"{prompt}{completion}"


def reward_model(prompts, completions, *, model: str, batch_size: int = 16, device: str = "cpu",
                 max_length: int = 2048, **kwargs) -> list[float]:
    """Score each (prompt, completion) with a sequence-classification model: ``logits[:, 0]``.

    Args:
        prompts, completions: [N] texts (or chat message lists), as the trainer passes them.
        model: local folder or hub name of an ``AutoModelForSequenceClassification`` checkpoint.
        batch_size: sequences per forward pass.
        device: where the reward model runs (``cpu``, ``cuda``, ``cuda:1``).
        max_length: longer prompt + completion texts are truncated to this many tokens.

    Returns:
        [N] floats, higher = better, on the reward model's own scale.
    """
    import torch

    net, tokenizer = load_reward_model(model, device)
    texts = [_render(tokenizer, p, c) for p, c in zip(prompts, completions)]
    limit = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True, truncation=True,
                        max_length=limit)
        with torch.inference_mode():
            logits = net(**{k: v.to(net.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}).logits
        scores += logits[:, 0].float().cpu().tolist()  # [b, num_labels] -> the first label's logit
    return scores
