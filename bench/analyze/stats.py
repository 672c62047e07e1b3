"""Summary statistics over latency samples: pure functions returning frozen dataclasses of numbers.

Percentiles use linear interpolation between order statistics (Hyndman & Fan type 7, numpy's default
``method="linear"``): for n sorted samples x_0..x_{n-1}, p-th percentile = x at rank h = (n-1)·p/100,
interpolated between floor(h) and ceil(h). The README states the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Coefficient of variation above which a measurement is flagged as unstable (noisy machine, throttling,
# background load). 10% is the threshold pytest-benchmark users commonly gate on.
CV_WARN = 0.10


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean_ms: float
    std_ms: float  # sample standard deviation (ddof=1)
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    cv: float  # std / mean

    @property
    def stable(self) -> bool:
        return self.cv <= CV_WARN


def summarize(samples_ms: Sequence[float]) -> LatencyStats:
    """Summarize per-iteration latencies (milliseconds). Needs at least one sample."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("summarize() needs at least one sample")
    p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99], method="linear")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    return LatencyStats(
        n=int(x.size),
        mean_ms=mean,
        std_ms=std,
        min_ms=float(x.min()),
        max_ms=float(x.max()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        cv=std / mean if mean > 0 else math.inf,
    )


def throughput_sps(batch: int, mean_ms: float) -> float:
    """Samples per second at this batch size: batch / mean latency (mean, not median: total work over time)."""
    return batch * 1000.0 / mean_ms if mean_ms > 0 else 0.0
