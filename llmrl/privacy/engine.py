"""Everything DP a run builds once: one PrivacyEngine (one ledger), the per-sample-gradient
module, the DP optimizer, the controller and the budget filter.

One PrivacyEngine per run on purpose: re-creating it starts an empty ledger and silently forgets
what was spent. Resume restores the ledger into this engine's accountant."""
from __future__ import annotations

import math
from functools import lru_cache
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from opacus import GradSampleModule, PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.optimizers import AdaClipDPOptimizer

from llmrl.config.schema import PrivacyConfig
from llmrl.privacy.budget import Budget, epsilon_of, rdp_epsilon
from llmrl.privacy.controllers import Controller, FixedController, Knobs, SacController
from llmrl.privacy.dp_optimizer import GroupDPOptimizer
from llmrl.privacy.groups import parameter_groups
from llmrl.privacy.sac import SacSettings


@dataclass
class PrivateTraining:
    cfg: PrivacyConfig
    engine: PrivacyEngine
    module: GradSampleModule
    optimizer: Any                  # GroupDPOptimizer or Opacus' AdaClipDPOptimizer
    controller: Controller
    budget: Budget
    group_names: list[str]
    baseline_sigma: float           # the fixed-controller noise that spends exactly the budget
    trajectory: list[dict[str, Any]] = field(default_factory=list)  # knobs per interval

    @property
    def ledger(self) -> list[tuple[float, float, int]]:
        return self.engine.accountant.history

    def epsilon(self) -> float:
        """Epsilon of the run's ledger. RDP: Opacus' orders and conversion with the one-step RDP
        cached (the accountant recomputes its fractional orders on every call, ~0.5 s each on CPU,
        and the loop asks every step); the test holds it equal to ``accountant.get_epsilon``."""
        if not self.ledger:
            return 0.0
        if self.cfg.accountant == "rdp":
            return rdp_epsilon(self.ledger, self.cfg.delta)
        return float(self.engine.accountant.get_epsilon(delta=self.cfg.delta))

    def epsilon_prv(self) -> float | None:
        """The same ledger through Opacus' PRV accountant (tighter; None where it fails numerically)."""
        try:
            return epsilon_of(self.ledger, self.cfg.delta, "prv")
        except Exception:  # noqa: BLE001 - PRV's numerical domain is narrower than RDP's; report RDP only
            return None

    def apply(self, knobs: Knobs, steps: int) -> dict[str, Any]:
        """Pass the controller's knobs through the privacy filter and set them for the next ``steps``
        (BudgetExhausted when nothing fits)."""
        if isinstance(self.optimizer, AdaClipDPOptimizer):  # Opacus adapts the clip; the noise is fixed
            factor = self.budget.filter(self.ledger, self.optimizer.noise_multiplier, steps)
            self.optimizer.noise_multiplier *= factor
            entry = {"clips": [float(self.optimizer.max_grad_norm)], "sigma_eff": self.optimizer.noise_multiplier}
        else:
            from llmrl.privacy.dp_optimizer import effective_noise

            factor = self.budget.filter(self.ledger, effective_noise(knobs.sigmas), steps)
            self.optimizer.set_knobs(knobs.clips, [s * factor for s in knobs.sigmas])
            entry = {"clips": list(self.optimizer.clips), "sigmas": list(self.optimizer.sigmas),
                     "sigma_eff": self.optimizer.noise_multiplier}
        entry.update(step=sum(h[2] for h in self.ledger), filter_factor=factor)
        self.trajectory.append(entry)
        return entry


    def pace_noise(self) -> float:
        """The SAC noise reference: fixed's sigma, corrected by how far the ledger is off fixed's
        schedule (``Budget.even_noise`` of the ledger over that of fixed's ledger after as many
        steps), so exactly fixed's sigma while the run spends like fixed DP-SGD."""
        done = sum(h[2] for h in self.ledger)
        on_schedule = [(self.baseline_sigma, self.budget.sample_rate, done)]
        if math.isclose(rdp_epsilon(self.ledger, self.cfg.delta), rdp_epsilon(on_schedule, self.cfg.delta), rel_tol=1e-9):
            return self.baseline_sigma
        return self.baseline_sigma * (_even_noise(self.budget, tuple(map(tuple, self.ledger)))
                                      / _even_noise(self.budget, tuple(on_schedule)))

    def restore(self, entry: dict[str, Any]) -> None:
        """Put back the knobs of a trajectory entry (resume in the middle of an interval)."""
        if isinstance(self.optimizer, AdaClipDPOptimizer):
            self.optimizer.max_grad_norm, self.optimizer.noise_multiplier = entry["clips"][0], entry["sigma_eff"]
        else:
            self.optimizer.set_knobs(entry["clips"], entry["sigmas"])


@lru_cache(maxsize=256)
def _even_noise(budget: Budget, ledger: tuple) -> float:
    return budget.even_noise(list(ledger), lo=min(budget.sigma_max, 0.05), hi=budget.sigma_max)


@lru_cache(maxsize=64)
def baseline_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The fixed-knob noise that spends exactly the budget (Opacus' ``get_noise_multiplier``; cached:
    it bisects over full accountant evaluations, seconds each, and runs of one bench share it)."""
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=accountant))


def build_private(cfg: PrivacyConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
                  num_rows: int, batch_size: int, total_steps: int, seed: int) -> PrivateTraining:
    """Wrap ``model`` and ``optimizer`` for DP-SGD over ``num_rows`` rows (Poisson rate batch_size / num_rows)."""
    sample_rate = batch_size / num_rows
    if sample_rate > 1:
        raise ValueError(f"sft.batch_size: {batch_size} exceeds the corpus size ({num_rows} rows)")
    budget = Budget(cfg.target_epsilon, cfg.delta, sample_rate, total_steps, cfg.sigma_max, cfg.accountant)
    budget.check_feasible()
    sigma = baseline_noise(cfg.target_epsilon, cfg.delta, sample_rate, total_steps, cfg.accountant)
    groups = parameter_groups(model)   # named before wrapping: GradSampleModule prefixes names with _module.
    try:
        engine = PrivacyEngine(accountant=cfg.accountant, secure_mode=cfg.secure_mode)
    except ImportError as exc:  # secure_mode draws noise from torchcsprng
        raise ValueError(f"privacy.secure_mode: true needs torchcsprng ({exc}). Fix: install torchcsprng "
                         "(https://github.com/pytorch/csprng), or secure_mode: false for experiments") from None
    module = GradSampleModule(model, loss_reduction="mean")
    common = dict(expected_batch_size=batch_size, loss_reduction="mean",
                  generator=engine.secure_rng if cfg.secure_mode else None, secure_mode=cfg.secure_mode)
    if cfg.controller == "adaptive":
        dp_opt = AdaClipDPOptimizer(
            optimizer, noise_multiplier=sigma, max_grad_norm=cfg.max_grad_norm,
            target_unclipped_quantile=cfg.target_unclipped_quantile,
            clipbound_learning_rate=cfg.clipbound_learning_rate, max_clipbound=cfg.clip_max,
            min_clipbound=cfg.clip_min, unclipped_num_std=max(batch_size / 20, sigma), **common)
        controller: Controller = FixedController(Knobs([cfg.max_grad_norm], [sigma]))
        names = ["all"]
    elif cfg.controller == "fixed":
        params = [p for g in groups.values() for p in g]
        dp_opt = GroupDPOptimizer(optimizer, groups=[params], clips=[cfg.max_grad_norm], sigmas=[sigma], **common)
        controller = FixedController(Knobs([cfg.max_grad_norm], [sigma]))
        names = ["all"]
    else:
        G = len(groups)
        baseline = Knobs([cfg.max_grad_norm / math.sqrt(G)] * G, [sigma * math.sqrt(G)] * G)
        dp_opt = GroupDPOptimizer(optimizer, groups=list(groups.values()), clips=baseline.clips,
                                  sigmas=baseline.sigmas, **common)
        s = cfg.sac
        controller = SacController(
            num_groups=G, baseline=baseline, clip_range=(cfg.clip_min, cfg.clip_max),
            sigma_range=(cfg.sigma_min, cfg.sigma_max), action_range=s.action_range, warmup=s.warmup_intervals, privacy_cost=s.privacy_cost,
            settings=SacSettings(hidden=s.hidden, lr=s.lr, gamma=s.gamma, updates_per_transition=s.updates_per_interval),
            seed=seed)
        if s.warm_start:
            saved = torch.load(s.warm_start, map_location="cpu", weights_only=True)
            controller.agent.load_state_dict(saved["agent"], with_buffer=True)
            controller.warmup = 0  # a trained policy acts from the first interval
        names = list(groups)
        # the filter's fallback for the rest of the run: at most action_range x fixed's noise, not sigma_max,
        # so no interval may spend what would leave the rest of the run far noisier than fixed DP-SGD
        # (at epsilon 1 one interval 11% below fixed's noise spent the budget, and the filter then held
        # sigma_max = 20 for the last 40% of the run)
        budget = replace(budget, sigma_max=min(cfg.sigma_max, s.action_range * sigma))
    dp_opt.attach_step_hook(engine.accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    return PrivateTraining(cfg=cfg, engine=engine, module=module, optimizer=dp_opt, controller=controller,
                           budget=budget, group_names=names, baseline_sigma=sigma)
