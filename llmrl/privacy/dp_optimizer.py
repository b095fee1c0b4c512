"""DP-SGD with one clipping threshold C_g and one noise multiplier sigma_g per parameter group.

Accounting (why ``noise_multiplier`` is sigma_eff): each sample's clipped gradient has group
norms ||g_i,g|| <= C_g and group g receives Gaussian noise of std sigma_g * C_g. Dividing group g
by sigma_g * C_g turns this into one Gaussian mechanism with unit noise and sensitivity
sqrt(sum_g (C_g / (sigma_g C_g))^2) = sqrt(sum_g sigma_g^-2), i.e. noise multiplier

    sigma_eff = (sum_g sigma_g^-2)^(-1/2).

G groups at sigma each give only sigma / sqrt(G). Opacus' accountant hook reads
``optimizer.noise_multiplier`` at every step, so it must hold sigma_eff, which ``set_knobs``
keeps up to date."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _generate_noise, _mark_as_processed


def effective_noise(sigmas: Sequence[float]) -> float:
    """sigma_eff = (sum_g sigma_g^-2)^(-1/2), the noise multiplier the accountant must record.

    >>> round(effective_noise([2.0, 2.0, 2.0, 2.0]), 6)
    1.0
    >>> effective_noise([1.0, float("inf")])  # an infinitely noised group adds no privacy cost
    1.0
    """
    if any(s <= 0 for s in sigmas):
        raise ValueError(f"noise multipliers must be > 0, got {list(sigmas)}")
    return 1.0 / math.sqrt(sum(1.0 / s**2 for s in sigmas))


class GroupDPOptimizer(DPOptimizer):
    """Opacus DPOptimizer whose clipping and noise are set per group (``set_knobs``).

    ``groups`` lists, per group, the parameters it holds (all of the optimizer's parameters, each
    exactly once). ``max_grad_norm`` and ``noise_multiplier`` of the base class hold the combined
    bound sqrt(sum C_g^2) and sigma_eff, which is what Opacus' accountant hook records."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, groups: Sequence[Sequence[torch.nn.Parameter]],
                 clips: Sequence[float], sigmas: Sequence[float], expected_batch_size: int,
                 loss_reduction: str = "mean", generator=None, secure_mode: bool = False):
        super().__init__(optimizer, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=expected_batch_size,
                         loss_reduction=loss_reduction, generator=generator, secure_mode=secure_mode)
        index = {id(p): i for i, p in enumerate(self.params)}
        self.group_of = [-1] * len(self.params)
        for g, members in enumerate(groups):
            for p in members:
                if id(p) not in index:
                    raise ValueError("a group holds a parameter the optimizer does not train")
                self.group_of[index[id(p)]] = g
        if -1 in self.group_of:
            raise ValueError("every trained parameter must belong to exactly one group")
        self.num_groups = len(groups)
        self.set_knobs(clips, sigmas)

    def set_knobs(self, clips: Sequence[float], sigmas: Sequence[float]) -> None:
        """Set C_g and sigma_g for the following steps (and sigma_eff for the accountant)."""
        if len(clips) != self.num_groups or len(sigmas) != self.num_groups:
            raise ValueError(f"expected {self.num_groups} clips and sigmas, got {len(clips)} and {len(sigmas)}")
        if any(c <= 0 for c in clips):
            raise ValueError(f"clipping thresholds must be > 0, got {list(clips)}")
        self.clips = [float(c) for c in clips]
        self.sigmas = [float(s) for s in sigmas]
        self.noise_multiplier = effective_noise(self.sigmas)
        self.max_grad_norm = math.sqrt(sum(c * c for c in self.clips))

    def clip_and_accumulate(self) -> None:
        # per-sample norm of each group: sqrt of the sum of its parameters' squared norms   [B] per group
        sq = [None] * self.num_groups
        for g_s, g in zip(self.grad_samples, self.group_of):
            n2 = g_s.reshape(len(g_s), -1).pow(2).sum(-1)
            sq[g] = n2 if sq[g] is None else sq[g] + n2
        factors = [(c / (n2.sqrt() + 1e-6)).clamp(max=1.0) for c, n2 in zip(self.clips, sq)]
        for p, g in zip(self.params, self.group_of):
            _check_processed_flag(p.grad_sample)
            grad_sample = self._get_flat_grad_sample(p).to(p.dtype)
            grad = torch.einsum("i,i...", factors[g].to(grad_sample.device, p.dtype), grad_sample)
            p.summed_grad = grad if p.summed_grad is None else p.summed_grad + grad
            _mark_as_processed(p.grad_sample)

    def add_noise(self) -> None:
        for p, g in zip(self.params, self.group_of):
            _check_processed_flag(p.summed_grad)
            noise = _generate_noise(std=self.sigmas[g] * self.clips[g], reference=p.summed_grad,
                                    generator=self.generator, secure_mode=self.secure_mode)
            p.grad = (p.summed_grad + noise).view_as(p)
            _mark_as_processed(p.summed_grad)

    def noisy_group_norms(self) -> list[float]:
        """Norms of each group's noisy aggregated gradient (``p.grad`` after ``step``): post-processing
        of the mechanism's output, so a controller may read them without extra privacy cost."""
        sq = [0.0] * self.num_groups
        for p, g in zip(self.params, self.group_of):
            if p.grad is not None:
                sq[g] += float(p.grad.pow(2).sum())
        return [math.sqrt(s) for s in sq]
