"""Who sets the DP-SGD knobs (per-group clip C_g and noise sigma_g) every K steps.

``FixedController`` is plain DP-SGD: flat clipping at C and the noise that spends exactly the
budget over the run (Opacus' ``get_noise_multiplier``). ``SacController`` is the RLDP
hyper-policy. Both see only an ``Observation`` of privacy-safe quantities (no raw per-sample
norms, no clip fractions), and their proposals still pass the privacy filter
(``llmrl.privacy.budget``), which may raise the noise."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import torch

from llmrl.privacy.dp_optimizer import effective_noise
from llmrl.privacy.sac import SacAgent, SacSettings


@dataclass
class Knobs:
    clips: list[float]   # [G] C_g
    sigmas: list[float]  # [G] sigma_g; the accountant records (sum_g sigma_g^-2)^-1/2


@dataclass
class Observation:
    """Privacy-safe state at an interval boundary: all of it is public or post-processing of the
    mechanism's output (noisy gradients) or of held-out / public data."""

    progress: float                 # t / T
    epsilon_frac: float             # epsilon spent / target
    noisy_norms: list[float]        # [G] norms of the noisy aggregated gradient, mean over the interval
    noisy_norms_ema: list[float]    # [G] their exponential moving average
    update_ratio: float             # ||update|| / ||weights|| of the trained parameters over the interval
    val_loss: float                 # validation loss (held-out or public rows)
    val_loss_start: float           # the first validation loss, to scale val_loss
    pace_sigma: float | None = None # noise that spends the remaining budget evenly (None: fixed's sigma)


class Controller(Protocol):
    def propose(self, obs: Observation) -> Knobs: ...
    def feedback(self, obs: Observation, epsilon_frac_of_interval: float) -> dict[str, float]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class FixedController:
    knobs: Knobs

    def propose(self, obs: Observation) -> Knobs:
        return self.knobs

    def feedback(self, obs: Observation, epsilon_frac_of_interval: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def relative(a: float, reference: float, log_range: float) -> float:
    """Map a in [-1, 1] to reference * exp(a * log_range): a = 0 is the reference itself.

    >>> [round(relative(a, 2.0, math.log(2)), 9) for a in (-1, 0, 1)]
    [1.0, 2.0, 4.0]
    """
    a = min(max(a, -1.0), 1.0)
    return float(reference * math.exp(a * log_range))


@dataclass
class SacController:
    """RLDP: SAC acts on ``[a_1..a_G, a_noise]`` in [-1, 1]^(G+1) (tanh-squashed), RELATIVE to
    fixed DP-SGD, so the zero action is fixed DP-SGD's knobs and the policy only moves away from
    them as far as ``action_range`` (a factor each way) allows:

    - clip C_g = baseline C_g * exp(a_g * ln action_range) (baseline: C / sqrt(G) per group, whose
      combined bound is fixed's C);
    - noise sigma_eff = pace * exp(a_noise * ln action_range), where ``pace`` (``Observation.pace_sigma``)
      is the noise that would spend the remaining budget evenly: fixed's sigma while the ledger is on
      fixed's schedule, more after the policy saved less, so it cannot front-load the budget;
    - each group gets sigma_g = sigma_eff * sqrt(G), so the accounted noise is sigma_eff.

    Knobs are then held to [clip_min, clip_max] and [sigma_min, sigma_max]; the privacy filter
    still has the last word. Why relative: from-scratch actions over the whole ranges (the first
    design) set clips of 4-13 and noise of 0.7-20 from ~30 transitions and lost 16-28% perplexity
    to fixed (docs/benchmarks.md). The first ``warmup`` intervals use the zero action; reward =
    relative validation improvement - privacy_cost * epsilon spent / target."""

    num_groups: int
    baseline: Knobs
    clip_range: tuple[float, float]
    sigma_range: tuple[float, float]
    action_range: float = 2.0
    warmup: int = 1
    privacy_cost: float = 1.0
    settings: SacSettings = field(default_factory=SacSettings)
    seed: int = 0
    intervals: int = 0
    agent: SacAgent = field(init=False)
    _last: tuple[torch.Tensor, torch.Tensor, float] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.action_range < 1.0:
            raise ValueError(f"privacy.sac.action_range: {self.action_range} must be >= 1 (a factor each way)")
        self.action_dim = self.num_groups + 1
        self.agent = SacAgent(self.state_dim, self.action_dim, settings=self.settings, seed=self.seed)
        self.prev_action = torch.zeros(self.action_dim)
        self.baseline_sigma_eff = effective_noise(self.baseline.sigmas)

    @property
    def state_dim(self) -> int:
        return 2 + 2 * self.num_groups + 2 + self.num_groups + 1

    def features(self, obs: Observation) -> torch.Tensor:
        scale = max(obs.val_loss_start, 1e-8)
        public = [obs.progress, obs.epsilon_frac, *[math.log1p(n) for n in obs.noisy_norms],
                  *[math.log1p(n) for n in obs.noisy_norms_ema], math.log1p(100 * obs.update_ratio),
                  obs.val_loss / scale]
        return torch.cat([torch.tensor(public, dtype=torch.float32), self.prev_action.float()])

    def knobs_of(self, action: torch.Tensor, pace_sigma: float | None = None) -> Knobs:
        """The knobs of ``action`` given the pacing noise (None: fixed's sigma)."""
        G, r = self.num_groups, math.log(self.action_range)
        lo, hi = self.clip_range
        clips = [min(max(relative(float(a), c, r), lo), hi) for a, c in zip(action[:G], self.baseline.clips)]
        ref = self.baseline_sigma_eff if pace_sigma is None else pace_sigma
        sigma_eff = min(max(relative(float(action[G]), ref, r), self.sigma_range[0]), self.sigma_range[1])
        scale = sigma_eff / self.baseline_sigma_eff  # exactly 1.0 at the zero action on fixed's schedule
        return Knobs(clips=clips, sigmas=[s * scale for s in self.baseline.sigmas])

    def propose(self, obs: Observation) -> Knobs:
        state = self.features(obs)
        action = torch.zeros(self.action_dim) if self.intervals < self.warmup else self.agent.act(state)
        self._last = (state, action, obs.val_loss)
        self.prev_action = action
        self.intervals += 1
        return self.knobs_of(action, obs.pace_sigma)

    def feedback(self, obs: Observation, epsilon_frac_of_interval: float) -> dict[str, float]:
        """Store the finished interval's transition (``epsilon_frac_of_interval`` = epsilon it spent
        / target) and train the agent."""
        if self._last is None:
            return {}
        state, action, val_before = self._last
        reward = (val_before - obs.val_loss) / max(val_before, 1e-8) - self.privacy_cost * epsilon_frac_of_interval
        self.agent.remember(state, action, reward, self.features(obs))
        return {"sac/reward": reward, **self.agent.learn()}

    def state_dict(self) -> dict:
        # _last is the open interval's (state, action, val loss): without it a run resumed at an interval
        # boundary would skip that interval's transition and the agent would learn (and act) differently
        return {"agent": self.agent.state_dict(), "intervals": self.intervals, "prev_action": self.prev_action,
                "last": self._last}

    def load_state_dict(self, state: dict) -> None:
        self.agent.load_state_dict(state["agent"])
        self.intervals = state["intervals"]
        self.prev_action = state["prev_action"]
        self._last = state.get("last")
