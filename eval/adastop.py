"""AdaStop: how many seeds a comparison needs (Mathieu et al., 2023, arXiv 2306.10882).

A group-sequential permutation test over configurations: at each of at most ``K`` interims every
configuration still in an undecided comparison adds ``n`` seeds; the test says, per pair,
``larger`` / ``smaller`` (rejected equality, family-wise error <= ``alpha`` over all pairs and
interims) or ``equal`` (never rejected within the budget of ``n * K`` seeds), and stops a pair as
soon as its answer is clear. State is a JSON file (which scores went into which interim), so a
user can run seeds, call ``llmrl compare --adastop STATE``, run the seeds it asks for, and call it
again; each call replays the test from that file (same permutations: they are seeded).

Written here from the paper's algorithm (Sec. 3: permutations within each interim block, the
statistic summed over blocks, linear alpha spending, boundaries from the permutation distribution
conditional on not having stopped earlier, step-down over pairs) rather than taken from PyPI
``adastop`` 0.1.3: that package compares the observed |mean difference| with the permutation
distribution of the *signed* difference, and we measured 0.115 false rejections at alpha = 0.05
for one pair and one interim (0.105 over 4 interims) on data with no difference; this version stays
within alpha (tests/test_compare_adastop.py).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> test = AdaStop(["a", "b"], n=5, K=4, alpha=0.05, B=2000, seed=0)
>>> res = test.run(lambda config, m: list(rng.normal(0.0 if config == "a" else 3.0, 1.0, m)))
>>> res["decisions"]["a vs b"], res["seeds_used"]["a"] < 20
('smaller', True)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["AdaStop"]


class AdaStop:
    """The AdaStop test over ``configs`` with ``n`` seeds per interim, at most ``K`` interims.

    Args:
        configs: configuration names (pairs are all ``(i, j)``, ``i < j`` in this order).
        n: seeds each configuration adds per interim.
        K: maximum number of interims (fixed budget: ``n * K`` seeds per configuration).
        alpha: family-wise type-I error over all pairs.
        B: random permutations approximating the permutation distribution.
        seed: RNG seed of the permutations (a replay from the state file gives the same answer).
    """

    def __init__(self, configs: Sequence[str], *, n: int = 5, K: int = 4, alpha: float = 0.05, B: int = 10_000,
                 seed: int = 0):
        if len(configs) < 2:
            raise ValueError(f"AdaStop compares at least 2 configurations, got {list(configs)}")
        if n < 1 or K < 1 or not 0 < alpha < 1:
            raise ValueError(f"AdaStop needs n >= 1, K >= 1 and 0 < alpha < 1 (got n={n}, K={K}, alpha={alpha})")
        self.configs, self.n, self.K, self.alpha, self.B, self.seed = list(configs), n, K, alpha, B, seed
        self.interims: list[dict[str, list[list]]] = []  # per interim: {config: [[run_id, score], ...]}
        self._pending: dict[str, int] = {}  # fresh scores not yet used, per config (from the last update)
        self._decisions: dict[tuple[int, int], str] = {}
        self._replay()

    # ---------------------------------------------------------------- state
    def to_json(self) -> dict:
        return {"method": "adastop", "configs": self.configs, "n": self.n, "K": self.K, "alpha": self.alpha,
                "B": self.B, "seed": self.seed, "interims": self.interims}

    @classmethod
    def from_json(cls, d: Mapping) -> "AdaStop":
        test = cls(d["configs"], n=d["n"], K=d["K"], alpha=d["alpha"], B=d["B"], seed=d["seed"])
        for interim in d["interims"]:
            test._feed(interim)
        return test

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def load_or_new(cls, path: str | Path, configs: Sequence[str], **kw) -> "AdaStop":
        path = Path(path)
        if not path.is_file():
            return cls(configs, **kw)
        test = cls.from_json(json.loads(path.read_text()))
        if sorted(test.configs) != sorted(configs):
            raise ValueError(f"{path} holds an AdaStop test of {test.configs}, but these runs are {sorted(configs)}; "
                             f"use another --adastop file for another comparison")
        return test

    # ---------------------------------------------------------------- the test
    @property
    def pairs(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(len(self.configs)) for j in range(i + 1, len(self.configs))]

    @property
    def finished(self) -> bool:
        return bool(self.interims) and all(d != "continue" for d in self._decisions.values())

    def active(self) -> list[str]:
        """Configurations still in an undecided comparison (all of them before the first interim)."""
        idx = {i for pair, d in self._decisions.items() if d == "continue" for i in pair}
        return [c for i, c in enumerate(self.configs) if i in idx]

    def _feed(self, interim: Mapping[str, list]) -> None:
        self.interims.append({c: [list(x) for x in interim.get(c, [])] for c in self.configs})
        self._replay()

    def _replay(self) -> None:
        """Decisions after every interim so far, computed from the stored scores."""
        B, pairs = self.B, self.pairs
        decisions = {p: "continue" for p in pairs}
        s_perm = {p: np.zeros(B) for p in pairs}  # summed permuted mean differences, [B] per pair
        s_obs = {p: 0.0 for p in pairs}
        alive = np.ones(B, dtype=bool)  # permutation paths that crossed no earlier boundary
        spent = 0.0
        for k, block in enumerate(self.interims):
            active = [p for p in pairs if decisions[p] == "continue"]
            for p in active:
                a = np.array([s for _, s in block[self.configs[p[0]]]], dtype=np.float64)
                b = np.array([s for _, s in block[self.configs[p[1]]]], dtype=np.float64)
                z = np.concatenate([a, b])
                rng = np.random.default_rng([self.seed, k, p[0], p[1]])
                perm = np.argsort(rng.random((B, len(z))), axis=1)
                perm[0] = np.arange(len(z))  # the observed labelling is one of the permutations
                zp = z[perm]
                s_perm[p] += zp[:, :len(a)].mean(1) - zp[:, len(a):].mean(1)
                s_obs[p] += a.mean() - b.mean()
            level = self.alpha * (k + 1) / self.K  # linear spending: alpha * k / K by interim k
            add, bound, t_max = 0.0, np.inf, None
            while active:  # step-down: reject the largest, recompute the boundary without it
                t_max = np.max(np.abs(np.stack([s_perm[p] for p in active])), axis=0)  # [B]
                vals = np.sort(t_max[alive])
                above = len(vals) - np.searchsorted(vals, vals, side="right")  # paths strictly above each value
                ok = spent + above / B <= level + 1e-12
                bound, add = (vals[ok][0], above[ok][0] / B) if ok.any() else (np.inf, 0.0)
                top = max(active, key=lambda p: abs(s_obs[p]))
                if abs(s_obs[top]) > bound:
                    decisions[top] = "larger" if s_obs[top] > 0 else "smaller"
                    active.remove(top)
                else:
                    break
            spent += add
            if t_max is not None:
                alive &= t_max <= bound
            if k == self.K - 1:
                decisions = {p: ("equal" if d == "continue" else d) for p, d in decisions.items()}
        self._decisions = decisions

    def used_ids(self) -> set[str]:
        return {str(i) for it in self.interims for c in self.configs for i, _ in it[c]}

    def update(self, available: Mapping[str, Sequence[tuple[str, float]]]) -> dict:
        """Feed every interim that ``available`` (``{config: [(run_id, score), ...]}``, all runs so
        far; already used ones are skipped) completes; returns :meth:`result`."""
        used = self.used_ids()
        fresh = {c: [(str(i), float(s)) for i, s in available.get(c, []) if str(i) not in used] for c in self.configs}
        while not self.finished:
            act = self.active()
            if any(len(fresh[c]) < self.n for c in act):
                break
            self._feed({c: fresh[c][:self.n] for c in act})
            for c in act:
                fresh[c] = fresh[c][self.n:]
        self._pending = {c: len(v) for c, v in fresh.items()}
        return self.result()

    def run(self, draw: Callable[[str, int], Sequence[float]]) -> dict:
        """Run the whole test, drawing ``draw(config, m)`` -> m new scores when it asks (benches)."""
        count = {c: 0 for c in self.configs}
        pool: dict[str, list[tuple[str, float]]] = {c: [] for c in self.configs}
        while not self.finished:
            for c in self.active():
                pool[c] += [(f"{c}#{count[c] + i}", s) for i, s in enumerate(draw(c, self.n))]
                count[c] += self.n
            self.update(pool)
        return self.result()

    def result(self) -> dict:
        """Decisions per pair (``"a vs b": larger | smaller | equal | continue``; ``larger``: a's
        mean is larger), seeds used per configuration, and what to run next."""
        decisions = {f"{self.configs[i]} vs {self.configs[j]}": d for (i, j), d in self._decisions.items()}
        used = {c: sum(len(it[c]) for it in self.interims) for c in self.configs}
        need = {c: max(0, self.n - self._pending.get(c, 0)) for c in self.active()}
        if need:
            msg = f"after interim {len(self.interims)}/{self.K}: run " + \
                  ", ".join(f"{m} more seed(s) of {c}" for c, m in need.items()) + " (then call again)"
        else:
            msg = "finished after {} interim(s): ".format(len(self.interims)) + \
                  "; ".join(f"{k}: {v}" for k, v in decisions.items())
        return {"decisions": decisions, "seeds_used": used, "need_more": need, "finished": not need,
                "interims": len(self.interims), "n": self.n, "K": self.K, "alpha": self.alpha, "message": msg}
