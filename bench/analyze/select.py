"""Choosing among measured variants: the best record that passes a budget, Pareto fronts, and the flags that keep a
choice honest (variants dominated on size and latency; int8 variants slower than their fp32 parent).

Pure functions over Records and verdicts (archbench.bench.analyze.budgets); formatting lives in
archbench.bench.report.verdicts.

Direction of every metric is the registry's (archbench.bench.analyze.metrics, ``Metric.better``): sizes, latencies and
errors are minimized; throughput, agreement, cosine, SQNR and task metrics maximized.

``pareto_indices`` is the one Pareto front of archbench: ``pareto_front`` (pick, reports) applies it to records per
group of competing records, the latency plots to their (capacity, latency) points.

"Slower beyond noise" compares medians with the same distribution-free bounds the budgets use
(archbench.bench.analyze.orderstats): a is slower than b beyond noise when a's lower bound on the median is above b's upper bound
(each bound one-sided at ``confidence``; the pair holds jointly at >= 2 * confidence - 1, 90% by default).
That is sampling noise within one run; drift between runs (another job on the machine, thermal state) is not
covered: ``archbench compare`` across repeated runs is the tool for that.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archbench.bench.analyze.budgets import PASS, RecordVerdict
from archbench.bench.analyze.metrics import Metric, metric
from archbench.bench.analyze.siblings import Siblings
from archbench.bench.record import Record

DEFAULT_OBJECTIVE = "size_mib"
DEFAULT_PARETO = ("p50_ms", "size_mib", "sqnr_db")


def objective(name: str) -> Metric:
    """The Metric to optimize; UsageError for unknown names (same names as budgets)."""
    return metric(name)


@dataclass(frozen=True)
class Pick:
    objective: Metric
    best: RecordVerdict | None
    ranked: list[RecordVerdict]  # passing records, best first
    inconclusive: list[RecordVerdict]  # could pass with more samples (or a missing metric); not picked


def _group(r: Record, across_models: bool = False) -> tuple:
    """Records that compete: same batch, device, threads and mode (a forward vs a train step), and by default the
    same model (its knob variants, runtimes and precisions): different models may not even do the same task."""
    key = (r.batch, r.device, r.threads, r.mode or "infer")
    return key if across_models else (r.model, *key)


def pick(verdicts: Sequence[RecordVerdict], objective_name: str = DEFAULT_OBJECTIVE,
         records: Sequence[Record] = ()) -> Pick:
    """The PASS record with the best objective (ties: lower p50 latency, then smaller size)."""
    met = objective(objective_name)
    context = records or [v.record for v in verdicts]

    def key(v: RecordVerdict) -> tuple[float, float, float]:
        val = met.value(v.record, context)
        return (met.sign * val if val is not None else math.inf,
                v.record.latency_p50_ms or math.inf, v.record.size_mib or math.inf)

    passing = sorted((v for v in verdicts if v.verdict == PASS), key=key)
    passing = [v for v in passing if met.value(v.record, context) is not None]
    inconclusive = [v for v in verdicts if v.verdict == "INCONCLUSIVE"]
    return Pick(met, passing[0] if passing else None, passing, inconclusive)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b (all axes oriented so smaller is better): no worse anywhere and strictly better somewhere."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points (every axis oriented so that smaller is better), in input order.
    Of several identical points only the first is kept: one representative per position on the front."""
    front: list[int] = []
    for i, p in enumerate(points):
        if any(dominates(q, p) for q in points):
            continue
        if any(tuple(points[j]) == tuple(p) for j in front):
            continue
        front.append(i)
    return front


def pareto_front(records: Sequence[Record], axes: Sequence[str] = DEFAULT_PARETO,
                 across_models: bool = False) -> list[list[Record]]:
    """Non-dominated ok records on ``axes`` (metric names), one front per group of competing records (``_group``),
    each sorted by p50 latency.

    Records missing an axis are left out (the fp32 PyTorch cell counts as perfect fidelity: it is the reference).
    """
    mets = [metric(a) for a in axes]
    groups: dict[tuple, list[tuple[list[float], Record]]] = {}
    for r in records:
        if not r.ok:
            continue
        vals = [m.value(r, records) for m in mets]
        if any(v is None or math.isnan(v) for v in vals):
            continue
        point = [m.sign * v for m, v in zip(mets, vals, strict=True)]  # type: ignore[operator]
        groups.setdefault(_group(r, across_models), []).append((point, r))
    fronts = []
    for items in groups.values():
        front = [items[i][1] for i in pareto_indices([p for p, _ in items])]
        front.sort(key=lambda r: r.latency_p50_ms or math.inf)
        fronts.append(front)
    return fronts


def slower_beyond_noise(a_samples: Sequence[float], b_samples: Sequence[float], confidence: float = 0.95) -> bool:
    """a's median lower bound is above b's median upper bound (archbench.bench.analyze.orderstats): a is slower, not by chance."""
    from archbench.bench.analyze.orderstats import quantile_bounds

    if not a_samples or not b_samples:
        return False
    a, b = quantile_bounds(a_samples, 0.5, confidence), quantile_bounds(b_samples, 0.5, confidence)
    return a.lower is not None and b.upper is not None and a.lower > b.upper


@dataclass(frozen=True)
class Flag:
    record: Record
    other: Record  # the dominating record, or the fp32 parent
    kind: str  # "dominated" | "slower-than-fp32"
    ratio: float  # latency ratio record / other (p50)
    beyond_noise: bool


def dominated(records: Sequence[Record], confidence: float = 0.95, across_models: bool = False) -> list[Flag]:
    """Records strictly bigger *and* strictly slower (p50) than a competing record (``_group``)."""
    # (size MiB, p50 ms, record) of the ok records that have both
    ok = [(r.size_mib, r.latency_p50_ms, r) for r in records
          if r.ok and r.size_mib is not None and r.latency_p50_ms is not None]
    flags = []
    for size, p50, r in ok:
        better = [(op50, o) for osize, op50, o in ok if o is not r and osize < size and op50 < p50
                  and _group(o, across_models) == _group(r, across_models)]
        if better:
            op50, o = min(better, key=lambda b: b[0])
            flags.append(Flag(r, o, "dominated", p50 / op50,
                              slower_beyond_noise(r.samples_ms or [], o.samples_ms or [], confidence)))
    return flags


REDUCED = ("fp16", "bf16", "int8-dynamic", "int8-static")  # the precisions made from an fp32 parent


def slower_than_fp32(records: Sequence[Record], confidence: float = 0.95) -> list[Flag]:
    """Reduced-precision records (int8, fp16, bf16) whose p50 latency is above their fp32 parent's
    (archbench.bench.analyze.siblings.Siblings.fp32_parent): int8 needs quantized kernels and fp16/bf16 native
    half-precision ones, which many CPUs lack."""
    sib = Siblings(records)
    flags = []
    for r in records:
        if not r.ok or r.precision not in REDUCED:
            continue
        parent = sib.fp32_parent(r)
        if parent is None or not r.latency_p50_ms or not parent.latency_p50_ms:
            continue
        if r.latency_p50_ms > parent.latency_p50_ms:
            flags.append(Flag(r, parent, "slower-than-fp32", r.latency_p50_ms / parent.latency_p50_ms,
                              slower_beyond_noise(r.samples_ms or [], parent.samples_ms or [], confidence)))
    return flags


# ----------------------------------------------------------------------------------------------------- sweep


def variants(knob_values: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of knob values, in the order given: {"width": [0.5, 1], "depth": [1, 2]} -> 4 dicts."""
    names = [k for k, v in knob_values.items() if v]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(knob_values[k] for k in names))]


def knobs_of(r: Record) -> dict[str, Any]:
    try:
        return json.loads(r.knobs or "{}")
    except json.JSONDecodeError:
        return {}
