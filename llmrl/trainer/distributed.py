"""Data-parallel collectives for multi-process training (``accelerate launch`` / ``torchrun``).

Why a file of its own: the RL step stays written for one process; the few places where ranks
must agree (the loss normaliser of a minibatch, the summed gradient, gathered metrics) call
these functions, which are no-ops in a single process. Each rank trains on whole prompt groups
(a group never spans ranks, so group advantages need no communication), and every loss is
normalised by the *global* minibatch (sequences, tokens), so summing the ranks' gradients
equals the gradient of one process holding the whole global batch, whatever the world size."""
from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> tuple[int, int]:
    """Join the process group a launcher described in the environment (WORLD_SIZE > 1):
    gloo on CPU, NCCL on CUDA. A plain single process initialises nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world()


def sum_across_ranks(value: float) -> float:
    """A Python number summed over ranks (the global minibatch's token or sequence count)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item())


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every gradient over ranks in place (one flat all-reduce). Losses are normalised by
    the global minibatch, so the sum *is* the global gradient; a parameter without a gradient
    on this rank contributes zeros."""
    if world()[1] == 1:
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def shard_groups(n_groups: int) -> slice:
    """This rank's contiguous share of the step's prompt groups (whole groups, never split)."""
    rank, size = world()
    if n_groups % size:
        raise ValueError(f"trainer.prompts_per_step: {n_groups} is not divisible by the {size} processes")
    per = n_groups // size
    return slice(rank * per, (rank + 1) * per)
