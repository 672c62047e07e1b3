"""The metric registry: every number archbench judges, compares, ranks or plots by name, in one place.

    m = metric("p95_ms")              # or an alias: "latency_p95_ms", "P95_MS"; any percentile "p99.9_ms"
    m.unit, m.better, m.doc           # "ms", "lower", "95th percentile latency ..."
    m.value(rec)                      # its value on a Record (None when the record lacks it)
    m.read(rec, records)              # (value, note): the note says why it is missing or how it was made

Used by budgets (``archbench check``, ``run --budget``, the pytest plugin), ``compare --fail-on``, ``pick``
(objective and Pareto axes) and reports. A metric is

- a Record field read as recorded (``size_mib``, ``peak_rss_mib``, ``top1_agree``...);
- a value with per-repetition values (``rep_field``: TTFT, a generation): budgets judge it over repetitions;
- a latency percentile (``quantile`` set): its Record field when the record has it, else the percentile of the raw
  samples in ``samples`` (``samples_ms``); budgets judge it from those samples with confidence bounds
  (archbench.bench.analyze.orderstats), ``compare`` tests its change by bootstrapping ``stat`` on them;
- or derived (``derive``): ``time_to_train_h`` from ``time_to_train_s``; ``task_metric_drop`` from the record's fp32
  sibling (archbench.bench.analyze.siblings.fp32_reference), so it needs the other records as context.

Directions: ``better`` is "lower" for latencies, sizes, memory and errors, "higher" for throughput, agreement,
cosine, SQNR, task metrics and max_batch. ``sign`` turns a value into "smaller is better" for ranking and Pareto
fronts. The fp32 PyTorch eager cell is the fidelity reference itself (its worker compares nothing): ``reference``
holds what a fidelity metric is on it by definition.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from archbench.bench.errors import UsageError
from archbench.bench.record import Record

LOWER, HIGHER = "lower", "higher"


class Reading(NamedTuple):
    value: float | None  # None: the record has no such value (``note`` says why)
    note: str  # why it is missing, or how it was obtained ("point estimate"); "" when read as recorded


@dataclass(frozen=True)
class Metric:
    name: str  # what budgets, --fail-on, --objective and --pareto call it
    unit: str  # ms, MiB, samples/s, dB, s, h; "" for counts and ratios
    better: str  # LOWER | HIGHER: the direction pick optimizes, Pareto fronts compare and compare calls worse
    doc: str
    field: str | None = None  # the Record field it reads; None: derived (``derive``) or a percentile of ``samples``
    quantile: float | None = None  # latency percentiles: the level, judged from ``samples``
    samples: str | None = None  # the Record field holding the raw samples a percentile is judged from
    stat: str | None = None  # compare: the bootstrap statistic on the samples (significance.STATS), else single-valued
    inverse: bool = False  # the metric is 1 / stat (throughput = batch / mean latency): its ratio is the inverse
    timed: bool = False  # computed from the timed samples (latency, throughput): noisy, never exact
    estimate: bool = False  # a point estimate from the samples, said so in budget reasons
    context: bool = False  # derived from other records (siblings): needs them to be read
    reference: float | None = None  # its value on the fidelity reference itself (torch fp32 eager)
    derive: Callable[[Record, Sequence[Record]], Reading] | None = None
    # The Record list of its per-repetition values (one per worker process), when it is not a latency percentile:
    # budgets judge it over repetitions with an interval (analyze.intervals), as p50_ms is, once it holds >= 2.
    rep_field: str | None = None
    mode: str | None = None  # the records it applies to (Record.mode); None: any


    @property
    def sign(self) -> float:
        """+1 when lower is better, -1 when higher is: ``sign * value`` is smaller-is-better."""
        return 1.0 if self.better == LOWER else -1.0

    @property
    def worse(self) -> int:
        """+1: a rise is worse (latency, memory); -1: a fall is worse (throughput, agreement)."""
        return 1 if self.better == LOWER else -1

    def read(self, rec: Record, context: Sequence[Record] = ()) -> Reading:
        """The point value of this metric on ``rec``; ``context`` holds the records a derived metric looks in."""
        if self.mode and (rec.mode or "infer") != self.mode:
            return Reading(None, f"no {self.name}: it is measured by --mode {self.mode}, this record is "
                                 f"{rec.mode or 'infer'}")
        if self.derive is not None:
            return self.derive(rec, context)
        raw = getattr(rec, self.field) if self.field else None
        if raw is None and self.quantile is not None and self.samples:
            samples = getattr(rec, self.samples) or []
            if samples:
                import numpy as np

                raw = float(np.percentile(samples, 100 * self.quantile, method="linear"))
        if raw is None and self.reference is not None and is_reference(rec):
            return Reading(self.reference, "torch fp32 is the fidelity reference")
        if raw is None:
            return Reading(None, _missing_reason(self, rec))
        return Reading(float(raw), "point estimate" if self.estimate else "")

    def value(self, rec: Record, context: Sequence[Record] = ()) -> float | None:
        return self.read(rec, context).value


def is_reference(r: Record) -> bool:
    """The fidelity reference: the torch fp32 cell, whose outputs every other cell is compared with."""
    return r.runtime == "torch" and r.precision == "fp32"


def _missing_reason(m: Metric, r: Record) -> str:
    if m.name == "top1_agree" and r.cosine is not None:
        return "no top-1 agreement: the output is not (B, C) or (B, N, V) logits"
    if m.reference is not None and r.model.lower().endswith(".onnx"):
        return f"no {m.name}: an .onnx source has no PyTorch reference"
    if m.name == "task_metric":
        return "no task_metric: run with --metric-hook pkg.mod:fn"
    return f"the record has no {m.name}"


def _task_metric_drop(r: Record, context: Sequence[Record]) -> Reading:
    from archbench.bench.analyze.siblings import fp32_reference

    if r.task_metric is None:
        return Reading(None, "no task_metric: run with --metric-hook pkg.mod:fn")
    ref = fp32_reference(r, context)
    if ref is None or ref.task_metric is None:
        return Reading(None, "no fp32 cell with a task_metric for this model and batch")
    return Reading(float(ref.task_metric) - float(r.task_metric),
                   f"{ref.task_metric:.4g} ({ref.runtime} fp32) - {r.task_metric:.4g}")


def _time_to_train_h(r: Record, context: Sequence[Record]) -> Reading:
    if r.time_to_train_s is None:
        return Reading(None, "no time_to_train_s: run with --mode train --train-samples N")
    return Reading(float(r.time_to_train_s) / 3600.0, "steady-state estimate")


def _pct(name: str, q: float, doc: str, field: str | None = None, mode: str | None = None) -> Metric:
    return Metric(name, "ms", LOWER, doc, field=field, quantile=q, samples="samples_ms",
                  stat=f"p{round(100 * q)}", timed=True, mode=mode)


METRICS: dict[str, Metric] = {m.name: m for m in [
    _pct("p50_ms", 0.50, "median latency of one forward (confidence bound from samples)", "latency_p50_ms"),
    _pct("p90_ms", 0.90, "90th percentile latency (confidence bound from samples)", "latency_p90_ms"),
    _pct("p95_ms", 0.95, "95th percentile latency (confidence bound from samples)", "latency_p95_ms"),
    _pct("p99_ms", 0.99, "99th percentile latency (confidence bound from samples)", "latency_p99_ms"),
    Metric("mean_ms", "ms", LOWER, "mean latency (point estimate)", "latency_mean_ms", stat="mean", timed=True,
           estimate=True),
    Metric("min_ms", "ms", LOWER, "fastest call (point estimate)", "latency_min_ms", timed=True, estimate=True),
    Metric("max_ms", "ms", LOWER, "slowest call (point estimate)", "latency_max_ms", timed=True, estimate=True),
    Metric("cv", "", LOWER, "coefficient of variation of latency", "latency_cv", timed=True, estimate=True),
    Metric("throughput_sps", "samples/s", HIGHER, "samples per second = batch / mean latency (point estimate)",
           "throughput_sps", stat="mean", inverse=True, timed=True, estimate=True),
    Metric("size_mib", "MiB", LOWER, "artefact on disk, MiB (state_dict file, or .onnx + .data)", "size_mib"),
    Metric("params", "", LOWER, "parameters", "params"),
    Metric("macs", "", LOWER, "multiply-accumulates of one forward at the record's batch", "macs"),
    Metric("flops", "", LOWER, "2 x MACs", "flops"),
    Metric("peak_rss_mib", "MiB", LOWER, "peak resident memory of the measuring process, MiB", "peak_rss_mib"),
    Metric("cuda_mem_mib", "MiB", LOWER, "peak CUDA memory allocated, MiB", "cuda_max_allocated_mib"),
    Metric("load_ms", "ms", LOWER, "build/load the model or create the session, ms", "load_ms"),
    Metric("first_inference_ms", "ms", LOWER, "the first call (cold), ms", "first_inference_ms"),
    Metric("top1_agree", "", HIGHER, "argmax agreement with the fp32 PyTorch model (0..1)", "top1_agree",
           reference=1.0),
    Metric("cosine", "", HIGHER, "worst input set's cosine similarity to fp32 PyTorch outputs", "cosine",
           reference=1.0),
    Metric("sqnr_db", "dB", HIGHER, "signal-to-quantization-noise ratio vs fp32 PyTorch, dB", "sqnr_db",
           reference=math.inf),
    Metric("max_abs_err", "", LOWER, "max |output - fp32 PyTorch output|", "max_abs_err", reference=0.0),
    Metric("task_metric", "", HIGHER, "the --metric-hook's number (higher is better)", "task_metric"),
    Metric("task_metric_drop", "", LOWER, "fp32 cell's task_metric minus this cell's (points)", context=True,
           derive=_task_metric_drop),
    # training records (archbench run --mode train): latency_* hold the step time
    _pct("step_ms", 0.50, "median training step time (confidence bound from samples)", "latency_p50_ms"),
    Metric("train_peak_mem_mib", "MiB", LOWER, "peak memory of a training step, MiB", "train_peak_mem_mib"),
    Metric("activation_mib", "MiB", LOWER, "estimated activation memory at the training peak, MiB",
           "activation_mib"),
    Metric("activation_mib_per_sample", "MiB", LOWER, "activation_mib / batch", "activation_mib_per_sample"),
    # time to train = train_samples x mean step / batch: its change is the mean step time's
    Metric("time_to_train_s", "s", LOWER, "train_samples / samples per second (steady state), s", "time_to_train_s",
           stat="mean", timed=True, estimate=True),
    Metric("time_to_train_h", "h", LOWER, "time_to_train_s / 3600, hours", stat="mean", timed=True,
           derive=_time_to_train_h),
    Metric("max_batch", "", HIGHER, "largest training batch that fits (--find-max-batch)", "max_batch"),
    # generation records (archbench run --mode generate, modes.generate): latency_* hold one decode step (TPOT)
    Metric("ttft_ms", "ms", LOWER, "time to first token: prefill + argmax, median (over repetitions: their "
           "geometric mean)", "ttft_ms", timed=True, estimate=True, rep_field="rep_ttft_ms", mode="generate"),
    Metric("ttft_p95_ms", "ms", LOWER, "95th percentile time to first token", "ttft_p95_ms", timed=True,
           estimate=True, rep_field="rep_ttft_p95_ms", mode="generate"),
    _pct("tpot_ms", 0.50, "median time per output token after the first: one decode step (confidence bound "
         "from samples)", "latency_p50_ms", mode="generate"),
    _pct("tpot_p95_ms", 0.95, "95th percentile time per output token (confidence bound from samples)",
         "latency_p95_ms", mode="generate"),
    Metric("tokens_per_s", "tokens/s", HIGHER, "batch x decoded tokens / decode time = batch / mean decode step "
           "(point estimate)", "throughput_sps", stat="mean", inverse=True, timed=True, estimate=True,
           mode="generate"),
    Metric("e2e_ms", "ms", LOWER, "one whole generation: prefill + every decode step, median", "e2e_ms",
           timed=True, estimate=True, rep_field="rep_e2e_ms", mode="generate"),
    Metric("kv_cache_mib", "MiB", LOWER, "analytic KV cache at prompt + new tokens: 2 x layers x kv_heads x "
           "head_dim x context x batch x bytes, MiB", "kv_cache_mib", mode="generate"),
    Metric("kv_rss_growth_mib", "MiB", LOWER, "measured: peak RSS during a generation - RSS before it, MiB",
           "kv_rss_growth_mib", mode="generate"),
    Metric("decode_gbps", "GB/s", HIGHER, "bytes a decode step reads (weights + KV cache) / TPOT p50, GB/s",
           "decode_gbps", timed=True, estimate=True, mode="generate"),
    # serving scenarios (archbench run --scenario, modes.serve): latency_* hold one request's latency,
    # completion - arrival, queueing included; a record whose run was INVALID fails every timed term (budgets)
    Metric("max_qps", "QPS", HIGHER, "highest offered QPS whose server run was VALID and met the --sla "
           "(--find-max-qps; the bracket's lower end)", "max_qps", timed=True, estimate=True, mode="server"),
    _pct("server_p99_ms", 0.99, "99th percentile request latency (completion - arrival) of a server-scenario "
         "run (over repetitions)", "latency_p99_ms", mode="server"),
    Metric("offline_sps", "samples/s", HIGHER, "offline scenario: samples completed per second with batching "
           "(over repetitions)", "throughput_sps", timed=True, estimate=True, rep_field="rep_qps", mode="offline"),
]}



def _field_aliases() -> dict[str, str]:
    """Record field -> the first metric above that reads it (p50_ms before step_ms and tpot_ms); a field that is
    itself a metric's name (throughput_sps, read by tokens_per_s too) stays that metric."""
    out: dict[str, str] = {}
    for m in METRICS.values():
        if m.field and m.field != m.name and m.field not in METRICS:
            out.setdefault(m.field, m.name)
    return out


# Other names for the metrics above: every Record field a metric reads, and short forms people type.
ALIASES: dict[str, str] = {
    **_field_aliases(),
    "peak_mem_mib": "peak_rss_mib", "rss_mib": "peak_rss_mib", "memory": "peak_rss_mib", "size": "size_mib",
    "latency_ms": "p50_ms", "median_ms": "p50_ms", "top1": "top1_agree", "sqnr": "sqnr_db", "sps": "throughput_sps",
    "accuracy_drop": "task_metric_drop", "ttft": "ttft_ms", "tpot": "tpot_ms", "tokens_s": "tokens_per_s",
    "tok_s": "tokens_per_s", "offline_qps": "offline_sps",
}

_PCT_RE = re.compile(r"^(?:latency_)?p(\d{1,2}(?:\.\d+)?)_ms$")


def metric(name: str) -> Metric:
    """The Metric for a name or alias (case-insensitive); any ``pNN_ms`` percentile (judged from the samples);
    UsageError with suggestions otherwise."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in METRICS:
        return METRICS[key]
    m = _PCT_RE.match(key)
    if m and 0 < float(m.group(1)) < 100:
        q = round(float(m.group(1)) / 100, 12)
        return Metric(key.removeprefix("latency_"), "ms", LOWER, f"{m.group(1)}th percentile latency", quantile=q,
                      samples="samples_ms", timed=True)
    near = difflib.get_close_matches(key, [*METRICS, *ALIASES], n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; known: {', '.join(METRICS)} (or any pNN_ms)"
    raise UsageError(f"unknown budget metric {name.strip()!r}{hint}")


def aliases_of(name: str) -> list[str]:
    """The aliases that mean metric ``name``, sorted."""
    return sorted(a for a, n in ALIASES.items() if n == name)


def gateable(m: Metric) -> bool:
    """Whether ``compare --fail-on`` can gate on ``m``: it reads from the record alone, and either its change can be
    tested on the samples (``stat``) or it is not timed at all (sizes, counts, memory, fidelity: gated on the
    threshold alone). Timed metrics without a statistic (min, max, CV) cannot be shown significant."""
    return not m.context and (m.stat is not None or not m.timed)
