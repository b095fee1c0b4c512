"""The privacy filter: no interval of DP-SGD steps starts unless the whole run can still finish
within (target epsilon, delta).

Before each interval of K steps the filter projects the final epsilon of the ledger so far, plus
the K steps at the proposed noise, plus every remaining step at ``sigma_max`` (the most noise the
run may use, hence the cheapest way to finish). If the projection exceeds the target, the
proposed noise is raised (bisection on a common factor of all sigma_g, so sigma_eff rises with
it); if even sigma_max for this interval cannot fit, training stops (``BudgetExhausted``).
By induction the realised epsilon never exceeds the target: every accepted interval leaves a
continuation that fits, and the last interval's projection *is* the final ledger.

The projection uses Opacus' own accountant on a copy of the ledger (same RDP orders, same
conversion), so it is exactly the number the run's accountant will report."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from opacus.accountants import RDPAccountant, create_accountant
from opacus.accountants.analysis import rdp as rdp_analysis

from llmrl.privacy.errors import BudgetExhausted

History = list[tuple[float, float, int]]  # (noise multiplier, sample rate, steps): Opacus' ledger format


def epsilon_of(history: History, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of a ledger (``accountant.history`` format), computed by a fresh Opacus accountant."""
    acc = create_accountant(mechanism=accountant)
    acc.history = [tuple(h) for h in history if h[2] > 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta)) if acc.history else 0.0


@lru_cache(maxsize=4096)
def _rdp_one_step(sample_rate: float, sigma: float) -> np.ndarray:
    """RDP of one subsampled Gaussian step at Opacus' default orders (compose by adding, times steps)."""
    return np.asarray(rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=sigma, steps=1,
                                               orders=RDPAccountant.DEFAULT_ALPHAS))


def rdp_epsilon(history: History, delta: float) -> float:
    """Epsilon of a ledger exactly as Opacus' RDPAccountant computes it, with one-step RDP cached."""
    if not any(h[2] for h in history):
        return 0.0
    rdp = sum(_rdp_one_step(q, s) * n for s, q, n in history if n > 0)
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound, still a valid one
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


@dataclass(frozen=True)
class Budget:
    """The (epsilon, delta) contract of one run and the noise range the run may use."""

    target_epsilon: float
    delta: float
    sample_rate: float
    total_steps: int
    sigma_max: float
    accountant: str = "rdp"
    # RDP sums can differ from the accountant's in the last bits: accept only with this relative margin
    margin: float = 1e-9

    @property
    def limit(self) -> float:
        return self.target_epsilon * (1.0 - self.margin)

    def projected(self, history: History, sigma_eff: float, steps: int) -> float:
        """Final epsilon if the next ``steps`` run at ``sigma_eff`` and the rest at ``sigma_max``."""
        done = sum(h[2] for h in history)
        rest = self.total_steps - done - steps
        if rest < 0:
            raise ValueError(f"{steps} more steps would exceed the run's {self.total_steps} steps ({done} done)")
        return self._epsilon(list(history) + [(sigma_eff, self.sample_rate, steps), (self.sigma_max, self.sample_rate, rest)])

    def _epsilon(self, plan: History) -> float:
        if self.accountant == "rdp":  # same orders and conversion as RDPAccountant, one-step RDP cached
            return rdp_epsilon(plan, self.delta)
        return epsilon_of(plan, self.delta, self.accountant)

    def check_feasible(self) -> None:
        """Refuse a run that cannot fit even at sigma_max for every step (at setup, before training)."""
        eps = self.projected([], self.sigma_max, 0)
        if eps > self.limit:
            raise ValueError(
                f"privacy: {self.total_steps} steps at sample rate {self.sample_rate:.4g} spend epsilon {eps:.3f} "
                f"even at privacy.sigma_max={self.sigma_max}, above privacy.target_epsilon={self.target_epsilon}. "
                "Fix: raise sigma_max, lower the steps or the logical batch size, or raise the target.")

    def filter(self, history: History, sigma_eff: float, steps: int, *, tol: float = 1e-4) -> float:
        """The factor (>= 1) to multiply every sigma_g by so the next ``steps`` fit the budget.

        Raises BudgetExhausted when even ``sigma_max`` for these steps cannot fit."""
        if self.projected(history, sigma_eff, steps) <= self.limit:
            return 1.0
        hi = max(self.sigma_max / sigma_eff, 1.0)
        if self.projected(history, sigma_eff * hi, steps) > self.limit:
            spent = epsilon_of(history, self.delta, self.accountant)
            raise BudgetExhausted(
                f"the privacy budget is spent: epsilon {spent:.3f} of {self.target_epsilon} after "
                f"{sum(h[2] for h in history)} of {self.total_steps} steps, and even sigma_max={self.sigma_max} "
                "for the remaining steps would exceed the target. Training stopped; the last checkpoint is usable.")
        lo = 1.0
        while hi - lo > tol * hi:
            mid = (lo + hi) / 2
            if self.projected(history, sigma_eff * mid, steps) <= self.limit:
                hi = mid
            else:
                lo = mid
        return hi

    def even_noise(self, history: History, *, lo: float, hi: float, tol: float = 1e-3) -> float:
        """The one noise multiplier that, held for every remaining step, ends the run exactly at the
        limit (bisection in [lo, hi]; lo when even that under-spends, hi when even that over-spends).

        The SAC controller's noise reference: acting relative to it, a policy that spent too much
        early gets more noise later and one that saved gets less, instead of spending the budget up
        front and leaving the filter to pin the rest of the run at ``sigma_max``."""
        rest = self.total_steps - sum(h[2] for h in history)
        if rest <= 0:
            return hi

        def final(sigma: float) -> float:
            return self._epsilon(list(history) + [(sigma, self.sample_rate, rest)])

        if final(lo) <= self.limit:
            return lo
        if final(hi) > self.limit:
            return hi
        while hi - lo > tol * hi:
            mid = (lo * hi) ** 0.5  # geometric: the range spans orders of magnitude
            lo, hi = (lo, mid) if final(mid) <= self.limit else (mid, hi)
        return hi
