"""Per-token log-probs of completions under a model, in micro-batches.

Used three ways: the old-policy pass (no grad; also yields the hidden states THR needs, so THR
costs no extra forward), the reference-model pass (no grad), and the update pass (grad)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llmrl.rollout.types import PAD, RolloutBatch


@dataclass
class ForwardOut:
    logps: torch.Tensor                 # [n, C] log pi(y_t | y_<t), temperature-scaled logits
    logits: torch.Tensor | None = None  # [n, C, V] at the predicting positions (old pass only)
    hidden: torch.Tensor | None = None  # [n, C, d] final post-norm hidden states there


def token_logps(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[ids] without materialising the full log-softmax, in fp32.

    >>> token_logps(torch.zeros(1, 1, 4), torch.tensor([[2]])).item() == -torch.log(torch.tensor(4.)).item()
    True
    """
    logits = logits.float()
    return logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def forward_completions(model, batch: RolloutBatch, rows: torch.Tensor, *, temperature: float,
                        want_hidden: bool = False, keep_logits: bool = False) -> ForwardOut:
    """Forward rows of a rollout batch; the completion of length C is predicted by positions
    P-1 .. P+C-2 (the token before each completion token)."""
    device = next(model.parameters()).device
    if len(rows) == 0:  # a rank whose flat groups were all dropped: nothing to run, empty outputs
        C, cfg = batch.completion_ids.shape[1], model.config
        return ForwardOut(logps=torch.zeros(0, C, device=device),
                          logits=torch.zeros(0, C, cfg.vocab_size, device=device) if keep_logits else None,
                          hidden=torch.zeros(0, C, cfg.hidden_size, device=device) if want_hidden else None)
    # Select the rows first, then concatenate: no full-batch copy per micro-batch.
    completion_ids = batch.completion_ids[rows].to(device)
    input_ids = torch.cat([batch.prompt_ids[rows].to(device), completion_ids], dim=1)
    attention_mask = torch.cat([batch.prompt_mask[rows], (batch.token_owner[rows] != PAD).long()], dim=1).to(device)
    C = completion_ids.shape[1]
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                output_hidden_states=want_hidden, logits_to_keep=C + 1)
    logits = out.logits[:, -(C + 1):-1, :] / temperature  # [n, C, V]
    logps = token_logps(logits, completion_ids)
    hidden = out.hidden_states[-1][:, -(C + 1):-1, :] if want_hidden else None
    return ForwardOut(logps=logps, logits=logits if keep_logits else None, hidden=hidden)
