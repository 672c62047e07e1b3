"""Intervals that survive a re-run: statistics over repetitions (independent worker processes), not over the
samples of one timed loop. Pure functions returning frozen dataclasses.

Why not the samples of one loop: on a shared machine whole processes run fast or slow (slow spells lasting seconds,
frequency and neighbour effects, per-process memory layout), so consecutive calls of one loop are not independent
draws of "the latency on this machine". An interval built from them was 1.4% wide and covered another run's median
4% of the time on the dev VM. Here the unit of replication is the repetition (Kalibera & Jones, "Rigorous
benchmarking in reasonable time", 2013: replicate at the level that varies, and compute the interval there):

    theta_r   = the statistic (p50, p95, p99, mean) of repetition r's samples, r = 1..R
    x_r       = ln theta_r                       (latencies are skewed and compared as ratios: work on logs)
    estimate  = exp(mean x_r)                    (the geometric mean of the per-repetition statistics)
    95% CI    = exp(mean x_r  +/-  t(R-1, 0.975) * sd(x_r) / sqrt(R))

A t interval over R per-repetition values is exact for normal x_r and robust for moderate skew; each x_r already
carries its own loop's sampling noise, so the between-repetition spread includes both levels (a two-level
bootstrap over R = 3..8 units resamples too few units to be trusted). The interval is for the statistic's
long-run value across worker processes on this machine; ``compare`` tests two runs on these per-repetition values
(Welch's t on logs) and never calls a change smaller than the machine's measured run-to-run noise significant.

Speedups are paired: repetition r of two cells ran in the same round of the run (measure.engine interleaves rounds
in random order), so ratio_r = theta_A,r / theta_B,r cancels what that round's slow spell did to both, and its
t interval on logs is usually much tighter than the two cells' intervals suggest.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LEVEL = 0.95


def t_quantile(df: int, level: float = LEVEL) -> float:
    """Two-sided Student t quantile t(df, (1 + level) / 2), df >= 1 (scipy-free: the standard table for small df
    at 95%, else ``t_ppf``'s bisection on the exact CDF)."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    if level == 0.95 and df <= len(_T975):
        return _T975[df - 1]
    return t_ppf(0.5 + level / 2, df)


# t(df, 0.975) for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


@dataclass(frozen=True)
class Interval:
    estimate: float  # geometric mean of the per-repetition values
    lo: float | None  # None with fewer than 2 repetitions: no between-repetition spread to build on
    hi: float | None
    n: int  # repetitions it rests on

    @property
    def rel_halfwidth(self) -> float | None:
        """(hi - lo) / 2 / estimate: the precision reached, as a fraction of the estimate."""
        if self.lo is None or self.hi is None or not self.estimate:
            return None
        return (self.hi - self.lo) / 2 / self.estimate

    def contains(self, x: float) -> bool:
        return self.lo is not None and self.hi is not None and self.lo <= x <= self.hi


def log_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """t interval on the logs of positive per-repetition values (see the module docstring)."""
    x = np.log(np.asarray([v for v in values if v is not None and v > 0 and math.isfinite(v)], dtype=float))
    if x.size == 0:
        raise ValueError("log_interval() needs at least one positive value")
    m = float(x.mean())
    if x.size < 2:
        return Interval(math.exp(m), None, None, 1)
    half = t_quantile(x.size - 1, level) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(math.exp(m), math.exp(m - half), math.exp(m + half), int(x.size))


def paired_ratio(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval:
    """Interval of the ratio a/b from values paired by repetition (same round): t interval on log(a_r / b_r)."""
    if len(a) != len(b):
        raise ValueError(f"paired_ratio() needs pairs: {len(a)} vs {len(b)} values")
    return log_interval([x / y for x, y in zip(a, b, strict=True) if x and y and x > 0 and y > 0], level)


@dataclass(frozen=True)
class Welch:
    ratio: float  # geometric-mean ratio new / base
    p_value: float  # two-sided, Welch's t test on log values
    df: float


def welch_log(base: Sequence[float], new: Sequence[float]) -> Welch | None:
    """Welch's t test of log(new) vs log(base) per-repetition values (None with < 2 values on a side)."""
    a = np.log(np.asarray([v for v in base if v and v > 0], dtype=float))
    b = np.log(np.asarray([v for v in new if v and v > 0], dtype=float))
    if a.size < 2 or b.size < 2:
        return None
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    ratio = math.exp(float(b.mean() - a.mean()))
    if va + vb == 0:
        return Welch(ratio, 0.0 if b.mean() != a.mean() else 1.0, float(a.size + b.size - 2))
    t = float(b.mean() - a.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    return Welch(ratio, 2 * t_sf(abs(t), df), float(df))


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (regularized incomplete beta, continued fraction)."""
    x = df / (df + t * t)
    return 0.5 * _betainc(df / 2, 0.5, x)


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) (Numerical Recipes' betai / betacf, modified Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-14:
            break
    return h


def repetitions_needed(rel_halfwidth: float, n: int, target: float) -> int:
    """About how many repetitions would bring an interval of ``rel_halfwidth`` at ``n`` repetitions to ``target``
    (half-width shrinks as t(n-1)/sqrt(n) for the same spread)."""
    if n < 2 or rel_halfwidth <= target:
        return n
    spread = rel_halfwidth * math.sqrt(n) / t_quantile(n - 1)
    m = n
    while m < 1000 and t_quantile(m - 1) * spread / math.sqrt(m) > target:
        m += 1
    return m


def speedup(slow: Any, fast: Any, stat: str = "p50") -> Interval | None:
    """How many times faster ``fast`` is than ``slow`` (two Records), paired by the round their repetitions ran in:
    ratio_r = slow_r / fast_r over the rounds both have (t interval on logs). With fewer than two common rounds the
    point estimate is the ratio of the two estimates and there is no interval; None without latencies."""
    a = dict(zip(slow.rep_rounds or [], getattr(slow, f"rep_{stat}_ms") or [], strict=False))
    b = dict(zip(fast.rep_rounds or [], getattr(fast, f"rep_{stat}_ms") or [], strict=False))
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        return paired_ratio([a[k] for k in common], [b[k] for k in common])
    s, f = getattr(slow, f"latency_{stat}_ms"), getattr(fast, f"latency_{stat}_ms")
    if not s or not f:
        return None
    return Interval(s / f, None, None, 1)


def describe(iv: Interval, digits: int = 2) -> str:
    """'3.18x (95% CI 3.02-3.35x, 3 paired repetitions)' or '3.18x (one repetition: no interval)'."""
    if iv.lo is None or iv.hi is None:
        return f"{iv.estimate:.{digits}f}x (one repetition: no interval)"
    return f"{iv.estimate:.{digits}f}x (95% CI {iv.lo:.{digits}f}-{iv.hi:.{digits}f}x, {iv.n} paired repetitions)"


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom: for t >= 0, 1 - I_{df/(df+t^2)}(df/2, 1/2) / 2."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@functools.lru_cache(maxsize=256)  # pure; the coverage tests call it thousands of times with one df
def t_ppf(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` > 0 degrees of freedom (t_{df, p}), e.g. t_ppf(0.975, 7) = 2.365.

    Bisection on ``t_cdf`` to 1e-12: no scipy needed, and a few hundred microseconds are nothing next to a probe."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_ppf: p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"t_ppf: df must be > 0, got {df}")
    if p < 0.5:
        return -t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # t_{1, 0.9995} is 636.6: a few doublings at most
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return 0.5 * (lo + hi)
