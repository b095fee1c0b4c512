"""The Updater owns optimization: optimizers, gradient clipping, micro-batch accumulation, the
learning-rate schedule, an optional second parameter set (a critic) and per-step hooks.

Why a seam of its own: everything that changes *how* gradients become parameter updates plugs in
here without touching the RL step. A DP-SGD optimizer (Opacus' DPOptimizer: per-sample clipping
plus noise) replaces ``optimizer``; a controller that retunes clipping/noise every K steps (RLDP)
is a hook; a critic is the second parameter set with its own optimizer and learning rate. The
RL step only says *what* to minimise, as a loss function over micro-batch rows."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch

from llmrl.trainer.distributed import sum_across_ranks, sum_dicts_across_ranks, sum_gradients

LossFn = Callable[[torch.Tensor], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]


class UpdateDiverged(RuntimeError):
    """A loss or a gradient norm was NaN/inf; nothing was applied for this optimizer step."""


class StepHook(Protocol):
    def __call__(self, updater: "Updater", step: int, stats: dict[str, float]) -> None:
        """Called after every optimizer step (``step`` counts optimizer steps from 1)."""


def build_optimizer(name: str, params: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float = 0.0,
                    args: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """Any ``torch.optim`` optimizer by class name (AdamW, Adam, SGD, ...)."""
    cls = getattr(torch.optim, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ValueError(f"trainer.optimizer: {name!r} is not a torch.optim optimizer")
    return cls(list(params), lr=lr, weight_decay=weight_decay, **(args or {}))


def build_scheduler(kind: str, optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int):
    from transformers import get_scheduler

    name = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}[kind]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


@dataclass
class ParamSet:
    """One set of parameters with its optimizer, schedule and clipping."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any = None
    max_grad_norm: float | None = None


@dataclass
class Updater:
    policy: ParamSet
    critic: ParamSet | None = None
    micro_batch_size: int = 512
    hooks: list[StepHook] = field(default_factory=list)
    optimizer_steps: int = 0

    def step(self, rows: torch.Tensor, loss_fn: LossFn) -> dict[str, float]:
        """One optimizer step over ``rows`` (a minibatch), accumulated over micro-batches.

        ``loss_fn(micro_rows)`` returns (loss, stats); each micro-batch loss must already be
        normalised by the whole minibatch, so accumulation equals one big batch. Stats are
        averaged with each micro-batch's share of rows; ``loss`` is summed (it is the minibatch
        loss)."""
        sets = [self.policy] + ([self.critic] if self.critic else [])
        for s in sets:
            s.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        global_rows = sum_across_ranks(len(rows))  # several processes: ``rows`` is this rank's share
        for micro in rows.split(self.micro_batch_size):
            if len(micro) == 0:  # this rank's share of the minibatch is empty: it only joins the sums
                continue
            loss, stats = loss_fn(micro)
            if not torch.isfinite(loss):
                raise UpdateDiverged(f"the loss is {loss.item()}")
            loss.backward()
            share = len(micro) / global_rows
            totals["loss"] = totals.get("loss", 0.0) + loss.item()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v) * share
        totals = sum_dicts_across_ranks(totals)  # the global minibatch's figures (a rank may hold no rows)
        for s in sets:
            sum_gradients(s.params)  # losses use the global normaliser: the sum is the global gradient
        for s, name in zip(sets, ("grad_norm", "critic_grad_norm")):
            norm = torch.nn.utils.clip_grad_norm_(s.params, s.max_grad_norm or float("inf"))
            if not torch.isfinite(norm):
                raise UpdateDiverged(f"the gradient norm is {norm.item()}")
            totals[name] = norm.item()
        for s in sets:
            s.optimizer.step()
        self.optimizer_steps += 1
        for hook in self.hooks:
            hook(self, self.optimizer_steps, totals)
        return totals

    def end_rl_step(self) -> None:
        """Advance the learning-rate schedules (once per RL step, also when no update ran)."""
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": a step with no update
            warnings.filterwarnings("ignore", message="Detected call of")
            for s in (self.policy, self.critic):
                if s is not None and s.scheduler is not None:
                    s.scheduler.step()

    @property
    def lr(self) -> float:
        return self.policy.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"optimizer_steps": self.optimizer_steps}
        for name, s in (("policy", self.policy), ("critic", self.critic)):
            if s is not None:
                out[name] = {"optimizer": s.optimizer.state_dict(),
                             "scheduler": s.scheduler.state_dict() if s.scheduler is not None else None}
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer_steps = state["optimizer_steps"]
        for name, s in (("policy", self.policy), ("critic", self.critic)):
            if s is None:
                continue
            if name not in state:
                raise ValueError(f"the checkpoint has no {name} optimizer state")
            s.optimizer.load_state_dict(state[name]["optimizer"])
            if s.scheduler is not None and state[name]["scheduler"] is not None:
                s.scheduler.load_state_dict(state[name]["scheduler"])
