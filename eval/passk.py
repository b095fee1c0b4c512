"""pass@k, the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models
Trained on Code", eq. 1 and the numerically stable form in its Figure 3).

Why the product form: ``1 - C(n-c, k) / C(n, k)`` overflows floats for n in the hundreds when
computed with binomials; the equal product ``1 - prod_{i=n-c+1..n} (1 - k/i)`` never does.

>>> round(pass_at_k(10, 3, 1), 12)
0.3
>>> round(pass_at_k(10, 3, 10), 6)
1.0
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

__all__ = ["pass_at_k", "mean_pass_at_k", "valid_ks", "parse_ks"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples (drawn without replacement from n, c correct)
    is correct.

    Args:
        n: samples generated for the problem (n >= 1).
        c: how many of them passed (0 <= c <= n).
        k: budget (1 <= k <= n); pass@k for k > n is undefined and raises.

    >>> pass_at_k(5, 0, 2), pass_at_k(5, 5, 2), pass_at_k(4, 1, 2)
    (0.0, 1.0, 0.5)
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(c, (int, np.integer))
            and isinstance(k, (int, np.integer))):
        raise ValueError(f"pass_at_k needs integers, got n={n!r}, c={c!r}, k={k!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k needs n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} is undefined with n={n} samples: k must be in [1, n]. "
                         "Generate more samples (--n) or drop this k.")
    if n - c < k:  # every size-k draw contains a correct sample
        return 1.0
    # prod_{i=n-c+1}^{n} (1 - k/i)
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given (n, c) per problem; problems with n < k are an error.

    >>> mean_pass_at_k([(2, 1), (2, 0)], 1)
    0.25
    """
    values = [pass_at_k(int(n), int(c), k) for n, c in counts]
    return float(np.mean(values)) if values else float("nan")


def valid_ks(ks: Sequence[int], n: int) -> list[int]:
    """The ks that may be reported with n samples per problem (k <= n), sorted, deduplicated.

    >>> valid_ks([10, 1, 100], 20)
    [1, 10]
    """
    return sorted({int(k) for k in ks if 1 <= int(k) <= n})


def parse_ks(text: str) -> list[int]:
    """``"1,10,100"`` -> ``[1, 10, 100]``; raises ValueError naming the bad item.

    >>> parse_ks("1, 10")
    [1, 10]
    """
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--k: {part!r} is not a positive integer; write e.g. --k 1,10")
        out.append(int(part))
    if not out:
        raise ValueError("--k: no k given; write e.g. --k 1,10")
    return sorted(set(out))
