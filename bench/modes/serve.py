"""Serving scenarios in the measuring worker (``archbench run --scenario offline|server|concurrency``): a cell's
runtime behind a queue, executor threads and a load generator (measure.loadgen), one process, as a deployment
of one model server would run it.

One repetition of a serving cell = one worker process: ``executors`` runtime instances are prepared (each its own
ONNX Runtime session / OpenVINO request / torch runtime on the one module, each with ``executor_threads`` intra-op
threads), every batch size 1..max_batch is run once on each, in its executor thread (warm-up; the first call is
``first_inference_ms``), then the scenario runs once under its rules (scenario.Rules; the arrival schedule seeded by the repetition).
Batches are slices of one random input set per executor (never zeros), converted before the run; building a batch
from requests' own tensors (a copy) is not timed here.

The record of a repetition (mode = the scenario's kind, ``scenario`` = its descriptor):

- ``latency_*`` and ``samples_ms``: every completed request's latency = completion - arrival (server: the
  *scheduled* arrival; offline and concurrency: the moment it was issued), queueing and batching included;
  percentiles over all of them, ``samples_ms`` thinned to at most ``MAX_SAMPLES`` (every k-th) to keep JSONL small;
- ``throughput_sps`` = achieved QPS = completed requests / (last completion - start) (requests are one sample);
  ``offered_qps`` (server), ``concurrency``; ``valid`` / ``invalid_reason`` (measure.loadgen's rules);
- ``mean_batch``, ``service_mean_ms`` (one executed batch's run()), ``utilization`` (busy / executors x wall),
  ``backlog`` (queued + running at the last arrival), ``loadgen_late_p50_ms`` / ``_p99_ms`` and ``loadgen_cpu_us``
  (the load generator's own lateness and CPU per issued request; server only);
- ``peak_rss_mib`` over the run, every executor's instance included.

Repetitions combine (analyze.serving.combine_serving, called by analyze.combine.combine) into intervals over processes:
p50/p95/p99 as every latency, p90 and achieved QPS likewise; a cell is VALID only if every repetition was.
No fidelity here: the cell's single-stream record measures it. Torch-free unless the runtime needs torch.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from archbench.bench.analyze.stats import fill_latency
from archbench.bench.cell import Cell, Job
from archbench.bench.measure.protocol import new_record, one_line, prepare_failed
from archbench.bench.modes import ModeBase
from archbench.bench.record import Record
from archbench.bench.scenario import KINDS, Rules, Scenario

MAX_SAMPLES = 20_000  # request latencies stored per repetition (percentiles are computed before thinning)
SWITCH_INTERVAL_S = 0.0005  # the GIL hand-over interval while serving (Python's default 5 ms would delay the load
# generator's wake-ups behind an executor's Python code by up to that much)


class Serve(ModeBase):
    name: ClassVar[str] = "serve"
    cell_modes: ClassVar[tuple[str, ...]] = KINDS

    def run_job(self, job: Job, emit: Any) -> None:
        """Every cell of the job (one scenario each) on freshly prepared executors."""
        from archbench.bench.measure.prepare import prepare
        from archbench.bench.measure.runtimes import UnsupportedCell

        for cell in job.cells:
            try:
                s = Scenario.parse(cell.mode, cell.scenario)
                p = prepare(job, cell, instances=s.executors, threads=s.executor_threads, references=False)
            except Exception as e:
                prepare_failed(e, (UnsupportedCell,), (cell,), job.run_id, emit)
                continue
            emit("start", batch=cell.batch)
            emit.record(measure_serving(cell, p.runtimes, p.model, job, p.rss_imports_mib))

    def summary(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        """The serving table and the max-QPS answers (report.serving)."""
        from archbench.bench.report.serving import answer_lines, serving_table

        text = serving_table(records)
        return [*text.splitlines(), *answer_lines(records)] if text else []

    def report_md(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        from archbench.bench.report.serving import serving_md

        return serving_md(records)

    def plots(self, records: Sequence[Record], out: Path) -> list[Path]:
        from archbench.bench.report.serving import plot_load_curves

        return plot_load_curves(records, out)


def _batches(rt: Any, model: Any, max_batch: int, seed: int) -> list[Any]:
    """natives[k] = the runtime's input for a batch of k (k = 1..max_batch), slices of one input set."""
    full = model.inputs(max_batch, seed)
    out: list[Any] = [None]
    for k in range(1, max_batch + 1):
        parts = []
        for a, spec in zip(full, model.specs, strict=True):
            index = (slice(None),) * spec.batch_dim + (slice(0, k),)
            parts.append(np.ascontiguousarray(a[index]))  # a view when the batch is the first dimension
        out.append(rt.convert(tuple(parts)))
    return out


def executor_runs(rts: Sequence[Any], model: Any, s: Scenario, cuda: bool
                  ) -> tuple[list[Callable[[int], Any]], list[Callable[[], None]], dict[str, float]]:
    """One ``run(k)`` per executor; the ``starts`` each executor thread runs first (the runtime's thread set-up,
    then every batch size once and the largest twice more: the warm-up); and ``first`` = {"ms": the first call}."""
    import time

    runs, starts, first = [], [], {"ms": 0.0}
    for e, rt in enumerate(rts):
        natives = _batches(rt, model, s.max_batch, seed=e)
        sync = getattr(rt, "synchronize", None) if cuda else None

        def run(k: int, rt: Any = rt, natives: list[Any] = natives, sync: Any = sync) -> Any:
            out = rt.run(natives[k])
            if sync is not None:
                sync()
            return out

        def start(e: int = e, rt: Any = rt, run: Callable[[int], Any] = run) -> None:
            rt.bind_thread()
            t = time.perf_counter()
            run(1)
            if e == 0:
                first["ms"] = (time.perf_counter() - t) * 1e3
            for k in (*range(1, s.max_batch + 1), s.max_batch, s.max_batch):
                run(k)

        runs.append(run)
        starts.append(start)
    return runs, starts, first


def measure_serving(cell: Cell, rts: list[Any], model: Any, job: Job, rss_imports: float) -> Record:
    """One repetition of a serving cell. Never raises: a failure is a failed record."""
    from archbench.bench.measure.harness import cpu_snapshot, other_cpu_pct, peak_rss_mib, reset_peak_rss
    from archbench.bench.measure.loadgen import run_load

    s = Scenario.parse(cell.mode, cell.scenario)
    rt = rts[0]
    spec = model.specs[0].with_batch(1)
    rec = new_record(
        cell, job.run_id, family=model.family, input_shape="x".join(map(str, spec.shape)), input_dtype=spec.dtype,
        params=model.counts.get("params"), size_mib=rt.size_bytes / 2**20, load_ms=rt.load_ms,
        quant_method=rt.quant_method, runtime_version=type(rt).version(), runtime_threads=rt.runtime_threads,
        runtime_config=f"{s.executors} executor(s) x [{rt.runtime_config}]", rss_imports_mib=round(rss_imports, 2),
        scenario=cell.scenario, offered_qps=s.qps, concurrency=s.concurrency, executors=s.executors,
        executor_threads=s.executor_threads, max_batch_size=s.max_batch, queue_delay_ms=s.queue_delay_ms)
    if model.counts.get("macs") is not None:
        rec.macs = model.counts["macs"]  # per request (one sample)
        rec.flops = 2 * rec.macs
    o = cell.options
    rules = Rules.for_kind(s.kind, o.serve.min_duration_s, o.serve.min_queries, o.serve.tolerance,
                           seed=1000 + job.repetition)
    switch = sys.getswitchinterval()
    try:
        runs, starts, first = executor_runs(rts, model, s, cuda=cell.device == "cuda")
        reset_peak_rss()
        before = cpu_snapshot()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        res = run_load(s, rules, runs, starts)
        sys.setswitchinterval(switch)
        busy = other_cpu_pct(before, cpu_snapshot())
        rec.peak_rss_mib = round(peak_rss_mib(), 2)
        rec.rss_model_mib = round(rec.peak_rss_mib - rss_imports, 2)
        if res.completed == 0:
            raise RuntimeError("no request completed: " + "; ".join(res.reasons or ["?"]))
        fill_from_load(rec, res, first["ms"], busy, s.max_batch + 3)
        rec.rep_rounds = [job.repetition]
        threads = s.executors * s.executor_threads
        if threads > (os.cpu_count() or 1):
            rec.warning = "; ".join(w for w in (rec.warning, f"{s.executors} executors x {s.executor_threads} "
                                    f"threads = {threads} > {os.cpu_count()} CPUs: oversubscribed") if w)
    except Exception as e:
        sys.setswitchinterval(switch)
        print(traceback.format_exc(), file=sys.stderr)
        rec.status, rec.error = "failed", one_line(e)
    notes = [n for r in rts[:1] for n in r.notes]
    if notes:
        rec.warning = "; ".join([*notes, rec.warning]).strip("; ")
    if not type(rt).needs_torch and sys.modules.get("torch") is not None:
        rec.warning = "; ".join([rec.warning, "torch was imported into this torch-free worker"]).strip("; ")
    return rec


def fill_from_load(rec: Record, res: Any, first_ms: float, busy: float | None, warmup: int) -> None:
    """A repetition's record fields from a measure.loadgen.LoadResult (see the module docstring)."""
    lat = res.latency_ms
    fill_latency(rec, lat.tolist(), first_ms=first_ms, warmup_iters=warmup, measure_s=res.duration_s,
                     other_cpu_pct=busy, flops_per_call=None)
    # CV of queueing latencies is the queue at work, not an unstable machine: drop fill_latency's flag for it
    rec.warning = "; ".join(w for w in rec.warning.split("; ") if w and not w.startswith("unstable:"))
    rec.stable = None
    if lat.size > MAX_SAMPLES:
        thin = [round(float(x), 6) for x in lat[:: -(-lat.size // MAX_SAMPLES)]]
        rec.samples_ms, rec.samples_by_rep = thin, [thin]
    rec.rep_p90_ms = [float(np.percentile(lat, 90))]
    rec.throughput_sps = res.achieved_qps
    rec.rep_qps = [res.achieved_qps]
    rec.valid = res.valid
    rec.invalid_reason = "; ".join(res.reasons)
    rec.queries = int(res.completed)
    rec.mean_batch = float(res.batches.mean()) if res.batches.size else None
    rec.service_mean_ms = float(res.service_ms.mean()) if res.service_ms.size else None
    rec.utilization = res.utilization
    rec.backlog = int(res.backlog)
    if res.late_ms is not None and res.late_ms.size:
        rec.loadgen_late_p50_ms = float(np.percentile(res.late_ms, 50))
        rec.loadgen_late_p99_ms = float(np.percentile(res.late_ms, 99))
    if res.loadgen_cpu_s is not None and res.issued:
        rec.loadgen_cpu_us = res.loadgen_cpu_s / res.issued * 1e6
