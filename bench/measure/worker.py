"""The measuring process. The engine starts it with ``BOOT`` (never with the current directory first on sys.path),
writes ``Job``s (archbench.bench.cell) on its stdin and reads events from its stdout (measure.protocol): usually
one job; a round's timing-only repetitions of one runtime, several (measure.dispatch.Pool); the artifacts jobs of
a run, all of them (dispatch.build_all).

A job of kind ``artifacts`` builds a model's artefact folder (measure.artifacts). A measuring job is one group of
cells sharing source, runtime, precision and device: the model is loaded and the runtime prepared once, then each
batch size is measured (a serving cell, modes offline / server / concurrency, runs modes.serve instead:
executor threads behind a queue and a load generator). A cell that raises becomes a failed record and the next
goes on; a crash, OOM kill or timeout is turned into a failed record by the engine (measure.dispatch).

What a measuring worker imports is what a deployment of its runtime would: a runtime with ``needs_torch = False``
(ONNX Runtime, OpenVINO) gets its model from the artefact folder and never imports torch; a record says so in its
``warning`` if something did (a user's hook, say). Memory: ``rss_imports_mib`` is read right after the runtime's
imports, before the model is loaded; ``peak_rss_mib`` over a separate inference pass; ``rss_model_mib`` the
difference (the model and inference).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from archbench.bench.cell import Cell, Job
from archbench.bench.errors import USER_CODE_ERRORS
from archbench.bench.measure.protocol import Emitter, new_record, one_line, prepare_failed
from archbench.bench.record import Record

# How the engine starts a worker: the interpreter's path without the current directory ('' with -c), so a user's
# numpy.py, onnxruntime.py or models/ in the directory archbench runs from cannot shadow what the worker imports.
# The user's own factory modules are still found there: measure.hooks.import_callable appends the cwd *last*.
BOOT = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
        "from archbench.bench.measure.worker import main; main()")


def worker_command() -> list[str]:
    return [sys.executable, "-c", BOOT]


def prepare(job: Job) -> tuple[Any, Any, float]:
    """(runtime, model, rss right after the runtime's imports) for the job's cells: the runtime imported and its
    thread pools sized, the model loaded (built, or read from the artefact folder), the runtime prepared on it.
    Raises UnsupportedCell (a skipped cell) or anything else (a failed one). The worker and the pytest fixture
    both start here."""
    from archbench.bench.measure.harness import current_rss_mib
    from archbench.bench.measure.runtimes import get_runtime
    from archbench.bench.measure.variants import quant_config

    head = job.head
    workdir = Path(job.workdir)
    cls = get_runtime(head.runtime)
    cls.check(head.precision, head.device)
    rt = cls(head.threads, head.device)  # imports the runtime's package, sizes its thread pools
    rss_imports = current_rss_mib()
    if cls.needs_torch:
        from archbench.bench.measure.model import TorchModel

        model: Any = TorchModel(head, workdir, job.cells)
    else:
        from archbench.bench.measure.model import Exported

        model = Exported(head, workdir)
    rt.prepare(model, head.precision, workdir, quant_config(head))
    model.release()
    return rt, model, rss_imports


def measure_job(job: Job, emit: Emitter) -> None:
    """Measure the job's cells (inference): load, prepare once, then time each batch size."""
    from archbench.bench.measure.runtimes import UnsupportedCell

    try:
        rt, model, rss_imports = prepare(job)
        hook = _metric_hook(job.head.options.metric_hook)
    except Exception as e:
        prepare_failed(e, (UnsupportedCell,), job.cells, job.run_id, emit)
        return
    for cell in job.cells:
        emit("start", batch=cell.batch)
        emit.record(measure_cell(cell, rt, model, job, rss_imports, hook))


def start_record(cell: Cell, rt: Any, model: Any, run_id: str, rss_imports: float | None) -> Record:
    """A cell's record with everything known before timing: identity, provenance, the model's counts, the
    runtime's size, load time and settings."""
    b = cell.batch
    specs = [s.with_batch(b) for s in model.specs]
    rec = new_record(
        cell, run_id, family=model.family, input_shape=",".join("x".join(map(str, s.shape)) for s in specs),
        input_dtype=",".join(s.dtype for s in specs), params=model.counts.get("params"),
        size_mib=rt.size_bytes / 2**20, load_ms=rt.load_ms, quant_method=rt.quant_method,
        runtime_version=type(rt).version(), runtime_threads=rt.runtime_threads, runtime_config=rt.runtime_config,
        rss_imports_mib=None if rss_imports is None else round(rss_imports, 2),
    )
    if model.counts.get("macs") is not None:
        rec.macs = model.counts["macs"] * b  # of a batch-1 forward x batch: no zoo op mixes samples
        rec.flops = 2 * rec.macs
    return rec


def measure_cell(cell: Cell, rt: Any, model: Any, job: Job, rss_imports: float, hook: Any = None) -> Record:
    """One cell on a prepared runtime: timing, memory pass, fidelity, task metric. Never raises."""
    from archbench.bench.measure.fidelity import compare
    from archbench.bench.measure.harness import cpu_snapshot, measure, other_cpu_pct
    from archbench.bench.measure.inputs import fidelity_seeds

    b = cell.batch
    rec = start_record(cell, rt, model, job.run_id, rss_imports)
    cuda = cell.device == "cuda" and type(rt).needs_torch  # CUDA events need torch; ORT's run() is synchronous
    try:
        sets = [rt.convert(model.inputs(b, s)) for s in range(cell.options.input_sets)]
        before = cpu_snapshot()
        timing = measure(rt.run, sets, job.rule, cuda=cuda)
        rec.fill_latency(timing.samples_ms, first_ms=timing.first_ms, warmup_iters=timing.warmup_iters,
                         measure_s=timing.measure_s, other_cpu_pct=other_cpu_pct(before, cpu_snapshot()),
                         flops_per_call=rec.flops)  # achieved GFLOP/s = FLOPs per forward / p50
        rec.repetitions, rec.rep_rounds = 1, [job.repetition]
        if job.repetition > 0:  # later repetitions only time: memory and fidelity do not vary between processes
            return _finish(rec, rt)
        _memory_pass(rec, rt, sets, cuda)
        if not all(np.isfinite(o).all() for o in rt.outputs(rt.run(sets[0]))):  # timed, but computing nothing
            rec.warning = "; ".join(w for w in (rec.warning, "the outputs are not finite (NaN/inf) on a random "
                                                "input: the latency is real, the model's results are not") if w)
        if rec.peak_rss_mib is not None:
            rec.rss_model_mib = round(rec.peak_rss_mib - rss_imports, 2)
        seeds = fidelity_seeds(b, len(sets), cell.options.fidelity_samples)
        refs = [model.reference(b, s) for s in seeds]
        if refs and all(r is not None for r in refs):
            gots = [rt.outputs(rt.run(sets[s] if s < len(sets) else rt.convert(model.inputs(b, s)))) for s in seeds]
            fid = compare(refs, gots)
            rec.max_abs_err, rec.cosine, rec.sqnr_db = fid.max_abs_err, fid.cosine, fid.sqnr_db
            rec.top1_agree, rec.top1_rows, rec.fidelity_sets = fid.top1_agree, fid.top1_rows, fid.sets
        if hook is not None:
            rec.task_metric, why = _task_metric(hook, rt, model, cell)
            if why:
                rec.warning = "; ".join([rec.warning, why]).strip("; ")
    except Exception as e:
        print(traceback.format_exc(), file=sys.stderr)
        rec.status, rec.error = "failed", one_line(e)
    return _finish(rec, rt)


def _finish(rec: Record, rt: Any) -> Record:
    if rt.notes:
        rec.warning = "; ".join([*rt.notes, rec.warning]).strip("; ")
    if not type(rt).needs_torch and "torch" in sys.modules:
        rec.warning = "; ".join([rec.warning, "torch was imported into this torch-free worker (by a hook?): "
                                 "peak_rss_mib includes it"]).strip("; ")
    return rec


def _memory_pass(rec: Record, rt: Any, sets: list[Any], cuda: bool) -> None:
    """Peak RSS over a few calls after resetting the high-water mark (separate from timing); CUDA allocator peaks."""
    from archbench.bench.measure.harness import peak_rss_mib, reset_peak_rss

    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    reset_peak_rss()
    for i in range(3):
        out = rt.run(sets[i % len(sets)])
    del out
    if cuda:
        import torch

        torch.cuda.synchronize()
        rec.cuda_max_allocated_mib = torch.cuda.max_memory_allocated() / 2**20
        rec.cuda_max_reserved_mib = torch.cuda.max_memory_reserved() / 2**20
    rec.peak_rss_mib = round(peak_rss_mib(), 2)


def _metric_hook(ref: str | None) -> Any:
    if not ref:
        return None
    from archbench.bench.measure.hooks import load_hook

    return load_hook(ref, "--metric-hook")


def _task_metric(hook: Any, rt: Any, model: Any, cell: Cell) -> tuple[float | None, str]:
    """(value, "") or (None, why): a hook that raises leaves the timing record intact and says so."""
    from archbench.bench.measure.hooks import HookContext

    def predict(inputs: Any) -> list[np.ndarray]:
        return rt.outputs(rt.run(rt.convert(tuple(np.asarray(x) for x in inputs))))

    ctx = HookContext(cell.source, cell.knob_dict, cell.runtime, cell.precision, cell.batch, cell.device,
                      model.specs[0].with_batch(cell.batch), model.family, list(getattr(rt, "input_names", [])))
    try:
        return float(hook(predict, ctx)), ""
    except USER_CODE_ERRORS as e:  # sys.exit() in a hook is reported on the record, not obeyed
        print(traceback.format_exc(), file=sys.stderr)
        return None, f"metric hook failed: {one_line(e)}"


def run_job(job: Job, emit: Emitter) -> None:
    if job.kind == "artifacts":
        from archbench.bench.measure.artifacts import build
        from archbench.bench.measure.variants import build_variants

        if job.head.mode == "generate":  # the decode-step graph instead of the forward (measure.decode)
            from archbench.bench.measure.decode import build_artifacts

            if not build_artifacts(job, emit):
                return
        else:
            build(job, emit)
        build_variants(job, Path(job.workdir))
    elif job.head.mode in ("train", "maxbatch-trial"):  # training steps and max-batch trials: modes.train
        from archbench.bench.modes.train import run_train_job

        run_train_job(job, emit)
    elif job.head.mode == "generate":  # prefill and decode steps: modes.generate
        from archbench.bench.modes.generate import run_generate_job

        run_generate_job(job, emit)
    elif job.head.scenario:  # serving scenarios (offline, server, concurrency): modes.serve
        from archbench.bench.modes.serve import run_serve_job

        run_serve_job(job, emit)
    else:
        measure_job(job, emit)


def main() -> None:
    """Jobs from stdin, one JSON line each, run in order until stdin closes; ``done`` after each. A worker started
    with ``PRELOAD_ENV`` (measure.dispatch.Pool) first imports and sizes that runtime and says ``ready``, so its
    start-up is over before the round it serves times anything."""
    import gc

    from archbench.bench.measure.protocol import PRELOAD_ENV

    # Keep the protocol on the original stdout; send everything else (prints, C-level output) to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    emit = Emitter(proto)
    if os.environ.get(PRELOAD_ENV):
        from archbench.bench.measure.runtimes import get_runtime

        runtime, device, threads = os.environ.pop(PRELOAD_ENV).split(",")
        get_runtime(runtime)(int(threads), device)  # raises (the pool then runs its jobs one worker each)
        emit("ready")
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        job = Job.from_json(line)
        if job.log:  # this job's output goes to its own log
            fd = os.open(job.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, 2)
            os.dup2(fd, 1)
            os.close(fd)
        run_job(job, emit)
        gc.collect()  # before "done": the next job (in another worker, maybe) must not time this one's clean-up
        emit("done")

