"""The texts of an SFT corpus, checked and tokenized once.

Rows come from any ``data.name`` builder (file, jsonl, hf, clinical_notes, ...); the text is the
``sft.text_column``. A missing column or empty texts are refused with the key and the data set
named: a silently empty row would still be sampled, noised and accounted."""
from __future__ import annotations

from typing import Any

import torch


def corpus_texts(ds: Any, column: str, source: str) -> list[str]:
    """The ``column`` of ``ds`` as non-empty strings, or ValueError naming the key and source."""
    if column not in ds.column_names:
        raise ValueError(f"sft.text_column: {column!r} is not a column of {source} (columns: "
                         f"{', '.join(ds.column_names) or 'none'}). Fix: set sft.text_column, or rename with "
                         "data.args.columns: {text: your_column}")
    texts = ds[column]
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(f"sft.text_column: {len(bad)} of {len(texts)} rows of {source} have an empty or missing "
                         f"{column!r} (first at row {bad[0]}). Fix: drop those rows or pick another column")
    if not texts:
        raise ValueError(f"data: {source} holds no rows for sft.text_column {column!r}")
    return list(texts)


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids per text (with the tokenizer's special tokens, then eos), truncated to ``max_length``."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return [(ids + eos)[:max_length] for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]


def pad_batch(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids [B, L]`` and ``attention_mask [B, L]``."""
    width = max((len(r) for r in rows), default=1)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
    return ids, mask


def sequence_nll(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed next-token NLL ``[B]`` and predicted-token counts ``[B]``.

    Per sequence on purpose: DP-SGD needs each sample's loss on its own (HF's whole-batch token
    mean would mix samples in one normaliser). The loss to train is ``(nll / count).mean()``:
    a token mean per sequence, then the batch mean."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1]   # [B, L-1, V]
    target = input_ids[:, 1:]
    keep = attention_mask[:, 1:].to(logits.dtype)                                       # [B, L-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2).float(), target, reduction="none")
    return (nll * keep).sum(-1), keep.sum(-1).clamp(min=1)
