"""What a rollout engine takes and returns: token ids in, token ids out, with per token who
produced it and the sampler's log-probability.

Multi-turn tool use interleaves policy tokens with environment tokens (tool results) inside one
completion; only the policy's tokens are trained. Recording ownership per token index, at
generation time, means the loss mask never has to be recovered by re-searching decoded text,
and building trajectories from ids (``Trajectory``) means nothing is ever decoded and
re-encoded between turns (the retokenization drift that multi-turn RL users keep reporting)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import torch

PAD, POLICY, ENV = 0, 1, 2  # values of RolloutBatch.token_owner
FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """``stop`` strings and ``stop_token_ids`` end a completion like the end-of-sequence token
    does (the stopping text/token is kept and trained: the model must learn to stop there).
    ``seed`` makes samples independent of how contexts are split over processes (see the
    field). ``logprobs`` asks the engine for the log-probability of each sampled token under the
    distribution it really sampled from (after temperature / top-k / top-p); a vLLM engine needs
    them for the truncated importance-sampling correction."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 16
    greedy: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    logprobs: bool = False
    # Reproducible sampling whatever the batching: context i of a call samples from a generator
    # seeded by ``seed + i`` (vLLM: per request; hf: per chunk of generation_batch_size contexts,
    # from its first context's index). None: the process's own random stream.
    seed: int | None = None


@dataclass
class RolloutBatch:
    """N = prompts x G rows, prompt-major (rows g*G .. g*G+G-1 share prompt g).

    prompt_ids     [N, P]  left-padded prompt (context) tokens
    prompt_mask    [N, P]  1 = real prompt token
    completion_ids [N, C]  right-padded completion tokens (policy and environment)
    token_owner    [N, C]  PAD / POLICY / ENV per completion position
    group_ids      [N]     prompt index within the step
    finish_reason  N       "stop" (end token, stop token or stop string) or "length"
    sampler_logps  [N, C]  the sampler's log-prob per policy token (NaN elsewhere); None when
                           the engine was not asked for them
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    token_owner: torch.Tensor
    group_ids: torch.Tensor
    finish_reason: list[str]
    prompts: list[str]
    completions: list[str]
    sampler_logps: torch.Tensor | None = None
    extras: dict[str, list] = field(default_factory=dict)

    @property
    def truncated(self) -> torch.Tensor:
        """[N] True when the completion hit the length limit without an end."""
        return torch.tensor([r == "length" for r in self.finish_reason], dtype=torch.bool)

    @property
    def completion_mask(self) -> torch.Tensor:
        """[N, C] 1 for every real completion token (attention), policy or environment."""
        return (self.token_owner != PAD).long()

    @property
    def loss_mask(self) -> torch.Tensor:
        """[N, C] 1 only for tokens the policy generated: what the loss, KL and THR see."""
        return (self.token_owner == POLICY).long()

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def policy_ids(self) -> list[list[int]]:
        """Each row's policy-generated token ids, in order (TRL's ``completion_ids``)."""
        ids, mask = self.completion_ids.tolist(), self.loss_mask.bool().tolist()   # one conversion, not N
        return [[t for t, keep in zip(r, m) if keep] for r, m in zip(ids, mask)]

    def row(self, i: int) -> tuple[list[int], list[int], list[float]]:
        """Row i's completion as (ids, owners, sampler log-probs), padding removed."""
        keep = self.token_owner[i] != PAD
        ids = self.completion_ids[i][keep].tolist()
        owner = self.token_owner[i][keep].tolist()
        logps = (self.sampler_logps[i][keep].tolist() if self.sampler_logps is not None else [math.nan] * len(ids))
        return ids, owner, logps

    def select(self, rows: torch.Tensor) -> "RolloutBatch":
        """The sub-batch of the given row indices (used to drop zero-variance groups)."""
        idx = rows.tolist()
        return RolloutBatch(
            prompt_ids=self.prompt_ids[rows],
            prompt_mask=self.prompt_mask[rows],
            completion_ids=self.completion_ids[rows],
            token_owner=self.token_owner[rows],
            group_ids=self.group_ids[rows],
            finish_reason=[self.finish_reason[i] for i in idx],
            prompts=[self.prompts[i] for i in idx],
            completions=[self.completions[i] for i in idx],
            sampler_logps=self.sampler_logps[rows] if self.sampler_logps is not None else None,
            extras={k: [v[i] for i in idx] for k, v in self.extras.items()},
        )


@dataclass
class Trajectory:
    """One growing sequence for multi-turn rollouts: a prompt, then turns of policy tokens
    (from an engine) and environment tokens (tool results), all as ids.

    The next turn is generated from ``context_ids`` (a token prefix), so the ids that are
    trained are exactly the ids that were sampled or appended."""

    prompt_ids: list[int]
    ids: list[int] = field(default_factory=list)
    owner: list[int] = field(default_factory=list)
    logps: list[float] = field(default_factory=list)
    finish_reason: str = "stop"

    @property
    def context_ids(self) -> list[int]:
        return self.prompt_ids + self.ids

    def extend(self, ids: Sequence[int], owner: int, logps: Sequence[float] | None = None) -> None:
        """Append one turn's tokens, all owned by ``owner`` (POLICY or ENV)."""
        if owner not in (POLICY, ENV):
            raise ValueError(f"owner must be POLICY ({POLICY}) or ENV ({ENV}), got {owner}")
        if logps is not None and len(logps) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(logps)} log-probs")
        self.ids += list(ids)
        self.owner += [owner] * len(ids)
        self.logps += list(logps) if logps is not None else [math.nan] * len(ids)

    def extend_from(self, batch: RolloutBatch, i: int) -> None:
        """Append row i of an engine's batch (generated from this trajectory's context)."""
        ids, owner, logps = batch.row(i)
        self.ids += ids
        self.owner += owner
        self.logps += logps
        self.finish_reason = batch.finish_reason[i]


def batch_from_trajectories(trajs: Sequence[Trajectory], *, pad_id: int, group_ids: torch.Tensor, tokenizer=None,
                            prompts: list[str] | None = None) -> RolloutBatch:
    """Pad trajectories into a RolloutBatch (prompts left-padded, completions right-padded).

    ``completions`` text (what rewards read) is decoded from the policy *and* environment tokens
    when a tokenizer is given; it is for display and scoring only, never re-encoded."""
    P = max(len(t.prompt_ids) for t in trajs)
    C = max(1, max(len(t.ids) for t in trajs))
    N = len(trajs)
    prompt_ids = torch.full((N, P), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((N, P), dtype=torch.long)
    completion_ids = torch.full((N, C), pad_id, dtype=torch.long)
    owner = torch.full((N, C), PAD, dtype=torch.int8)
    logps = torch.full((N, C), math.nan)
    for i, t in enumerate(trajs):
        if t.prompt_ids:
            prompt_ids[i, P - len(t.prompt_ids):] = torch.tensor(t.prompt_ids)
            prompt_mask[i, P - len(t.prompt_ids):] = 1
        if t.ids:
            completion_ids[i, :len(t.ids)] = torch.tensor(t.ids)
            owner[i, :len(t.ids)] = torch.tensor(t.owner, dtype=torch.int8)
            logps[i, :len(t.ids)] = torch.tensor(t.logps, dtype=torch.float32)
    decode = (lambda ids: tokenizer.decode(ids, skip_special_tokens=True)) if tokenizer is not None else (lambda ids: "")
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids, token_owner=owner,
        group_ids=group_ids, finish_reason=[t.finish_reason for t in trajs],
        prompts=prompts if prompts is not None else [decode(t.prompt_ids) for t in trajs],
        completions=[decode(t.ids) for t in trajs], sampler_logps=logps,
    )
