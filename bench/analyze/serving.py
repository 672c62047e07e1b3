"""Serving records (``archbench run --scenario offline|server|concurrency``, archbench.bench.modes.serve) as the
report shows them: pure functions of Records returning frozen dataclasses.

    curves = load_curves(records)        # per server configuration: measured p99 vs offered QPS, and predicted
    answers = max_qps_answers(records)   # --find-max-qps results
    changes = winner_changes(records)    # where batching or concurrency picks another runtime than single-stream

The predicted curve comes from archbench.bench.analyze.capacity, fed with the raw samples of the single-stream
records of the same cell (machine, model, knobs, runtime, precision, device) measured at the executors' intra-op
threads, one batch size each up to the server's max batch; without them a curve has measured points only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from archbench.bench.analyze import capacity
from archbench.bench.cell import knobs_text
from archbench.bench.env import fingerprint
from archbench.bench.record import Record

SERVING_MODES = ("offline", "server", "concurrency")  # archbench.bench.scenario.KINDS
PREDICT_AT = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)  # shares of capacity on a predicted curve


def is_serving(r: Record) -> bool:
    return bool(r.scenario) and (r.mode or "infer") in SERVING_MODES


def is_search_trial(r: Record) -> bool:
    """A trial of a --find-max-qps search (the answer is the record with ``max_qps`` set)."""
    return bool(r.sla) and r.max_qps is None


def _settings(r: Record) -> dict[str, str]:
    return dict(p.split("=", 1) for p in (r.scenario or "").split() if "=" in p)


def config_label(r: Record) -> str:
    """'executors=2 executor_threads=1 max_batch=8 queue_delay_ms=2': the server's configuration, no load."""
    return " ".join(f"{k}={v}" for k, v in _settings(r).items() if k not in ("qps", "concurrency"))


def _cell(r: Record) -> tuple:
    return (fingerprint(r), r.model, r.knobs or "", r.runtime, r.precision, r.device)


def group_label(r: Record) -> str:
    """A serving group's label: model, knobs, runtime and precision (its cells differ in scenario)."""
    return f"{r.model}{knobs_text(r.knobs)} {r.runtime} {r.precision}"


@dataclass(frozen=True)
class LoadPoint:
    offered_qps: float
    achieved_qps: float | None
    achieved_lo: float | None
    achieved_hi: float | None
    p50_ms: float | None
    p99_ms: float | None
    p99_lo_ms: float | None
    p99_hi_ms: float | None
    valid: bool | None
    reason: str
    repetitions: int | None
    predicted_p99_ms: float | None  # the capacity model's p99 at this offered load (None: no service times)


@dataclass(frozen=True)
class LoadCurve:
    label: str  # "mlp_s onnxruntime fp32 | executors=1 ... "
    cell: str
    config: str
    points: tuple[LoadPoint, ...]  # by offered QPS
    predicted: tuple[capacity.Prediction, ...]  # the model's curve (empty without service times)
    capacity_qps: float | None  # the model's saturation throughput
    note: str  # why there is no prediction, or what it rests on


def _service_times(r: Record, records: Sequence[Record], max_batch: int, threads: int
                   ) -> tuple[capacity.ServiceTimes | None, str]:
    """Service times from the single-stream siblings of a serving record (module docstring)."""
    key = _cell(r)
    by_batch: dict[int, list[float]] = {}
    for s in records:
        if (s.mode or "infer") == "infer" and not s.scenario and s.ok and s.threads == threads and _cell(s) == key:
            if s.samples_ms:
                by_batch[s.batch] = list(s.samples_ms)
    if 1 not in by_batch:
        return None, (f"no prediction: no single-stream record of this cell at batch 1 and {threads} thread(s) "
                      f"(the executors' intra-op threads)")
    if max(by_batch) < max_batch:
        return None, (f"no prediction: single-stream records reach batch {max(by_batch)}, the server batches up to "
                      f"{max_batch} (measure --batch 1,...,{max_batch})")
    n = sum(len(v) for v in by_batch.values())
    return capacity.service_times(by_batch), (f"predicted from {n} single-stream samples at batch "
                                              f"{','.join(map(str, sorted(by_batch)))}, {threads} thread(s)")


def load_curves(records: Sequence[Record], requests: int = 20_000) -> list[LoadCurve]:
    """Server records (search trials included) grouped by cell and configuration, with the predicted curve."""
    groups: dict[tuple, list[Record]] = defaultdict(list)
    for r in records:
        if is_serving(r) and r.mode == "server" and r.ok and r.offered_qps:
            groups[(_cell(r), config_label(r))].append(r)
    out = []
    for (_, config), rs in groups.items():
        by_q: dict[float, Record] = {}
        for r in rs:
            by_q[float(r.offered_qps or 0)] = r  # the last (an answer record repeats its trial)
        head = rs[0]
        st, note = _service_times(head, records, int(head.max_batch_size or 1), int(head.executor_threads or 1))
        cfg = capacity.Config(int(head.executors or 1), int(head.max_batch_size or 1), float(head.queue_delay_ms or 0))
        cap = capacity.capacity_qps(st, cfg) if st else None
        pred = {q: capacity.simulate(st, q, cfg, requests) for q in by_q} if st else {}
        grid = tuple(capacity.curve(st, cfg, [f * cap for f in PREDICT_AT], requests)) if st and cap else ()
        pts = tuple(LoadPoint(q, r.throughput_sps, r.throughput_lo_sps, r.throughput_hi_sps, r.latency_p50_ms,
                              r.latency_p99_ms, r.latency_p99_lo_ms, r.latency_p99_hi_ms, r.valid, r.invalid_reason,
                              r.repetitions, pred[q].p99_ms if q in pred else None)
                    for q, r in sorted(by_q.items()))
        out.append(LoadCurve(f"{group_label(head)} | {config}", group_label(head), config, pts, grid, cap, note))
    return out


@dataclass(frozen=True)
class MaxQpsAnswer:
    cell: str
    config: str
    sla: str
    max_qps: float
    first_failure: float | None
    p99_ms: float | None
    p99_lo_ms: float | None
    p99_hi_ms: float | None
    trials: int
    note: str


def max_qps_answers(records: Sequence[Record]) -> list[MaxQpsAnswer]:
    """The --find-max-qps answers (records with ``max_qps``), each with how many trials its search ran."""
    trials: dict[tuple, int] = defaultdict(int)
    for r in records:
        if is_search_trial(r):
            trials[(_cell(r), config_label(r), r.sla)] += 1
    out = []
    for r in records:
        if r.max_qps is None:
            continue
        k = (_cell(r), config_label(r), r.sla)
        note = next((w for w in r.warning.split("; ") if w.startswith("max-QPS search trials")), "")
        out.append(MaxQpsAnswer(group_label(r), config_label(r), r.sla, float(r.max_qps), r.max_qps_fail,
                                r.latency_p99_ms if r.max_qps else None, r.latency_p99_lo_ms if r.max_qps else None,
                                r.latency_p99_hi_ms if r.max_qps else None, max(trials[k], note.count(",") + 1),
                                note))
    return out


@dataclass(frozen=True)
class WinnerChange:
    model: str  # with knobs
    precision: str
    single_stream: str  # the runtime with the lowest batch-1 p50
    single_stream_p50_ms: dict[str, float]
    scenario: str  # "offline executors=1 ..." or "max QPS at p99_ms<=50 | executors=..."
    winner: str  # the runtime that wins it
    metric: str  # samples/s | max QPS | p99 ms
    values: dict[str, float]  # per runtime


def winner_changes(records: Sequence[Record]) -> list[WinnerChange]:
    """Where a serving comparison (offline samples/s, concurrency QPS, max QPS under an SLA: each VALID, same
    configuration, two or more runtimes) is won by another runtime than single-stream batch-1 p50 is."""
    single: dict[tuple, dict[str, float]] = defaultdict(dict)
    serving: dict[tuple, dict[str, float]] = defaultdict(dict)
    what: dict[tuple, str] = {}
    for r in records:
        base = (fingerprint(r), r.model, r.knobs or "", r.precision, r.device)
        if not r.ok:
            continue
        if (r.mode or "infer") == "infer" and not r.scenario and r.batch == 1 and r.latency_p50_ms:
            single[base][r.runtime] = float(r.latency_p50_ms)
        elif r.max_qps is not None:
            k = (*base, "max", config_label(r), r.sla)
            serving[k][r.runtime] = float(r.max_qps)
            what[k] = f"max QPS at {r.sla} | {config_label(r)}"
        elif r.mode in ("offline", "concurrency") and r.valid and r.throughput_sps:
            k = (*base, r.mode, r.scenario, "")
            serving[k][r.runtime] = float(r.throughput_sps)
            what[k] = f"{r.mode} {r.scenario}"
    out = []
    for k, vals in serving.items():
        ss = single.get(k[:5], {})
        common = set(vals) & set(ss)
        if len(common) < 2:
            continue
        first = min(common, key=lambda rt: ss[rt])
        best = max(common, key=lambda rt: vals[rt])
        if best != first:
            model = k[1] + knobs_text(k[2])
            out.append(WinnerChange(model, k[3], first, {rt: ss[rt] for rt in common}, what[k], best,
                                    "max QPS" if k[5] == "max" else "QPS" if k[5] == "concurrency" else "samples/s",
                                    {rt: vals[rt] for rt in common}))
    return out


@dataclass(frozen=True)
class ServiceGroup:
    """The single-stream records of one cell at one thread count: the service times a plan rests on."""

    label: str  # "mlp_s onnxruntime fp32 2 threads"
    threads: int
    times: capacity.ServiceTimes
    samples: int


def service_groups(records: Sequence[Record]) -> list[ServiceGroup]:
    """Every single-stream cell (machine, model, knobs, runtime, precision, device, threads) with raw samples, its
    service times per measured batch size (all repetitions' samples pooled)."""
    groups: dict[tuple, dict[int, list[float]]] = defaultdict(dict)
    heads: dict[tuple, Record] = {}
    for r in records:
        if (r.mode or "infer") == "infer" and not r.scenario and r.ok and r.samples_ms:
            k = (*_cell(r), r.threads)
            groups[k][r.batch] = list(r.samples_ms)
            heads.setdefault(k, r)
    return [ServiceGroup(f"{group_label(heads[k])} {k[-1]} thread{'s' if k[-1] != 1 else ''}", int(k[-1]),
                         capacity.service_times(by), sum(len(v) for v in by.values()))
            for k, by in groups.items()]


def combine_serving(out: Record, ok: Sequence[Record]) -> None:
    """analyze.combine.combine's serving part: p90 and achieved QPS over repetitions (geometric mean, 95% t
    interval on logs, as every latency), validity of every repetition, and the load generator's figures."""
    from archbench.bench.analyze.intervals import log_interval

    out.rep_p90_ms = [v for r in ok for v in r.rep_p90_ms]
    if out.rep_p90_ms:
        iv = log_interval(out.rep_p90_ms)
        out.latency_p90_ms, out.latency_p90_lo_ms, out.latency_p90_hi_ms = iv.estimate, iv.lo, iv.hi
    out.rep_qps = [v for r in ok for v in r.rep_qps]
    if out.rep_qps:
        iv = log_interval(out.rep_qps)
        out.throughput_sps, out.throughput_lo_sps, out.throughput_hi_sps = iv.estimate, iv.lo, iv.hi
    out.achieved_gflops = None
    bad = [(i, r) for i, r in enumerate(ok) if r.valid is False]
    out.valid = None if any(r.valid is None for r in ok) else not bad
    out.invalid_reason = "; ".join(f"repetition {i + 1} of {len(ok)}: {r.invalid_reason}" for i, r in bad)
    out.queries = sum(r.queries or 0 for r in ok)
    out.n_samples = out.queries  # samples_ms may be thinned (MAX_SAMPLES); every completed request was timed
    batches = [(r.queries or 0) / r.mean_batch for r in ok if r.mean_batch]
    out.mean_batch = out.queries / sum(batches) if batches and sum(batches) else out.mean_batch
    if out.mean_batch and out.queries:
        busy = sum((r.service_mean_ms or 0.0) * (r.queries or 0) / (r.mean_batch or 1) for r in ok)
        out.service_mean_ms = busy / (out.queries / out.mean_batch)
    util = [r.utilization for r in ok if r.utilization is not None]
    out.utilization = float(np.mean(util)) if util else None
    out.backlog = max((r.backlog for r in ok if r.backlog is not None), default=None)
    for name, agg in (("loadgen_late_p50_ms", np.median), ("loadgen_late_p99_ms", np.max),
                      ("loadgen_cpu_us", np.mean)):
        vals = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        setattr(out, name, float(agg(vals)) if vals else None)
    out.stable = None if out.p50_rel_ci is None else out.stable
