"""The Record: one measured cell (model x runtime x precision x batch x device), flat, CSV-ready.

Field order is the CSV column order. ``samples_ms`` (the raw per-iteration latencies) is kept in the JSONL only:
budgets judge percentiles from it and ``compare`` tests significance on it.

Records are written as JSON lines (``append_jsonl``) and read back as ``Record`` objects (``read_records``), never
as dicts. Bump SCHEMA_VERSION whenever a field changes meaning or is removed, and add a step to ``MIGRATIONS`` that
brings a record of the old version up to date on read (or says, in its ``warning``, what cannot be brought up).
A record of a *newer* version than this code knows is refused (``SchemaError``): its fields may mean other things.

This module imports neither torch nor any runtime: torch-free measuring workers (ONNX Runtime, OpenVINO) use it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3


class SchemaError(ValueError):
    """A record this code cannot read faithfully (a newer schema_version)."""


@dataclass
class Record:
    # --- identity of the cell
    model: str  # zoo name, pkg.module:factory or file.onnx, as given
    runtime: str  # a name in archbench.bench.measure.runtimes.RUNTIMES (torch, torch-compile, onnxruntime, openvino)
    precision: str  # fp32 | fp16 | bf16 | int8-dynamic | int8-static (archbench.bench.measure.quantize)
    batch: int
    device: str  # cpu | cuda
    threads: int  # intra-op threads of the runtime that measured (torch and onnxruntime alike)
    status: str = "ok"  # ok | failed | skipped
    error: str = ""  # why, when status is not ok
    family: str = ""
    knobs: str = ""  # JSON of the builder keywords given
    input_shape: str = ""  # e.g. 8x3x128x128
    input_dtype: str = ""
    quant_method: str = ""  # int8 variants: how they were made (tool, format, dtypes, calibration, int8 nodes)
    # --- static counts (per sample: MACs/FLOPs of a batch-1 forward x batch)
    params: int | None = None
    macs: int | None = None  # multiply-accumulates of one forward at this batch
    flops: int | None = None  # 2 x macs
    size_mib: float | None = None  # the artefact this runtime loads, on disk (state_dict file or .onnx + .data)
    # --- latency of one forward at this batch, milliseconds
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    latency_std_ms: float | None = None
    latency_min_ms: float | None = None
    latency_max_ms: float | None = None
    latency_cv: float | None = None
    n_samples: int | None = None
    throughput_sps: float | None = None  # batch / mean latency
    achieved_gflops: float | None = None  # flops / p50 latency / 1e9
    stable: bool | None = None  # cv <= 10%
    other_cpu_pct: float | None = None  # % of all CPUs other processes (and steal) used while timing (archbench.bench.measure.harness)
    # --- 95% intervals over repetitions (analyze.intervals): a statistic's estimate is the geometric mean of its
    # per-repetition values (the latency_* fields above), lo/hi its t interval on logs; None with one repetition
    repetitions: int | None = None  # ok repetitions (independent worker processes) combined in this record
    latency_p50_lo_ms: float | None = None
    latency_p50_hi_ms: float | None = None
    latency_p95_lo_ms: float | None = None
    latency_p95_hi_ms: float | None = None
    latency_p99_lo_ms: float | None = None
    latency_p99_hi_ms: float | None = None
    latency_mean_lo_ms: float | None = None
    latency_mean_hi_ms: float | None = None
    throughput_lo_sps: float | None = None
    throughput_hi_sps: float | None = None
    p50_rel_ci: float | None = None  # precision reached: (hi - lo) / 2 / p50
    # --- cold start
    load_ms: float | None = None  # build/load the model, or export + create the ONNX Runtime session
    first_inference_ms: float | None = None  # the very first call at this batch (includes compile for torch.compile)
    # --- memory
    peak_rss_mib: float | None = None  # worker's peak resident memory during a separate inference pass
    rss_imports_mib: float | None = None  # the worker's resident memory right after importing the runtime
    rss_model_mib: float | None = None  # peak_rss_mib - rss_imports_mib: what the model and inference added
    cuda_max_allocated_mib: float | None = None
    cuda_max_reserved_mib: float | None = None
    # --- fidelity vs the torch fp32 model on the same inputs (archbench.bench.measure.fidelity: definitions there)
    max_abs_err: float | None = None  # max |ref - out| over every fidelity input set
    top1_agree: float | None = None  # argmax agreement over the last dim; logits outputs (B, C) / (B, N, V) only
    top1_rows: int | None = None  # rows (samples, or tokens for LMs) top1_agree rests on
    cosine: float | None = None  # worst input set's cosine similarity of the flattened outputs
    sqnr_db: float | None = None  # 10 log10(sum ref^2 / sum err^2) pooled over sets; inf when identical
    fidelity_sets: int | None = None  # input sets compared (the timing sets plus more to reach --fidelity-samples)
    task_metric: float | None = None  # the --metric-hook's value for this cell (higher is better)
    # --- harness
    warmup_iters: int | None = None
    measure_s: float | None = None  # wall time of the timed loop
    warning: str = ""
    # --- training (archbench.bench.measure.train_step; mode train: latency_* = one training step, throughput_sps = batch / mean step)
    mode: str = "infer"  # infer | train | maxbatch-trial (one memory-only trial of --find-max-batch) | generate |
    # offline | server | concurrency (serving scenarios, below)
    optimizer: str = ""  # sgd | adamw (mode train)
    loss_fn: str = ""  # next-token-cross-entropy | cross-entropy | mse (random targets; see archbench.bench.measure.train_step)
    train_peak_mem_mib: float | None = None  # CPU: worker peak RSS; CUDA: max_memory_allocated; over a step
    train_mem_baseline_mib: float | None = None  # before the model was built (interpreter, libraries)
    param_mib: float | None = None  # exact: numel x element_size of the parameters
    grad_mib: float | None = None  # exact: of the gradients
    optimizer_state_mib: float | None = None  # exact: of the optimizer's state tensors
    activation_mib: float | None = None  # estimate: peak - baseline - params - grads - optimizer state
    activation_mib_per_sample: float | None = None  # activation_mib / batch
    train_samples: int | None = None  # --train-samples x --epochs
    time_to_train_s: float | None = None  # train_samples / throughput_sps (steady state, no data loading)
    max_batch: int | None = None  # --find-max-batch: largest batch that fit (0: none)
    mem_cap_mib: float | None = None  # memory cap the cell ran under (CPU: RSS; CUDA: allocator)
    # --- generation (archbench.bench.modes.generate; mode generate: latency_* = one decode step, i.e. TPOT, the
    # first generated token excluded; throughput_sps = tokens/s = batch / mean decode step; macs/flops = one decode
    # step at this batch at the mean context)
    prompt_len: int | None = None  # tokens in the prompt (the model's example input: its seq_len)
    new_tokens: int | None = None  # tokens generated: the first by the prefill, then new_tokens - 1 decode steps
    ttft_ms: float | None = None  # time to first token: prefill + argmax; per repetition the median, combined as p50
    ttft_p95_ms: float | None = None
    ttft_lo_ms: float | None = None  # 95% interval of ttft_ms over repetitions
    ttft_hi_ms: float | None = None
    e2e_ms: float | None = None  # one whole generation: prefill + every decode step (median per repetition)
    prefill_macs: int | None = None  # MACs of the prefill at this batch
    kv_cache_mib: float | None = None  # analytic: 2 x layers x kv_heads x head_dim x (prompt + new) x batch x bytes
    kv_rss_growth_mib: float | None = None  # measured: peak RSS during a generation - RSS before its prefill
    decode_bytes: int | None = None  # read per decode step: weights (less the embedding table) + KV cache
    decode_gbps: float | None = None  # decode_bytes / TPOT p50 / 1e9
    # --- serving scenarios (archbench.bench.modes.serve; mode offline | server | concurrency: latency_* = one
    # request, completion - arrival, queueing included; throughput_sps = achieved QPS = completed requests per second)
    scenario: str = ""  # the scenario's settings, canonical ("qps=200 executors=2 ..."); "" for single-stream cells
    offered_qps: float | None = None  # server: the Poisson arrival rate offered
    concurrency: int | None = None  # concurrency: requests always in flight
    executors: int | None = None  # executor threads, each with its own runtime instance
    executor_threads: int | None = None  # intra-op threads of each executor's runtime
    max_batch_size: int | None = None  # dynamic batching: most requests one executor runs as one batch
    queue_delay_ms: float | None = None  # dynamic batching: longest the oldest queued request waits for a batch
    valid: bool | None = None  # every repetition kept up and ran long enough (measure.loadgen); None: not serving
    invalid_reason: str = ""
    queries: int | None = None  # requests completed, all repetitions
    mean_batch: float | None = None  # mean size of the executed batches
    service_mean_ms: float | None = None  # mean run() time of one executed batch
    utilization: float | None = None  # busy executor time / (executors x wall time)
    backlog: int | None = None  # requests queued or running at the last arrival (max over repetitions)
    loadgen_late_p50_ms: float | None = None  # server: how late the load generator issued arrivals vs schedule
    loadgen_late_p99_ms: float | None = None
    loadgen_cpu_us: float | None = None  # server: load-generator thread CPU time per issued request
    latency_p90_lo_ms: float | None = None  # 95% interval of p90 over repetitions (serving records)
    latency_p90_hi_ms: float | None = None
    max_qps: float | None = None  # --find-max-qps: highest offered QPS that ran VALID and met the SLA (0: none)
    max_qps_fail: float | None = None  # the lowest offered QPS above it that did not: the answer's bracket
    sla: str = ""  # the SLA a --find-max-qps search judged its trials by
    baseline: str = ""  # run --baseline: the model every other model of the run is compared with, paired by round
    # --- the runtime, as it reported itself (archbench.bench.measure.runtimes)
    runtime_version: str = ""  # version of the package that ran the model (torch, onnxruntime, openvino)
    runtime_threads: int | None = None  # intra-op threads the runtime says it used
    runtime_config: str = ""  # the settings it ran with, e.g. "PERFORMANCE_HINT=LATENCY NUM_STREAMS=1"
    # --- provenance
    schema_version: int = SCHEMA_VERSION
    run_id: str = ""
    timestamp: str = ""
    archbench_version: str = ""
    git_commit: str = ""
    python_version: str = ""
    torch_version: str = ""
    onnxruntime_version: str = ""
    onnx_version: str = ""
    triton_version: str = ""
    os: str = ""
    hostname: str = ""
    cpu_model: str = ""
    cpu_count: int = 0
    gpu_name: str = ""
    gpu_driver: str = ""
    # --- the cluster node that measured (--cluster, archbench.bench.measure.cluster.dispatcher; "" / None on a local run)
    node_id: str = ""  # Ray node id
    node_ip: str = ""
    node_start_unix_s: float | None = None  # when the task that measured started holding the node (its one slot)
    node_end_unix_s: float | None = None  # when this cell's record reached that task: the cell ran in between
    samples_ms: list[float] = field(default_factory=list)  # every timed call, repetitions concatenated
    # --- per repetition (JSONL only): the statistics the intervals and compare rest on, and the raw samples
    rep_p50_ms: list[float] = field(default_factory=list)
    rep_p95_ms: list[float] = field(default_factory=list)
    rep_p99_ms: list[float] = field(default_factory=list)
    rep_mean_ms: list[float] = field(default_factory=list)
    rep_rounds: list[int] = field(default_factory=list)  # the run's round each repetition ran in (pairs speedups)
    samples_by_rep: list[list[float]] = field(default_factory=list)
    rep_ttft_ms: list[float] = field(default_factory=list)  # mode generate: each repetition's TTFT median
    rep_ttft_p95_ms: list[float] = field(default_factory=list)
    rep_e2e_ms: list[float] = field(default_factory=list)
    ttft_samples_ms: list[float] = field(default_factory=list)  # every timed generation's TTFT
    rep_p90_ms: list[float] = field(default_factory=list)  # serving: each repetition's p90
    rep_qps: list[float] = field(default_factory=list)  # serving: each repetition's achieved QPS


    def key(self) -> tuple:
        """What identifies this cell across runs (archbench.bench.cell.Cell.key is the same tuple)."""
        return (self.model, self.knobs or "", self.runtime, self.precision, self.batch, self.device, self.threads,
                self.mode or "infer", self.scenario or "")

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def label(self) -> str:
        """The cell's label (archbench.bench.cell.cell_label)."""
        from archbench.bench.cell import cell_label

        return cell_label(self.model, self.knobs, self.runtime, self.precision, self.batch, self.mode or "infer",
                          self.scenario, self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """A record from its JSON form, migrated from an older ``schema_version``; unknown keys are dropped.

        Raises SchemaError for a newer schema than this code knows, ValueError when identity fields are missing."""
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or version < 1:
            raise SchemaError(f"schema_version {version!r} is not a positive integer")
        if version > SCHEMA_VERSION:
            raise SchemaError(f"schema_version {version} is newer than this archbench reads ({SCHEMA_VERSION}); "
                              "upgrade archbench")
        d = dict(d)
        while version < SCHEMA_VERSION:
            d = MIGRATIONS[version](d)
            version += 1
        d["schema_version"] = SCHEMA_VERSION
        missing = [k for k in _IDENTITY if k not in d]
        if missing:
            raise ValueError(f"record without {', '.join(missing)}")
        kept = {k: v for k, v in d.items() if k in _FIELDS}
        for k, v in kept.items():
            if not _TYPE_OK[_FIELD_TYPES[k]](v):
                raise ValueError(f"field {k} is {v!r:.40}, not {_FIELD_TYPES[k]}")
        return cls(**kept)


def _v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: the runtime fields and the memory split are new (left empty). Schema 1's ONNX Runtime workers
    imported torch and held the torch model, so their ``peak_rss_mib`` includes torch: say so on the record."""
    if d.get("runtime") == "onnxruntime" and d.get("peak_rss_mib") is not None:
        why = "schema 1 record: peak_rss_mib includes torch (the ONNX Runtime worker imported it then)"
        d["warning"] = "; ".join(w for w in (d.get("warning") or "", why) if w)
    return d


def _v2_to_v3(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 -> 3: repetitions are new. A schema 2 record is one timed loop in one process: its statistics become
    that one repetition's, with no interval (one loop's samples are not independent draws: see analyze.intervals)."""
    if d.get("status", "ok") == "ok" and d.get("latency_p50_ms") is not None:
        d["repetitions"] = 1
        for stat in ("p50", "p95", "p99", "mean"):
            v = d.get(f"latency_{stat}_ms")
            d[f"rep_{stat}_ms"] = [v] if v is not None else []
        d["rep_rounds"] = [0]
        d["samples_by_rep"] = [d.get("samples_ms") or []]
        why = "one repetition (an older record): no interval across worker processes"
        d["warning"] = "; ".join(w for w in (d.get("warning") or "", why) if w)
    return d


# MIGRATIONS[v] turns a record dict of schema v into one of schema v + 1.
MIGRATIONS = {1: _v1_to_v2, 2: _v2_to_v3}
_FIELDS = {f.name for f in fields(Record)}
_FIELD_TYPES = {f.name: str(f.type) for f in fields(Record)}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _nums(v: Any) -> bool:
    return isinstance(v, list) and all(_num(x) for x in v)


# What a JSON value of each annotated field type may be (a record read back is checked field by field, so a stray
# edit or a foreign file is a named warning, not a crash three modules later). JSON has no NaN/inf literals of its
# own, but Python's json writes and reads them: floats are floats whatever their value.
_TYPE_OK: dict[str, Any] = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "float | None": lambda v: v is None or _num(v),
    "bool | None": lambda v: v is None or isinstance(v, bool),
    "list[float]": _nums,
    "list[int]": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
    "list[list[float]]": lambda v: isinstance(v, list) and all(_nums(x) for x in v),
}
_IDENTITY = ("model", "runtime", "precision", "batch", "device", "threads")

CellKey = tuple


def cell_key(r: Record) -> CellKey:
    """What identifies a cell across runs (used by --resume and compare)."""
    return r.key()


CSV_FIELDS = [f.name for f in fields(Record) if not isinstance(getattr(Record, f.name, None), list)
              and f.type not in ("list[float]", "list[int]", "list[list[float]]")]


def append_jsonl(path: Path, rec: Record) -> None:
    """Append one record and flush it to disk now: a kill after this line keeps it.

    A file that ends in a partial line (a crash or a full disk mid-write) gets its line ended first, so the new
    record never merges into the fragment; the fragment stays, and readers skip it with a warning."""
    line = json.dumps(asdict(rec)) + "\n"
    with open(path, "ab") as fh:
        if fh.tell() > 0:
            with open(path, "rb") as rd:
                rd.seek(-1, os.SEEK_END)
                if rd.read(1) != b"\n":
                    line = "\n" + line
                    import sys

                    rd.seek(0)
                    n = rd.read().count(b"\n") + 1
                    print(f"archbench: warning: {path} line {n} is a partial record (a crash or a full disk "
                          "mid-write): it is left in place, ended, and skipped by every reader", file=sys.stderr)
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def _json_lines(path: Path, bad: list[str] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as fh:
        for i, raw in enumerate(fh, 1):
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                obj = None
            if isinstance(obj, dict):
                yield i, obj
            elif bad is not None:
                what = "not a JSON record (a partial write?)" if obj is None else f"a JSON {type(obj).__name__}, not a record"
                bad.append(f"{path} line {i}: {what}: skipped")


def read_jsonl(path: Path, bad: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file. A line that is not a JSON object (a truncated write, a stray edit) is
    skipped; with ``bad`` given, a note naming the file and line is appended to it."""
    for _, obj in _json_lines(path, bad):
        yield obj


def read_records(path: Path, versions: set[int] | None = None) -> list[Record]:
    """Every record of a records.jsonl as ``Record`` objects (older schemas migrated; see ``Record.from_dict``).

    Raises SchemaError when a record is of a newer schema than this code knows. Lines that cannot be read (not
    JSON, not an object, identity fields missing, a field of the wrong type) are skipped with one warning line each
    on stderr, naming the file, the line and why. ``versions``, when given, collects the schema_version of every
    record read (the one schema check of merge.check_schema refuses to mix them)."""
    import sys

    out = []
    bad: list[str] = []
    for i, d in _json_lines(path, bad):
        try:
            out.append(Record.from_dict(d))
        except SchemaError as e:
            raise SchemaError(f"{path} line {i}: {e}") from None
        except (TypeError, ValueError, KeyError) as e:
            bad.append(f"{path} line {i}: not a readable record ({str(e).splitlines()[0][:120]}): skipped")
            continue
        if versions is not None:
            versions.add(d.get("schema_version", 1))
    for note in bad:
        print(f"archbench: warning: {note}", file=sys.stderr)
    return out


def latest_per_cell(records: Iterable[Record]) -> list[Record]:
    """The last record of each cell, in first-seen order (a resumed run's retry replaces its failure)."""
    out: dict[CellKey, Record] = {}
    for r in records:
        out[r.key()] = r
    return list(out.values())


def write_csv(path: Path, records: Iterable[Record]) -> None:
    """The records as CSV (CSV_FIELDS columns), written atomically."""
    import io

    from archbench.bench.atomic import atomic_write

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow(asdict(r))
    atomic_write(path, buf.getvalue())
