"""Measuring ``archbench kernels``' benches: check each implementation against the fp32 reference, time all of them
in interleaved rounds, and turn the samples into ``Row`` s (median with an interval, GB/s or TFLOP/s with its
formula, % of the measured peak, and our kernel's speed-up over each baseline, paired per round).

How one bench is timed (``measure_bench``):

1. each implementation is called once (JIT compile, cuDNN autotune, torch.compile), its output checked against
   the fp32 reference, then ``warmup`` calls plus two calibration calls estimate its cost per call;
2. ``rounds`` rounds follow; in each, every implementation runs one block of ``k`` timed calls, in a new random
   order per round (random interleaving, as Google Benchmark does), so slow drift of the machine hits every
   implementation alike;
3. per implementation: median, min, mean, std and CV over all its samples; the interval of the median is
   [lowest, highest] of the rounds' block medians, a distribution-free 95% interval from 6 rounds on (each bound
   at 97.5%: 1 - 0.5^6 = 0.984; archbench.bench.analyze.orderstats); with fewer rounds it is left out;
4. speed-up over a baseline = baseline time / our time, computed per round from the two block medians (paired:
   both ran in the same round) -- the median of those ratios, with the same interval.

A time budget (``TimeBudget``) bounds a whole sweep: each bench's timed calls are sized to its share of what is
left (``k`` shrinks down to 1 call per block), a torch.compile baseline is skipped when the longest compile seen
so far would not fit, and benches are skipped (rows with status "skipped" and the reason) once the budget is
spent; ``BENCH_FLOOR_S`` per bench still to come (at most an equal share) is always held back, so the last benches
still get measured.

Timers and peaks come from archbench.bench.machine.peaks, the statistics from archbench.bench.analyze (imported
when measuring: numpy is not needed for ``archbench --help``).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from archbench.bench.kernels.cases import Bench, BenchSpec, build_bench, format_shape
from archbench.bench.machine.peaks import Peaks, Timer

# max abs error accepted for our kernel against the fp32 reference, by input dtype (outputs are O(1))
TOLERANCE = {"fp32": 2e-2, "fp16": 2e-2, "bf16": 1e-1}  # fp32 is loose: conv/attention may use TF32
DEFAULT_ROUNDS = 6  # the fewest rounds whose [min, max] block medians are a 95% interval of the median
INTERVAL_CONFIDENCE = 0.975  # per bound: two-sided 95%
BENCH_FLOOR_S = 2.0  # seconds of the budget held back for every bench still to come


@dataclass
class Row:
    """One (kernel, case, direction, impl) measurement; field order is the CSV column order."""

    kernel: str
    case: str
    dtype: str
    direction: str  # "fwd" | "fwd+bwd"
    impl: str
    status: str = "ok"  # ok | failed | skipped
    shape: str = ""  # the case in --shapes syntax (kernelbench_cases.format_shape), e.g. 4x32x8192x128:causal
    error: str = ""
    median_ms: float | None = None
    median_lo_ms: float | None = None  # 95% interval of the median: lowest / highest block median of the rounds
    median_hi_ms: float | None = None
    min_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    repeats: int = 0  # timed calls in all
    rounds: int = 0  # interleaved rounds (one block of repeats / rounds calls each)
    metric_unit: str = ""  # "GB/s" | "TFLOP/s"
    metric: float | None = None
    pct_of_peak: float | None = None
    speedup: float | None = None  # our kernel's speed-up over this impl: its time / our time, paired per round
    speedup_lo: float | None = None  # 95% interval of that ratio (same construction as the median's)
    speedup_hi: float | None = None
    formula: str = ""
    work: float | None = None  # bytes or FLOPs per call, the numerator of `metric`
    max_abs_err: float | None = None
    note: str = ""


class TimeBudget:
    """Wall-clock seconds for a sweep, from construction; ``total_s=None``: unlimited."""

    def __init__(self, total_s: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if total_s is not None and total_s <= 0:
            raise ValueError(f"TimeBudget: total_s must be > 0 (got {total_s})")
        self.total_s = total_s
        self._clock = clock
        self._start = clock()
        self.longest_compile_s = 0.0  # the slowest torch.compile first call seen so far

    @property
    def limited(self) -> bool:
        return self.total_s is not None

    def elapsed(self) -> float:
        return self._clock() - self._start

    def remaining(self) -> float:
        return math.inf if self.total_s is None else self.total_s - self.elapsed()

    def available(self, benches_after: int) -> float:
        """Seconds this bench may use now: what is left minus what is held back for the benches after it
        (``BENCH_FLOOR_S`` each, or an equal share of what is left when that is less)."""
        remaining = self.remaining()
        return remaining - min(BENCH_FLOOR_S, remaining / (benches_after + 1)) * benches_after


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


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _interval(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Distribution-free 95% bounds on the median of ``values`` (None where too few values give none)."""
    from archbench.bench.analyze.orderstats import quantile_bounds

    bounds = quantile_bounds(values, 0.5, INTERVAL_CONFIDENCE)
    return bounds.lower, bounds.upper


@dataclass
class _Live:
    """An implementation that passed its first call: what the rounds need."""

    name: str
    fn: Callable[[], Any]
    context: Callable[[], Any]
    call_s: float  # wall seconds per call (incl. the timer's own per-call work), from the calibration
    block: int = 1
    samples: list[float] = field(default_factory=list)
    block_medians: list[float] = field(default_factory=list)


def _ready_inputs(bench: Bench, name: str, row: Row, timer: Timer, warmup: int, tolerance: float,
             budget: TimeBudget | None, benches_after: int, expected: Callable[[], Any]) -> _Live | None:
    """First call, correctness check and calibration of one impl; None (and the row says why) if it cannot run."""
    impl = bench.impls[name]
    if impl.skip_reason:
        row.status, row.error = "skipped", impl.skip_reason
        return None
    if budget is not None and budget.limited:
        available = budget.available(benches_after)
        need = budget.longest_compile_s if impl.compiles else 0.0
        if available <= 0 or need > available:
            row.status = "skipped"
            row.error = (f"time budget: {max(available, 0):.0f} s left for this bench" +
                         (f", a torch.compile took {need:.0f} s" if impl.compiles else ""))
            return None
    # SDPA explains why a forced backend cannot run in UserWarnings: keep the first as the row's reason
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with impl.context():
                t0 = time.monotonic()
                out = impl.fn()  # first call: JIT compile / autotune, then the correctness check
                if impl.compiles and budget is not None:
                    budget.longest_compile_s = max(budget.longest_compile_s, time.monotonic() - t0)
                row.max_abs_err = _max_abs_err(out, (impl.expected or expected)())
                del out
                t0 = time.monotonic()
                timer(impl.fn, warmup, 2)  # warm-up, then two calls whose wall time sizes the blocks
                call_s = (time.monotonic() - t0) / (warmup + 2)
        except Exception as exc:  # a failing impl is a row with status and error, never a crash
            row.status = "skipped" if _is_unavailable(exc) else "failed"
            row.error = f"{type(exc).__name__}: {_first_line(str(exc))}"
            if caught:
                row.error += f" ({_first_line(str(caught[0].message))})"
            return None
    if row.max_abs_err is not None and row.max_abs_err > tolerance:
        row.note = f"max abs err > {tolerance:g}"
        if impl.ours:
            row.status, row.error = "failed", f"output mismatch: max abs err {row.max_abs_err:.3g}"
            return None
    return _Live(name, impl.fn, impl.context, max(call_s, 1e-6))


def measure_bench(bench: Bench, dtype: str, timer: Timer, warmup: int, repeats: int, peaks: Peaks | None,
                  tolerance: float, rounds: int = DEFAULT_ROUNDS, budget: TimeBudget | None = None,
                  benches_after: int = 0, seed: int = 0) -> list[Row]:
    """Check, then time every impl of one bench in ``rounds`` interleaved rounds (module docstring); one Row each."""
    from archbench.bench.analyze.stats import CV_WARN, summarize

    rows = {name: Row(bench.kernel, bench.case, dtype, bench.direction, name, metric_unit=bench.work.unit,
                      formula=bench.work.formula, work=bench.work.amount) for name in bench.impls}
    reference: list[Any] = []

    def expected() -> Any:  # the fp32 reference, computed once, only if some impl gets that far
        if not reference:
            reference.append(bench.expected())
        return reference[0]

    # this bench's fair share of the budget: what is left beyond the floors, split evenly with the benches after it
    limited = budget is not None and budget.limited
    share_end = time.monotonic() + budget.available(benches_after) / (benches_after + 1) if limited else math.inf
    live = [lv for name in bench.impls
            if (lv := _ready_inputs(bench, name, rows[name], timer, warmup, tolerance, budget, benches_after,
                               expected)) is not None]
    # Block sizes: repeats / rounds calls each, fewer when what is left of the share (after the first calls and
    # the calibration above) is smaller.
    per_block = max(1, math.ceil(repeats / rounds))
    share = share_end - time.monotonic()
    for lv in live:
        fits = share / (len(live) * rounds * lv.call_s)
        lv.block = max(1, min(per_block, int(fits) if math.isfinite(fits) else per_block))

    rng = random.Random(seed)
    order = list(live)
    for _ in range(rounds):
        rng.shuffle(order)
        for lv in order:
            if rows[lv.name].status != "ok":
                continue
            try:
                with lv.context():
                    block = timer(lv.fn, 0, lv.block)
            except Exception as exc:  # it ran before: record it rather than lose the other rows
                rows[lv.name].status, rows[lv.name].error = "failed", f"{type(exc).__name__}: {_first_line(str(exc))}"
                continue
            lv.samples += block
            lv.block_medians.append(_median(block))

    ours = next((lv for lv in live if bench.impls[lv.name].ours and rows[lv.name].status == "ok"), None)
    for lv in live:
        row = rows[lv.name]
        if row.status != "ok":
            continue
        stats = summarize(lv.samples)
        row.median_ms, row.min_ms, row.mean_ms, row.std_ms, row.cv, row.repeats = (
            stats.p50_ms, stats.min_ms, stats.mean_ms, stats.std_ms, stats.cv, stats.n)
        row.rounds = len(lv.block_medians)
        row.median_lo_ms, row.median_hi_ms = _interval(lv.block_medians)
        row.metric = bench.work.rate(stats.p50_ms)
        if peaks is not None:
            # % of peak = (work / median seconds) / (peak bytes/s or peak FLOP/s), both measured in this run
            peak = peaks.bytes_per_s if bench.work.unit == "GB/s" else peaks.flops_per_s
            row.pct_of_peak = 100 * bench.work.per_second(stats.p50_ms) / peak
        if ours is not None and lv is not ours:
            # paired per round: this impl's block median / ours in the same round (> 1: ours is faster)
            ratios = [b / o for b, o in zip(lv.block_medians, ours.block_medians, strict=False) if o > 0]
            if ratios:
                row.speedup = _median(ratios)
                row.speedup_lo, row.speedup_hi = _interval(ratios)
        if stats.cv > CV_WARN:
            row.note = (row.note + "; " if row.note else "") + f"noisy: CV {stats.cv:.0%}"
        if lv.block < per_block:
            row.note = (row.note + "; " if row.note else "") + f"time budget: {lv.block} calls per block"
    return list(rows.values())


def _skipped_rows(bench: Bench, dtype: str, reason: str) -> list[Row]:
    return [Row(bench.kernel, bench.case, dtype, bench.direction, name, status="skipped", error=reason,
                metric_unit=bench.work.unit, formula=bench.work.formula, work=bench.work.amount)
            for name in bench.impls]


def run_sweep(specs: Sequence[BenchSpec], dtype: str, device: str, timer: Timer, warmup: int, repeats: int,
              compile_baselines: bool, peaks: Peaks | None, rounds: int = DEFAULT_ROUNDS,
              budget_s: float | None = None, progress: Callable[[str], None] | None = None) -> list[Row]:
    """Every bench of ``specs`` (kernelbench_cases.plan), built and measured one after another within
    ``budget_s`` seconds (None: no limit)."""
    import torch

    budget = TimeBudget(budget_s)
    rows: list[Row] = []
    for i, spec in enumerate(specs):
        after = len(specs) - i - 1
        bench = build_bench(spec, dtype, device, compile_baselines)
        if progress:
            left = f", {budget.remaining():.0f} s of the budget left" if budget.limited else ""
            progress(f"[{i + 1}/{len(specs)}] {bench.kernel} {bench.case} {bench.direction}{left}")
        if budget.limited and budget.remaining() < BENCH_FLOOR_S:
            rows += _skipped_rows(bench, dtype, f"time budget of {budget.total_s:g} s spent")
        else:
            rows += measure_bench(bench, dtype, timer, warmup, repeats, peaks, TOLERANCE[dtype], rounds, budget,
                                  after, seed=i)
        for row in rows[-len(bench.impls):]:
            row.shape = format_shape(spec.kernel, spec.shape)
        del bench
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows
