"""How much a fine-tuned model leaks in practice, measured against the base model.

- Canary exposure (Carlini et al. 2019, "The Secret Sharer", eq. 2): rank the planted secret's
  loss after its prefix among ``num_candidates`` random strings of the same format; exposure =
  log2(num_candidates + 1) - log2(rank). Near 0: the secret is no likelier than chance; the
  maximum, log2(num_candidates + 1), means it ranks first.
- Loss-threshold membership inference (Yeom et al. 2018): score each row by minus its token-mean
  loss; the AUC of telling training rows from held-out rows (0.5 = no leakage)."""
from __future__ import annotations

import math
import random
from typing import Any, Sequence

import numpy as np
import torch

from llmrl.privacy.corpus import Canary
from llmrl.sft.corpus import pad_batch, sequence_nll, tokenize


@torch.no_grad()
def token_mean_losses(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *, max_length: int = 256,
                      batch_size: int = 64) -> np.ndarray:
    """Token-mean NLL per text ``[len(texts)]``."""
    device = next(model.parameters()).device
    rows = tokenize(tokenizer, list(texts), max_length)
    out = []
    for i in range(0, len(rows), batch_size):
        ids, mask = pad_batch(rows[i:i + batch_size], tokenizer.pad_token_id)
        nll, n = sequence_nll(model, ids.to(device), mask.to(device))
        out.append((nll / n).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half).

    >>> auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])), auc(np.array([1.0]), np.array([1.0]))
    (1.0, 0.5)
    """
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def membership_auc(model, tokenizer, members: Sequence[str], non_members: Sequence[str], **kw) -> float:
    return auc(-token_mean_losses(model, tokenizer, members, **kw), -token_mean_losses(model, tokenizer, non_members, **kw))


def canary_exposure(model, tokenizer, canary: Canary, *, num_candidates: int = 999, seed: int = 0) -> float:
    """Exposure of one canary among ``num_candidates`` random alternatives (the secret's total loss
    after the prefix; the prefix is shared, so whole-text losses rank the same)."""
    rng = random.Random(f"exposure-{seed}-{canary.prefix}")
    others: set[str] = set()
    while len(others) < num_candidates:
        c = canary.random_candidate(rng)
        if c != canary.secret:
            others.add(c)
    texts = [canary.prefix + s + "." for s in [canary.secret, *sorted(others)]]
    losses = token_mean_losses(model, tokenizer, texts)  # same length for all candidates: means rank like sums
    rank = 1 + int((losses[1:] < losses[0]).sum())
    return math.log2(num_candidates + 1) - math.log2(rank)
