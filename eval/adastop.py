"""AdaStop: how many seeds a comparison needs (Mathieu et al., 2023, arXiv 2306.10882).

A group-sequential permutation test over configurations: at each of at most ``K`` interims every
configuration still in an undecided comparison adds ``n`` seeds; the test says, per pair,
``larger`` / ``smaller`` (rejected equality, family-wise error <= ``alpha`` over all pairs and
interims) or ``equal`` (never rejected within the budget of ``n * K`` seeds), and stops a pair as
soon as its answer is clear. The test itself is the authors' maintained implementation
(``adastop.MultipleAgentsComparator``, PyPI ``adastop``); this module keeps its state in a JSON
file between calls (which scores went into which interim), so a user can run seeds, call
``llmrl compare --adastop STATE``, run the seeds it asks for, and call it again.

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
        self._comparator = self._new_comparator()

    def _new_comparator(self):
        from adastop import MultipleAgentsComparator

        return MultipleAgentsComparator(n=self.n, K=self.K, B=self.B, alpha=self.alpha, seed=self.seed)

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
    def finished(self) -> bool:
        return bool(self.interims) and self._comparator.is_finished or len(self.interims) >= self.K

    def active(self) -> list[str]:
        """Configurations still in an undecided comparison (all of them before the first interim)."""
        if not self.interims:
            return list(self.configs)
        if self.finished:
            return []
        idx = {int(i) for comp in self._comparator.current_comparisons for i in comp}
        return [c for i, c in enumerate(self.configs) if i in idx]

    def _feed(self, interim: Mapping[str, list]) -> None:
        self.interims.append({c: [list(x) for x in interim.get(c, [])] for c in self.configs})
        values = {c: np.array([float(s) for it in self.interims for _, s in it[c]]) for c in self.configs}
        self._comparator.partial_compare(values, verbose=False)

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
        comp = self._comparator
        decisions = {}
        if self.interims:
            for c in comp.comparisons:
                i, j = int(c[0]), int(c[1])
                decisions[f"{self.configs[i]} vs {self.configs[j]}"] = comp.decisions[str(c)]
        else:
            decisions = {f"{a} vs {b}": "continue" for i, a in enumerate(self.configs) for b in self.configs[i + 1:]}
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
