"""What a rollout engine returns: token ids plus, per token, who produced it.

Multi-turn tool use interleaves policy tokens with environment tokens (tool results) inside one
completion; only the policy's tokens are trained. Recording ownership per token index, at
generation time, means the loss mask never has to be recovered by re-searching decoded text."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

PAD, POLICY, ENV = 0, 1, 2  # values of RolloutBatch.token_owner


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 16
    greedy: bool = False


@dataclass
class RolloutBatch:
    """N = prompts x G rows, prompt-major (rows g*G .. g*G+G-1 share prompt g).

    prompt_ids     [N, P]  left-padded prompt tokens
    prompt_mask    [N, P]  1 = real prompt token
    completion_ids [N, C]  right-padded completion tokens (policy and environment)
    token_owner    [N, C]  PAD / POLICY / ENV per completion position
    group_ids      [N]     prompt index within the step
    truncated      [N]     True when the completion hit max_new_tokens without an end token
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    token_owner: torch.Tensor
    group_ids: torch.Tensor
    truncated: torch.Tensor
    prompts: list[str]
    completions: list[str]
    extras: dict[str, list] = field(default_factory=dict)

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

    def select(self, rows: torch.Tensor) -> "RolloutBatch":
        """The sub-batch of the given row indices (used to drop zero-variance groups)."""
        idx = rows.tolist()
        return RolloutBatch(
            prompt_ids=self.prompt_ids[rows],
            prompt_mask=self.prompt_mask[rows],
            completion_ids=self.completion_ids[rows],
            token_owner=self.token_owner[rows],
            group_ids=self.group_ids[rows],
            truncated=self.truncated[rows],
            prompts=[self.prompts[i] for i in idx],
            completions=[self.completions[i] for i in idx],
            extras={k: [v[i] for i in idx] for k, v in self.extras.items()},
        )
