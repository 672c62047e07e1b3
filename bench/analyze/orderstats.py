"""Distribution-free confidence bounds on quantiles, from order statistics. Pure functions, no scipy.

For n i.i.d. samples with sorted values x_(1) <= ... <= x_(n) and the true p-quantile xi_p, the number of samples
below xi_p is X ~ Binom(n, p), whatever the latency distribution is. Hence

    P(x_(k) >= xi_p) = P(X <= k - 1) = F(k - 1; n, p)           (F: the binomial CDF)

- one-sided upper bound at confidence c: x_(k) with k the *smallest* rank where F(k - 1) >= c;
- one-sided lower bound at confidence c: x_(k) with k the *largest* rank where 1 - F(k - 1) >= c.

A bound may not exist: with n = 20 samples no order statistic is a 95% upper bound on the 95th percentile,
because even P(x_(20) >= xi_0.95) = 1 - 0.95^20 = 0.64 < 0.95 (n >= 59 is needed; for p99, n >= 299).
That is how "p95 <= 20 ms" becomes INCONCLUSIVE on a short run rather than a quiet PASS.

Ranks are 1-based throughout, as in the textbooks (x_(1) is the minimum). Samples are assumed independent:
the timing loop's autocorrelation (thermal drift, a background job) is a known weakness of every
distribution-free bound; the CV warning of archbench.bench.analyze.stats is the hint that it matters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Beyond this many standard deviations from n*p the binomial mass is < 1e-30: the CDF is summed over a window.
_WINDOW_SIGMAS = 12.0


def _check(n: int, p: float) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")


def _window(n: int, p: float) -> tuple[int, int]:
    sd = math.sqrt(n * p * (1 - p))
    lo = max(0, int(math.floor(n * p - _WINDOW_SIGMAS * sd)) - 10)
    hi = min(n, int(math.ceil(n * p + _WINDOW_SIGMAS * sd)) + 10)
    return lo, hi


def _log_pmf(k: np.ndarray, n: int, p: float) -> np.ndarray:
    """log C(n, k) + k log p + (n - k) log(1 - p), with C(n, k) from log-gamma (exact enough for n up to 1e9)."""
    lg = np.vectorize(math.lgamma, otypes=[float])
    return math.lgamma(n + 1) - lg(k + 1.0) - lg(n - k + 1.0) + k * math.log(p) + (n - k) * math.log1p(-p)


def cdf_table(n: int, p: float) -> tuple[int, np.ndarray]:
    """(k0, c) with c[i] = P(Binom(n, p) <= k0 + i) for k0 + i in the window around n*p that holds the mass.

    Below k0 the CDF is < 1e-30 (taken as 0); above the window's end it is 1 to within 1e-30.
    """
    _check(n, p)
    lo, hi = _window(n, p)
    k = np.arange(lo, hi + 1, dtype=np.float64)
    return lo, np.minimum(np.cumsum(np.exp(_log_pmf(k, n, p))), 1.0)


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(Binom(n, p) <= k), summed in log space over the window that carries the mass."""
    _check(n, p)
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    k0, c = cdf_table(n, p)
    if k < k0:
        return 0.0
    return float(c[min(k - k0, len(c) - 1)])


def upper_rank(n: int, p: float, confidence: float) -> int | None:
    """Smallest 1-based rank k with F(k - 1; n, p) >= confidence; None when no x_(k), k <= n, bounds xi_p above."""
    if n == 0:
        return None
    k0, c = cdf_table(n, p)
    # rank k needs c at index (k - 1) - k0; search ranks whose k - 1 lies in the window, capped at n.
    idx = int(np.searchsorted(c, confidence, side="left"))  # first index with c >= confidence
    if idx >= len(c):
        return None
    k = k0 + idx + 1
    return k if k <= n else None


def lower_rank(n: int, p: float, confidence: float) -> int | None:
    """Largest 1-based rank k with 1 - F(k - 1; n, p) >= confidence; None when no x_(k) bounds xi_p below."""
    if n == 0:
        return None
    k0, c = cdf_table(n, p)
    # 1 - F(k - 1) >= conf  <=>  F(k - 1) <= 1 - conf; the largest such k - 1 is the last index with c <= 1 - conf.
    idx = int(np.searchsorted(c, 1.0 - confidence, side="right")) - 1
    if idx < 0:
        # F(k0 - 1) < 1e-30 <= 1 - conf, so k - 1 = k0 - 1 still qualifies when k0 >= 1.
        k = k0
    else:
        k = k0 + idx + 1
    return k if k >= 1 else None


@dataclass(frozen=True)
class QuantileBounds:
    p: float  # the quantile level, e.g. 0.95
    confidence: float  # one-sided, each bound alone
    n: int
    estimate: float  # the point estimate (linear interpolation, as archbench.bench.analyze.stats reports)
    lower: float | None  # None: no order statistic is a lower bound at this n
    upper: float | None  # None: no order statistic is an upper bound at this n
    lower_rank: int | None
    upper_rank: int | None


def quantile_bounds(samples: Sequence[float], p: float, confidence: float = 0.95) -> QuantileBounds:
    """Point estimate and one-sided distribution-free bounds on the p-quantile of ``samples``."""
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = int(x.size)
    if n == 0:
        raise ValueError("quantile_bounds() needs at least one sample")
    ku, kl = upper_rank(n, p, confidence), lower_rank(n, p, confidence)
    return QuantileBounds(
        p=p, confidence=confidence, n=n, estimate=float(np.percentile(x, 100 * p, method="linear")),
        lower=float(x[kl - 1]) if kl else None, upper=float(x[ku - 1]) if ku else None,
        lower_rank=kl, upper_rank=ku,
    )


def decides(n: int, p: float, confidence: float, good_frac: float, below_is_good: bool) -> str | None:
    """Would n samples decide a quantile budget if a fraction ``good_frac`` of them fell on the budget's good side?

    below_is_good (``p95 <= L``): PASS when the upper bound is good, i.e. at least upper_rank samples are good;
    FAIL when the lower bound is bad, i.e. fewer than lower_rank samples are good. Mirrored for ``>=``.
    Returns "PASS", "FAIL" or None.
    """
    good = math.floor(good_frac * n + 1e-9)
    ku, kl = upper_rank(n, p, confidence), lower_rank(n, p, confidence)
    if below_is_good:
        if ku is not None and good >= ku:
            return "PASS"
        if kl is not None and good < kl:
            return "FAIL"
        return None
    bad = n - good  # samples below the limit
    if kl is not None and bad < kl:
        return "PASS"
    if ku is not None and bad >= ku:
        return "FAIL"
    return None


def samples_to_decide(
    n: int, p: float, confidence: float, good_frac: float, below_is_good: bool, max_n: int = 10_000_000
) -> int | None:
    """Smallest total sample count (> n) at which the bounds would separate from the budget, were the new samples
    distributed like the current ones (a fraction ``good_frac`` on the good side). None when no count up to
    ``max_n`` would: the budget sits at (or too near) the measured quantile.

    The answer is an estimate: latency distributions drift, and discreteness makes ``decides`` only roughly
    monotone in n, so the search doubles n until a count decides and then bisects back.
    """
    lo = max(n, 1)
    hi = lo
    while True:
        hi = min(max_n, hi * 2)
        if decides(hi, p, confidence, good_frac, below_is_good):
            break
        if hi >= max_n:
            return None
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if decides(mid, p, confidence, good_frac, below_is_good):
            hi = mid
        else:
            lo = mid
    return hi
