"""Choosing among measured variants: the best record that passes a budget, Pareto fronts, and the flags that keep a
choice honest (variants dominated on size and latency; int8 variants slower than their fp32 parent).

Pure functions over record dicts (as read from records.jsonl) and verdicts (archbench.bench.analyze.budgets); formatting lives in
archbench.bench.report.verdicts.

Direction of every metric is ``archbench.bench.analyze.budgets.METRICS[...].better``: sizes, latencies and errors are minimized;
throughput, agreement, cosine, SQNR and task metrics maximized.

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

from archbench.bench.analyze.budgets import PASS, Metric, RecordVerdict, metric, metric_value

DEFAULT_OBJECTIVE = "size_mib"
DEFAULT_PARETO = ("p50_ms", "size_mib", "sqnr_db")


def _sign(met: Metric) -> float:
    return 1.0 if met.better == "lower" else -1.0


def objective(name: str) -> Metric:
    """The Metric to optimize; UsageError for unknown names (same names as budgets)."""
    return metric(name)


@dataclass(frozen=True)
class Pick:
    objective: Metric
    best: RecordVerdict | None
    ranked: list[RecordVerdict]  # passing records, best first
    inconclusive: list[RecordVerdict]  # could pass with more samples (or a missing metric); not picked


def _group(r: dict[str, Any], across_models: bool = False) -> tuple:
    """Records that compete: same batch, device, threads and mode (a forward vs a train step), and by default the
    same model (its knob variants, runtimes and precisions): different models may not even do the same task."""
    key = (r.get("batch"), r.get("device"), r.get("threads"), r.get("mode") or "infer")
    return key if across_models else (r.get("model"), *key)


def pick(verdicts: Sequence[RecordVerdict], objective_name: str = DEFAULT_OBJECTIVE,
         records: Sequence[dict[str, Any]] = ()) -> Pick:
    """The PASS record with the best objective (ties: lower p50 latency, then smaller size)."""
    met = objective(objective_name)
    context = records or [v.record for v in verdicts]

    def key(v: RecordVerdict) -> tuple[float, float, float]:
        val, _ = metric_value(v.record, met, context)
        return (_sign(met) * val if val is not None else math.inf,
                v.record.get("latency_p50_ms") or math.inf, v.record.get("size_mib") or math.inf)

    passing = sorted((v for v in verdicts if v.verdict == PASS), key=key)
    passing = [v for v in passing if metric_value(v.record, met, context)[0] is not None]
    inconclusive = [v for v in verdicts if v.verdict == "INCONCLUSIVE"]
    return Pick(met, passing[0] if passing else None, passing, inconclusive)


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a dominates b (all axes oriented so smaller is better): no worse anywhere and strictly better somewhere."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))


def pareto_front(records: Sequence[dict[str, Any]], axes: Sequence[str] = DEFAULT_PARETO,
                 across_models: bool = False) -> list[list[dict[str, Any]]]:
    """Non-dominated ok records on ``axes`` (metric names), one front per group of competing records (``_group``).

    Records missing an axis are left out (the fp32 PyTorch cell counts as perfect fidelity: it is the reference).
    """
    mets = [metric(a) for a in axes]
    groups: dict[tuple, list[tuple[list[float], dict[str, Any]]]] = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        vals = [metric_value(r, m, records)[0] for m in mets]
        if any(v is None or math.isnan(v) for v in vals):
            continue
        point = [_sign(m) * v for m, v in zip(mets, vals, strict=True)]  # type: ignore[operator]
        groups.setdefault(_group(r, across_models), []).append((point, r))
    fronts = []
    for items in groups.values():
        front = [r for p, r in items if not any(dominates(q, p) for q, _ in items)]
        front.sort(key=lambda r: r.get("latency_p50_ms") or math.inf)
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
    record: dict[str, Any]
    other: dict[str, Any]  # the dominating record, or the fp32 parent
    kind: str  # "dominated" | "slower-than-fp32"
    ratio: float  # latency ratio record / other (p50)
    beyond_noise: bool


def dominated(records: Sequence[dict[str, Any]], confidence: float = 0.95, across_models: bool = False) -> list[Flag]:
    """Records strictly bigger *and* strictly slower (p50) than a competing record (``_group``)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("size_mib") is not None
          and r.get("latency_p50_ms") is not None]
    flags = []
    for r in ok:
        better = [o for o in ok if o is not r and _group(o, across_models) == _group(r, across_models)
                  and o["size_mib"] < r["size_mib"] and o["latency_p50_ms"] < r["latency_p50_ms"]]
        if better:
            o = min(better, key=lambda o: o["latency_p50_ms"])
            flags.append(Flag(r, o, "dominated", r["latency_p50_ms"] / o["latency_p50_ms"],
                              slower_beyond_noise(r.get("samples_ms") or [], o.get("samples_ms") or [], confidence)))
    return flags


def fp32_parent(r: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The fp32 record a variant was made from: same model, knobs, runtime, batch, device and threads."""
    for o in records:
        if (o.get("status") == "ok" and o.get("precision") == "fp32"
                and all(o.get(k) == r.get(k) for k in ("model", "runtime", "batch", "device", "threads", "mode"))
                and (o.get("knobs") or "") == (r.get("knobs") or "")):
            return o
    return None


REDUCED = ("fp16", "bf16", "int8-dynamic", "int8-static")  # the precisions made from an fp32 parent


def slower_than_fp32(records: Sequence[dict[str, Any]], confidence: float = 0.95) -> list[Flag]:
    """Reduced-precision records (int8, fp16, bf16) whose p50 latency is above their fp32 parent's: int8 needs
    quantized kernels and fp16/bf16 native half-precision ones, which many CPUs lack."""
    flags = []
    for r in records:
        if r.get("status") != "ok" or r.get("precision") not in REDUCED:
            continue
        parent = fp32_parent(r, records)
        if parent is None or not r.get("latency_p50_ms") or not parent.get("latency_p50_ms"):
            continue
        if r["latency_p50_ms"] > parent["latency_p50_ms"]:
            flags.append(Flag(r, parent, "slower-than-fp32", r["latency_p50_ms"] / parent["latency_p50_ms"],
                              slower_beyond_noise(r.get("samples_ms") or [], parent.get("samples_ms") or [],
                                                  confidence)))
    return flags


# ----------------------------------------------------------------------------------------------------- sweep


def variants(knob_values: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of knob values, in the order given: {"width": [0.5, 1], "depth": [1, 2]} -> 4 dicts."""
    names = [k for k, v in knob_values.items() if v]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(knob_values[k] for k in names))]


def knobs_of(r: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(r.get("knobs") or "{}")
    except json.JSONDecodeError:
        return {}
