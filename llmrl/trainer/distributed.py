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


def is_main() -> bool:
    """True on the process that writes outputs (metrics, checkpoints, final model): rank 0."""
    return world()[0] == 0


def init_from_env() -> tuple[int, int]:
    """Join the process group a launcher (torchrun, ``accelerate launch``) described in the
    environment (WORLD_SIZE > 1): gloo on CPU, NCCL on CUDA, each rank on GPU LOCAL_RANK. A
    plain single process initialises nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world()


def _comm_device() -> torch.device:
    """Where collective tensors must live: NCCL reduces only CUDA tensors, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def sum_across_ranks(value: float) -> float:
    """A Python number summed over ranks (the global minibatch's token or sequence count)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return float(t.item())


def any_across_ranks(flag: bool) -> bool:
    """True when any rank says so (a stop signal seen by one rank stops all at the same step)."""
    return sum_across_ranks(float(bool(flag))) > 0


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's equally sized [n, ...] tensor in rank order: [world * n, ...],
    the global batch's rows (ranks hold contiguous shares of the step's groups)."""
    size = world()[1]
    if size == 1:
        return t
    local = t.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local)
    return torch.cat(parts).to(t.device)


def gather_objects(obj):
    """Every rank's picklable ``obj``, in rank order (a single process: ``[obj]``)."""
    size = world()[1]
    if size == 1:
        return [obj]
    out: list = [None] * size
    dist.all_gather_object(out, obj)
    return out


def sum_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Sum every gradient over ranks in place (one flat all-reduce). Losses are normalised by
    the global minibatch, so the sum *is* the global gradient; a parameter without a gradient
    on this rank contributes zeros."""
    if world()[1] == 1:
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)  # on the parameters' device: gloo with CPU tensors, NCCL with CUDA ones
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def merge_metrics(m: dict, *, summed: tuple[str, ...] = ()) -> dict:
    """One step's metrics of the whole global batch from every rank's own: ranks hold equal
    numbers of rows, so a per-row mean over the global batch is the mean of the ranks' means;
    ``summed`` keys (row counts, throughput) add up. A key some ranks lack (a reward that
    failed on one rank only) is averaged over the ranks that report it."""
    if world()[1] == 1:
        return m
    per_rank = gather_objects(m)
    out: dict = {}
    for key in dict.fromkeys(k for r in per_rank for k in r):
        vals = [r[key] for r in per_rank if key in r]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = vals[0]
        else:
            out[key] = sum(vals) if key in summed else sum(vals) / len(vals)
    return out


def sum_dicts_across_ranks(d: dict[str, float]) -> dict[str, float]:
    """Every key's value summed over the ranks that report it (a rank whose share of a
    minibatch is empty reports no loss statistics; ``all_reduce`` per key would then pair up
    different keys on different ranks)."""
    if world()[1] == 1:
        return d
    out: dict[str, float] = {}
    for r in gather_objects(d):
        for k, v in r.items():
            out[k] = out.get(k, 0.0) + v
    return dict(sorted(out.items()))


def shard_rows(n: int) -> range:
    """This rank's contiguous share of ``n`` rows that need not divide evenly (held-out
    prompts: each rank evaluates its share once, instead of every rank all of them)."""
    rank, size = world()
    return range(rank * n // size, (rank + 1) * n // size)


def launcher_sharding() -> str | None:
    """The parameter sharding an ``accelerate launch`` config asked for (``"fsdp"`` or
    ``"deepspeed"``: accelerate says so in the environment it starts ranks with), or None for
    plain data parallel (recipes/accelerate/ddp.yaml, torchrun)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        return "deepspeed"
    return None


def shard_groups(n_groups: int) -> slice:
    """This rank's contiguous share of the step's prompt groups (whole groups, never split)."""
    rank, size = world()
    if n_groups % size:
        raise ValueError(f"trainer.prompts_per_step: {n_groups} is not divisible by the {size} processes")
    per = n_groups // size
    return slice(rank * per, (rank + 1) * per)
