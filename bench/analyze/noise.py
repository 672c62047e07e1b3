"""Run-to-run noise of a machine from a probe timed in K processes: pure functions (archbench doctor measures,
this computes). See archbench.bench.machine.doctor for how the figure is used."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# ----------------------------------------------------------------------------------------------------- noise math
from archbench.bench.analyze.intervals import t_cdf, t_ppf  # noqa: E402, F401  (the one home of the t maths)


@dataclass(frozen=True)
class NoiseFigure:
    """A machine's run-to-run noise on the doctor's probe (see the module docstring for the formulas).

    ``noise_pct`` is the one number for users: another process's median lands within ±noise_pct% of ``center_ms``
    95% of the time (multiplicatively: between center / (1 + n) and center * (1 + n), n = noise_pct / 100)."""

    noise_pct: float  # 100 * (exp(t * log_sd * sqrt(1 + 1/K)) - 1)
    between_cv: float  # sd / mean of the K process medians (a fraction, like Record.latency_cv)
    within_cv: float | None  # median over processes of each one's call-time sd / mean; None if not given
    processes: int  # K
    center_ms: float  # geometric mean of the process medians
    medians_ms: tuple[float, ...]  # per process, in the order they ran
    log_sd: float  # sample sd (ddof=1) of log(medians)
    t_factor: float  # t_{K-1, (1 + confidence) / 2}
    confidence: float = 0.95
    calls: int = 0  # timed calls per process (median over processes)
    probe: str = ""  # what was timed, e.g. "matmul 256x256 float32"
    threads: int = 0  # OMP/OpenBLAS/MKL threads of the probe processes
    measured_at: str = ""  # ISO 8601, UTC
    # Median over processes of 1.4826 MAD / median of the call times: the CV of the bulk of the calls. One
    # preempted call of 10 ms among 500 of 0.25 ms doubles the plain CV; this one does not move.
    within_robust_cv: float | None = None

    def covers(self, ratio: float) -> bool:
        """True when a ratio new/base lies within this machine's noise band, i.e. is *not* distinguishable from
        run-to-run noise: 1 / (1 + n) <= ratio <= 1 + n with n = noise_pct / 100."""
        band = 1.0 + self.noise_pct / 100.0
        return 1.0 / band <= ratio <= band


def cv(samples: Sequence[float]) -> float:
    """Coefficient of variation sd / mean (sample sd, ddof=1); 0 for fewer than two samples."""
    if len(samples) < 2:
        return 0.0
    mean = statistics.fmean(samples)
    return statistics.stdev(samples) / mean if mean > 0 else math.inf


def robust_cv(samples: Sequence[float]) -> float:
    """1.4826 MAD / median (MAD = median |x - median|): equals sd / mean for normal data (1.4826 = 1 / Phi^-1(3/4))
    but ignores a minority of outliers; 0 for fewer than two samples."""
    if len(samples) < 2:
        return 0.0
    med = statistics.median(samples)
    mad = statistics.median(abs(x - med) for x in samples)
    return 1.4826 * mad / med if med > 0 else math.inf


def noise_figure(medians_ms: Sequence[float], within_cvs: Sequence[float] = (), calls: int = 0,
                 confidence: float = 0.95, within_robust_cvs: Sequence[float] = (), **context: Any) -> NoiseFigure:
    """The noise figures of K >= 2 process medians (ms, all > 0). ``within_cvs`` / ``within_robust_cvs``: each
    process's call-time CV / robust CV; ``context``: probe, threads, measured_at, passed through."""
    k = len(medians_ms)
    if k < 2:
        raise ValueError(f"noise_figure needs at least 2 process medians, got {k}")
    if any(not m > 0 or not math.isfinite(m) for m in medians_ms):
        raise ValueError(f"noise_figure: medians must be finite and > 0, got {list(medians_ms)}")
    logs = [math.log(m) for m in medians_ms]
    log_sd = statistics.stdev(logs)
    t = t_ppf((1.0 + confidence) / 2.0, k - 1)
    half = t * log_sd * math.sqrt(1.0 + 1.0 / k)  # prediction interval for one more draw, on the log scale
    return NoiseFigure(
        noise_pct=100.0 * math.expm1(half),
        between_cv=cv(medians_ms),
        within_cv=statistics.median(within_cvs) if within_cvs else None,
        processes=k,
        center_ms=math.exp(statistics.fmean(logs)),
        medians_ms=tuple(float(m) for m in medians_ms),
        log_sd=log_sd,
        t_factor=t,
        confidence=confidence,
        calls=calls,
        within_robust_cv=statistics.median(within_robust_cvs) if within_robust_cvs else None,
        **context,
    )


