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

from archbench.bench.record import Record

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


# Other processes (or the hypervisor, as steal time) took more than this share of all CPUs while a cell was timed:
# its numbers describe a shared machine. On the 2-vCPU dev VM an idle machine reads 0-3%; one concurrent pytest ~50%.
BUSY_PCT = 10.0


def busy_warning(other_pct: float | None) -> str:
    """A record's warning when other processes shared the CPUs while it was timed (``BUSY_PCT``), else ""."""
    if other_pct is None or other_pct <= BUSY_PCT:
        return ""
    return f"busy machine: other processes took {other_pct:.0f}% of the CPUs while timing; re-measure on an idle one"


def fill_latency(rec: Record, samples_ms: list[float], *, first_ms: float | None, warmup_iters: int,
                 measure_s: float, other_cpu_pct: float | None, flops_per_call: float | None = None,
                 min_time_hint: str = "--min-time") -> None:
    """The latency group from one timed loop: percentiles etc. (``summarize`` over ``samples_ms``),
    throughput = batch / mean, achieved GFLOP/s = ``flops_per_call`` / p50, and the unstable (CV > 10%) and
    busy-machine (``BUSY_PCT``) warnings. Used by the inference and training workers and the pytest
    fixture alike."""
    st = summarize(samples_ms)
    rec.latency_p50_ms, rec.latency_p90_ms = st.p50_ms, st.p90_ms
    rec.latency_p95_ms, rec.latency_p99_ms = st.p95_ms, st.p99_ms
    rec.latency_mean_ms, rec.latency_std_ms = st.mean_ms, st.std_ms
    rec.latency_min_ms, rec.latency_max_ms, rec.latency_cv = st.min_ms, st.max_ms, st.cv
    rec.n_samples, rec.stable = st.n, st.stable
    rec.throughput_sps = throughput_sps(rec.batch, st.mean_ms)
    if flops_per_call:
        rec.achieved_gflops = flops_per_call / (st.p50_ms * 1e-3) / 1e9
    rec.first_inference_ms = first_ms
    rec.warmup_iters, rec.measure_s = warmup_iters, measure_s
    rec.samples_ms = [round(x, 6) for x in samples_ms]
    # One timed loop is one repetition; analyze.combine.combine merges several into intervals.
    rec.repetitions = 1
    rec.rep_p50_ms, rec.rep_p95_ms, rec.rep_p99_ms = [st.p50_ms], [st.p95_ms], [st.p99_ms]
    rec.rep_mean_ms = [st.mean_ms]
    rec.samples_by_rep = [rec.samples_ms]
    rec.other_cpu_pct = other_cpu_pct
    warnings = [rec.warning] if rec.warning else []
    if not st.stable:
        warnings.append(f"unstable: CV {st.cv:.0%} > 10% (close other programs or use {min_time_hint})")
    if busy_warning(other_cpu_pct):
        warnings.append(busy_warning(other_cpu_pct))
    rec.warning = "; ".join(warnings)
