"""What a set of records says, computed: the analysis behind the "Findings" of report.md (archbench.bench.report.findings
words them). Pure functions over Records (and roofline placements) returning dataclasses.

- ``macs_mispredictions``: a model with far fewer MACs that is nearly as slow or slower, measured alike;
- ``precision_slowdowns``: reduced precision (int8, fp16, bf16) slower than its fp32 parent
  (archbench.bench.analyze.siblings.Siblings.fp32_parent);
- ``runtime_winners``: per model and setup, the fastest runtime and by how much (siblings of other runtimes);
- ``baseline_ratios``: with ``run --baseline``, every other model against the baseline, cell by cell;
- ``unstable_cells`` (CV > 10%), ``busy_cells`` (other processes took CPU while timing);
- ``far_below_roof`` and ``memory_bound`` roofline placements;
- ``machine_ratios``: how much faster or slower each machine is than the first, over shared cells.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archbench.bench.analyze.intervals import speedup
from archbench.bench.analyze.siblings import Siblings, setup_key
from archbench.bench.analyze.stats import BUSY_PCT, CV_WARN
from archbench.bench.env import fingerprint
from archbench.bench.record import Record

# Thresholds (the report states them beside each finding).
MACS_RATIO = 0.5  # a model with fewer than half the MACs of another ...
LATENCY_RATIO = 0.8  # ... that still takes more than 80% of its latency: MACs failed to predict latency
ROOF_SHARE = 0.10  # achieved FLOP/s below 10% of the attainable roof: overhead-bound, not FLOP- or byte-bound


def reportable(records: Sequence[Record]) -> list[Record]:
    """Records a report shows: all but the memory-only trials of --find-max-batch (their OOMs are the search
    working, not failures; the cell's own record carries max_batch)."""
    return [r for r in records if (r.mode or "infer") != "maxbatch-trial"]


def timed(records: Sequence[Record]) -> list[Record]:
    """The reportable ok records with a p50 latency: what latency findings rest on."""
    return [r for r in reportable(records) if r.ok and r.latency_p50_ms]


def _p_value(slower: Record, faster: Record) -> float | None:
    """Mann-Whitney U p-value of two cells' samples; None without raw samples."""
    if len(slower.samples_ms or []) > 1 and len(faster.samples_ms or []) > 1:
        from archbench.bench.analyze.significance import mann_whitney_u

        return mann_whitney_u(faster.samples_ms, slower.samples_ms).p_value
    return None


@dataclass(frozen=True)
class MacsMisprediction:
    a: Record  # the model with fewer MACs ...
    b: Record  # ... than this one, measured alike
    macs_ratio: float  # a.macs / b.macs
    latency_ratio: float  # a.p50 / b.p50

    @property
    def surprise(self) -> float:
        return self.latency_ratio / self.macs_ratio


def macs_mispredictions(records: Sequence[Record], macs_ratio: float = MACS_RATIO,
                        latency_ratio: float = LATENCY_RATIO) -> list[MacsMisprediction]:
    """Pairs (a, b) measured alike (same machine, runtime, precision, batch, device) where a has fewer than
    ``macs_ratio`` x b's MACs but more than ``latency_ratio`` x its p50 latency. For each a, only the pair
    whose surprise (latency ratio / MACs ratio) is largest; most surprising first."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in timed(records):
        if r.macs and not r.scenario:  # serving latencies hold queueing: analyze.serving compares those
            groups[(fingerprint(r), r.runtime, r.precision, r.batch, r.device, r.mode or "infer")].append(r)
    best: dict[tuple, MacsMisprediction] = {}
    for key, rs in groups.items():
        for a in rs:
            for b in rs:
                if a is b:
                    continue
                mr = a.macs / b.macs
                lr = a.latency_p50_ms / b.latency_p50_ms
                if mr < macs_ratio and lr > latency_ratio:
                    k = (*key, a.model, a.knobs or "")
                    item = MacsMisprediction(a, b, mr, lr)
                    if k not in best or item.surprise > best[k].surprise:
                        best[k] = item
    return sorted(best.values(), key=lambda d: -d.surprise)


@dataclass(frozen=True)
class PrecisionSlowdown:
    variant: Record  # int8 / fp16 / bf16
    fp32: Record  # its fp32 parent
    slowdown: float  # variant p50 / fp32 p50, paired by round (analyze.intervals.speedup)
    p_value: float | None  # Mann-Whitney U of the two cells' samples; None without raw samples
    slowdown_lo: float | None = None  # its 95% interval (None with fewer than 2 paired repetitions)
    slowdown_hi: float | None = None


def precision_slowdowns(records: Sequence[Record]) -> list[PrecisionSlowdown]:
    """Reduced-precision cells (int8, fp16, bf16) slower (p50) than their fp32 parent (the fp32 sibling of the same
    runtime: archbench.bench.analyze.siblings), most slowed first."""
    from archbench.bench.analyze.select import REDUCED

    ok = timed(records)
    sib = Siblings(ok)
    out = []
    for r in ok:
        if r.precision not in REDUCED:
            continue
        base = sib.fp32_parent(r)
        if base and base.latency_p50_ms and r.latency_p50_ms > base.latency_p50_ms:
            iv = speedup(r, base)
            out.append(PrecisionSlowdown(r, base, iv.estimate if iv else r.latency_p50_ms / base.latency_p50_ms,
                                         _p_value(r, base), iv.lo if iv else None, iv.hi if iv else None))
    return sorted(out, key=lambda d: -d.slowdown)


@dataclass(frozen=True)
class RuntimeWinner:
    model: str
    precision: str
    batch: int
    device: str
    machine: str  # archbench.bench.env.fingerprint
    mode: str
    fastest: str  # the runtime with the lowest p50
    p50_ms: float
    runner_up: str
    runner_up_p50_ms: float
    speedup: float  # runner-up p50 / best p50, paired by round (analyze.intervals.speedup)
    p_value: float | None  # Mann-Whitney U of the two runtimes' samples; None without raw samples
    speedup_lo: float | None = None  # its 95% interval (None with fewer than 2 paired repetitions)
    speedup_hi: float | None = None
    pairs: int = 1  # paired repetitions the interval rests on
    knobs: str = ""  # the builder knobs of the model (a generate record's seq_len: its prompt length)

    @property
    def significant(self) -> bool | None:
        """Does the interval exclude 1 (no difference)? None without an interval."""
        return None if self.speedup_lo is None else self.speedup_lo > 1.0


def runtime_winners(records: Sequence[Record]) -> list[RuntimeWinner]:
    """Per model and setup (archbench.bench.analyze.siblings.setup_key: machine, model, knobs, batch, device, mode) and
    precision: the runtime with the lowest p50, how much faster it is than the runner-up (speedup = runner-up p50 /
    best p50), and the Mann-Whitney p-value of the difference."""
    cells: dict[tuple, list[Record]] = defaultdict(list)
    for r in timed(records):
        if not r.scenario:  # serving runs: their winners are analyze.serving's (max QPS, throughput, p99 at a load)
            cells[(setup_key(r), r.precision)].append(r)
    out = []
    for rs in cells.values():
        if len({r.runtime for r in rs}) < 2:
            continue
        rs = sorted(rs, key=lambda r: r.latency_p50_ms)
        best, second = rs[0], rs[1]
        iv = speedup(second, best)
        out.append(RuntimeWinner(
            model=best.model, precision=best.precision, batch=best.batch, device=best.device,
            machine=fingerprint(best), mode=best.mode or "infer", fastest=best.runtime,
            p50_ms=best.latency_p50_ms, runner_up=second.runtime,
            runner_up_p50_ms=second.latency_p50_ms,
            speedup=iv.estimate if iv else second.latency_p50_ms / best.latency_p50_ms,
            p_value=_p_value(second, best), speedup_lo=iv.lo if iv else None, speedup_hi=iv.hi if iv else None,
            pairs=iv.n if iv else 1, knobs=best.knobs or ""))
    return out


@dataclass(frozen=True)
class BaselineRatio:
    """A cell of another model against the same cell of the run's ``--baseline`` model."""

    model: str
    baseline: str
    runtime: str
    precision: str
    batch: int
    mode: str
    ratio: float  # p50 / the baseline's p50, paired by round (> 1: slower than the baseline)
    lo: float | None  # its 95% interval (None with fewer than two paired repetitions)
    hi: float | None
    pairs: int

    @property
    def significant(self) -> bool | None:
        """Does the interval exclude 1x? None without an interval."""
        return None if self.lo is None or self.hi is None else (self.lo > 1.0 or self.hi < 1.0)


def baseline_ratios(records: Sequence[Record]) -> list[BaselineRatio]:
    """For runs with ``--baseline`` (Record.baseline): every other model's timed cell against the baseline model's
    cell of the same runtime, precision, batch, device, threads, mode and machine, as the p50 ratio paired by the
    round both repetitions ran in (analyze.intervals.speedup), so a slow spell that hit both cancels."""
    ok = [r for r in timed(records) if r.baseline and not r.scenario]

    def key(r: Record) -> tuple:
        return (fingerprint(r), r.runtime, r.precision, r.batch, r.device, r.threads, r.mode or "infer")

    base = {(r.baseline, key(r)): r for r in ok if r.model == r.baseline}
    out = []
    for r in ok:
        b = base.get((r.baseline, key(r)))
        if r.model == r.baseline or b is None:
            continue
        iv = speedup(r, b)
        if iv is None:
            continue
        out.append(BaselineRatio(r.model, r.baseline, r.runtime, r.precision, r.batch, r.mode or "infer",
                                 iv.estimate, iv.lo, iv.hi, iv.n))
    return out


def unstable_cells(records: Sequence[Record]) -> list[Record]:
    """Timed cells with CV > CV_WARN, most variable first (not serving runs: the spread of their latencies is the
    queue at work)."""
    return sorted((r for r in timed(records) if (r.latency_cv or 0) > CV_WARN and not r.scenario),
                  key=lambda r: -(r.latency_cv or 0))


def busy_cells(records: Sequence[Record]) -> list[Record]:
    """Timed cells during which other processes took more than BUSY_PCT of the CPUs, busiest first."""
    return sorted((r for r in timed(records) if (r.other_cpu_pct or 0) > BUSY_PCT),
                  key=lambda r: -(r.other_cpu_pct or 0))


def failed_cells(records: Sequence[Record]) -> list[Record]:
    """Reportable cells that did not run (failed or skipped)."""
    return [r for r in reportable(records) if not r.ok]


def far_below_roof(placements: Sequence[Any], share: float = ROOF_SHARE) -> list[Any]:
    """Roofline placements (archbench.bench.analyze.roofline.Placement) below ``share`` of their roof, lowest first."""
    return sorted((p for p in placements if p.of_roof is not None and p.of_roof < share), key=lambda p: p.of_roof)


def memory_bound(placements: Sequence[Any]) -> list[Any]:
    """Placements whose arithmetic intensity is below their machine's ridge point."""
    return [p for p in placements if p.bound == "memory"]


@dataclass(frozen=True)
class MachineRatio:
    group: str  # "machine / device"
    reference: str  # the first group
    geomean_p50_ratio: float  # geometric mean of group p50 / reference p50 over shared cells
    cells: int


def machine_ratios(records: Sequence[Record]) -> list[MachineRatio]:
    """Geometric-mean p50 ratio of each machine/device against the first, over the cells both measured."""
    from archbench.bench.analyze.merge import cross_machine_rows

    headers, rows = cross_machine_rows(records)
    out = []
    for j in range(1, len(headers)):
        ratios = [row[4 + j] / row[4] for row in rows if row[4] and row[4 + j]]
        if ratios:
            g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
            out.append(MachineRatio(headers[j], headers[0], g, len(ratios)))
    return out
