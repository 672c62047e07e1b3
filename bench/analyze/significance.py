"""Significance of a change between two sets of latency samples (BASE, NEW): the Mann-Whitney U test and
percentile-bootstrap confidence intervals of the ratio NEW/BASE of a statistic. Pure functions over numbers;
archbench.bench.analyze.compare applies them to pairs of records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U statistic of NEW: the number of (base, new) pairs with new > base, ties counting 1/2
    z: float  # standardized U (continuity- and tie-corrected); > 0 means NEW tends to be larger (slower)
    p_value: float  # two-sided, normal approximation
    n_base: int
    n_new: int

    @property
    def prob_new_greater(self) -> float:
        """P(a NEW sample > a BASE sample) + P(tie)/2: 0.5 for no shift (the 'common-language effect size')."""
        return self.u / (self.n_base * self.n_new)


def _average_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of x, ties sharing their average rank; and the size of every tie group."""
    order = np.argsort(x, kind="mergesort")
    _, start, counts = np.unique(x[order], return_index=True, return_counts=True)
    avg = start + (counts + 1) / 2.0  # group occupying sorted positions start..start+t-1 -> mean 1-based rank
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(avg, counts)
    return ranks, counts


def mann_whitney_u(base: Sequence[float], new: Sequence[float]) -> MannWhitney:
    """Two-sided Mann–Whitney U test of NEW against BASE (normal approximation, tie and continuity corrected).

    U_new = R_new - n2 (n2 + 1) / 2, where R_new is the rank sum of NEW in the pooled sample (average ranks for ties).
    Under H0, E[U] = n1 n2 / 2 and Var[U] = n1 n2 / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1))), n = n1 + n2,
    t = size of each tie group. z = (|U - E[U]| - 1/2) / sqrt(Var[U]) signed like U - E[U]; p = erfc(|z| / sqrt 2).
    The normal approximation is good from about 8 samples per side; archbench takes at least 20.
    """
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(new, dtype=np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs samples on both sides")
    ranks, ties = _average_ranks(np.concatenate([a, b]))
    u = float(ranks[n1:].sum() - n2 * (n2 + 1) / 2.0)
    n = n1 + n2
    mu = n1 * n2 / 2.0
    tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties)) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if var <= 0:  # every value identical: no evidence of any shift
        return MannWhitney(u, 0.0, 1.0, n1, n2)
    diff = u - mu
    z = math.copysign(max(abs(diff) - 0.5, 0.0), diff) / math.sqrt(var)
    return MannWhitney(u, z, math.erfc(abs(z) / math.sqrt(2.0)), n1, n2)


# Statistics a bootstrap computes on each resample. Percentiles use numpy's "linear" method like archbench.bench.analyze.stats.
STATS = ("p50", "p90", "p95", "p99", "mean")
_Q = (50.0, 90.0, 95.0, 99.0)


def _stats_rows(x: np.ndarray) -> np.ndarray:
    """(k, n) resamples -> (len(STATS), k) statistics."""
    qs = np.percentile(x, _Q, axis=1, method="linear")
    return np.vstack([qs, x.mean(axis=1)])


@dataclass(frozen=True)
class RatioCI:
    ratio: float  # statistic of NEW / statistic of BASE, on the full samples
    lo: float  # percentile-bootstrap confidence interval of the ratio
    hi: float
    level: float  # e.g. 0.95

    @property
    def excludes_one(self) -> bool:
        return self.lo > 1.0 or self.hi < 1.0


def bootstrap_ratio_cis(
    base: Sequence[float], new: Sequence[float], alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
) -> dict[str, RatioCI]:
    """Percentile-bootstrap (1 - alpha) CIs of NEW/BASE for every statistic in STATS (p50 ... mean).

    Each of ``n_boot`` rounds resamples both sides with replacement (same size as the side) and takes the ratio
    of the statistic; the CI is the alpha/2 and 1 - alpha/2 quantiles of those ratios. Resamples are drawn in
    chunks so that memory stays ~ 16 MiB whatever the sample count. Deterministic for a given seed."""
    a = np.asarray(base, dtype=np.float64)
    b = np.asarray(new, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("bootstrap_ratio_cis needs samples on both sides")
    rng = np.random.default_rng(seed)
    point = _stats_rows(b[None, :])[:, 0] / _stats_rows(a[None, :])[:, 0]
    chunk = max(1, min(n_boot, 2_000_000 // max(a.size, b.size)))
    ratios = []
    done = 0
    while done < n_boot:
        k = min(chunk, n_boot - done)
        sa = _stats_rows(a[rng.integers(0, a.size, size=(k, a.size))])
        sb = _stats_rows(b[rng.integers(0, b.size, size=(k, b.size))])
        ratios.append(sb / sa)
        done += k
    r = np.concatenate(ratios, axis=1)
    lo, hi = np.quantile(r, [alpha / 2, 1 - alpha / 2], axis=1)
    return {s: RatioCI(float(point[i]), float(lo[i]), float(hi[i]), 1 - alpha) for i, s in enumerate(STATS)}
