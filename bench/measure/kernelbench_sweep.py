"""Measuring ``archbench kernels``' benches: check each implementation against the fp32 reference, time it, and
turn the samples into a ``Row`` (median, GB/s or TFLOP/s with its formula, % of the measured peak).

Timers and peaks come from archbench.bench.measure.peaks, the summary statistics from
archbench.bench.analyze.stats (imported when measuring: numpy is not needed for ``archbench --help``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from archbench.bench.measure.kernelbench_cases import BENCHES, Bench
from archbench.bench.measure.peaks import Peaks, Timer

# max abs error accepted for our kernel against the fp32 reference, by input dtype (outputs are O(1))
TOLERANCE = {"fp32": 2e-2, "fp16": 2e-2, "bf16": 1e-1}  # fp32 is loose: conv/attention may use TF32


@dataclass
class Row:
    """One (kernel, case, impl) measurement; field order is the CSV column order."""

    kernel: str
    case: str
    dtype: str
    direction: str  # "fwd" | "fwd+bwd"
    impl: str
    status: str = "ok"  # ok | failed | skipped
    error: str = ""
    median_ms: float | None = None
    min_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    repeats: int = 0
    metric_unit: str = ""  # "GB/s" | "TFLOP/s"
    metric: float | None = None
    pct_of_peak: float | None = None
    formula: str = ""
    work: float | None = None  # bytes or FLOPs per call, the numerator of `metric`
    max_abs_err: float | None = None
    note: str = ""


def _max_abs_err(out: Any, expected: Any) -> float:
    return (out.detach().float() - expected.float()).abs().max().item()


def _is_unavailable(exc: BaseException) -> bool:
    """An SDPA backend that cannot run these inputs on this device (a skipped row, not a failure).
    CUDA says "No available kernel"; CPU builds say "No viable backend"."""
    return isinstance(exc, RuntimeError) and any(
        m in str(exc) for m in ("No available kernel", "No viable backend"))


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def measure_bench(bench: Bench, dtype: str, timer: Timer, warmup: int, repeats: int, peaks: Peaks | None,
                  tolerance: float) -> list[Row]:
    """Check then time every impl of one bench; each failure becomes a row with its error."""
    from archbench.bench.analyze.stats import CV_WARN, summarize

    rows = []
    expected = bench.expected()
    for name, impl in bench.impls.items():
        row = Row(bench.kernel, bench.case, dtype, bench.direction, name, metric_unit=bench.work.unit,
                  formula=bench.work.formula, work=bench.work.amount)
        rows.append(row)
        if impl.skip_reason:
            row.status, row.error = "skipped", impl.skip_reason
            continue
        # SDPA explains why a forced backend cannot run in UserWarnings: keep the first as the row's reason
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with impl.context():
                    out = impl.fn()  # first call: JIT compile / autotune, then the correctness check
                    row.max_abs_err = _max_abs_err(out, expected)
                    del out
                    samples = timer(impl.fn, warmup, repeats)
            except Exception as exc:  # a failing impl is a row with status and error, never a crash
                row.status = "skipped" if _is_unavailable(exc) else "failed"
                row.error = f"{type(exc).__name__}: {_first_line(str(exc))}"
                if caught:
                    row.error += f" ({_first_line(str(caught[0].message))})"
                continue
        stats = summarize(samples)
        row.median_ms, row.min_ms, row.mean_ms, row.std_ms, row.cv, row.repeats = (
            stats.p50_ms, stats.min_ms, stats.mean_ms, stats.std_ms, stats.cv, stats.n)
        row.metric = bench.work.rate(stats.p50_ms)
        if peaks is not None:
            # % of peak = (work / median seconds) / (peak bytes/s or peak FLOP/s), both measured in this run
            peak = peaks.bytes_per_s if bench.work.unit == "GB/s" else peaks.flops_per_s
            row.pct_of_peak = 100 * bench.work.per_second(stats.p50_ms) / peak
        if stats.cv > CV_WARN:
            row.note = f"noisy: CV {stats.cv:.0%}"
        if row.max_abs_err is not None and row.max_abs_err > tolerance:
            row.note = (row.note + "; " if row.note else "") + f"max abs err > {tolerance:g}"
            if impl.ours:
                row.status, row.error = "failed", f"output mismatch: max abs err {row.max_abs_err:.3g}"
    return rows


def run_sweep(kernels: Sequence[str], quick: bool, dtype: str, device: str, timer: Timer, warmup: int,
              repeats: int, backward: bool, compile_baselines: bool, peaks: Peaks | None,
              shapes: dict[str, Sequence] | None = None, progress: Callable[[str], None] | None = None) -> list[Row]:
    """Every bench of ``kernels`` (their default sweeps, or ``shapes[kernel]``), measured one after another."""
    import torch

    rows: list[Row] = []
    for kernel in kernels:
        for bench in BENCHES[kernel](quick, dtype, device, backward, compile_baselines,
                                     (shapes or {}).get(kernel)):
            if progress:
                progress(f"{kernel} {bench.case}")
            rows += measure_bench(bench, dtype, timer, warmup, repeats, peaks, TOLERANCE[dtype])
            del bench
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows
