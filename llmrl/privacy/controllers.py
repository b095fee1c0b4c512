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


def log_uniform(a: float, lo: float, hi: float) -> float:
    """Map a in [-1, 1] to [lo, hi] log-uniformly.

    >>> [round(log_uniform(a, 0.1, 10), 9) for a in (-1, 0, 1)]
    [0.1, 1.0, 10.0]
    """
    a = min(max(a, -1.0), 1.0)
    return float(math.exp(math.log(lo) + (a + 1) / 2 * (math.log(hi) - math.log(lo))))


def inverse_log_uniform(x: float, lo: float, hi: float) -> float:
    x = min(max(x, lo), hi)
    return 2 * (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo)) - 1


@dataclass
class SacController:
    """RLDP: SAC acts on ``[C_1..C_G, sigma_eff]`` (G + 1 dims, tanh-squashed, mapped log-uniformly
    to [clip_min, clip_max] and [sigma_min, sigma_max]); each group gets sigma_g = sigma_eff *
    sqrt(G), so the accounted noise is sigma_eff. The first ``warmup`` intervals use the baseline
    action; reward = relative validation improvement - privacy_cost * epsilon spent / target."""

    num_groups: int
    baseline: Knobs
    clip_range: tuple[float, float]
    sigma_range: tuple[float, float]
    warmup: int = 1
    privacy_cost: float = 1.0
    settings: SacSettings = field(default_factory=SacSettings)
    seed: int = 0
    intervals: int = 0
    agent: SacAgent = field(init=False)
    _last: tuple[torch.Tensor, torch.Tensor, float] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.action_dim = self.num_groups + 1
        self.agent = SacAgent(self.state_dim, self.action_dim, settings=self.settings, seed=self.seed)
        G = self.num_groups
        self.prev_action = torch.tensor(
            [inverse_log_uniform(c, *self.clip_range) for c in self.baseline.clips]
            + [inverse_log_uniform(self.baseline.sigmas[0] / math.sqrt(G), *self.sigma_range)])

    @property
    def state_dim(self) -> int:
        return 2 + 2 * self.num_groups + 2 + self.num_groups + 1

    def features(self, obs: Observation) -> torch.Tensor:
        scale = max(obs.val_loss_start, 1e-8)
        public = [obs.progress, obs.epsilon_frac, *[math.log1p(n) for n in obs.noisy_norms],
                  *[math.log1p(n) for n in obs.noisy_norms_ema], math.log1p(100 * obs.update_ratio),
                  obs.val_loss / scale]
        return torch.cat([torch.tensor(public, dtype=torch.float32), self.prev_action.float()])

    def knobs_of(self, action: torch.Tensor) -> Knobs:
        G = self.num_groups
        clips = [log_uniform(float(a), *self.clip_range) for a in action[:G]]
        sigma_eff = log_uniform(float(action[G]), *self.sigma_range)
        return Knobs(clips=clips, sigmas=[sigma_eff * math.sqrt(G)] * G)

    def propose(self, obs: Observation) -> Knobs:
        state = self.features(obs)
        action = self.prev_action.clone() if self.intervals < self.warmup else self.agent.act(state)
        self._last = (state, action, obs.val_loss)
        self.prev_action = action
        self.intervals += 1
        return self.knobs_of(action)

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
