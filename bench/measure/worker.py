"""The measuring process: ``python -m archbench.bench.measure.worker`` reads one job (JSON) on stdin and writes one JSON line per
event on its original stdout: ``{"event": "start", "batch": B}`` when a cell begins and
``{"event": "record", "record": {...}}`` when it ends. Anything the model or a library prints goes to stderr
(the parent keeps it in a log), so it cannot corrupt the protocol.

A job is one group of cells sharing model, runtime, precision and device: the model is built and the runtime
prepared once, then each batch size is measured. A cell that raises becomes a failed record and the next goes on;
a crash, OOM kill or timeout is turned into a failed record by the parent (archbench.bench.measure.engine).

A job with ``"mode": "export"`` only exports the model to ONNX into its artefact folder (the cache
archbench.bench.measure.runtimes.export_onnx reuses) and emits ``{"event": "exported", ...}``: archbench.bench.measure.engine runs one before a model's
ONNX Runtime cells, so the exporter's libraries (dynamo, onnxscript: ~200 MiB resident) never live in a measuring
process and an ONNX Runtime cell's peak RSS does not depend on whether it was the one that exported.

``job["options"]`` (all optional): ``fidelity_samples`` (compare at least this many samples with the fp32 PyTorch
model, default 64), ``calibration`` / ``calib_batches`` / ``calib_batch_size`` (int8-static, archbench.bench.measure.quantize),
``metric_hook`` (pkg.mod:fn, archbench.bench.measure.hooks).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


class _Emitter:
    def __init__(self, fh: Any) -> None:
        self.fh = fh

    def __call__(self, event: str, **payload: Any) -> None:
        self.fh.write(json.dumps({"event": event, **payload}) + "\n")
        self.fh.flush()


def prepare_failed(e: Exception, unsupported: type[Exception], batches: list[int], new_record: Callable[..., Any],
                   emit: _Emitter) -> None:
    """Building the model or preparing the runtime raised: every cell of the group gets a record saying so,
    ``skipped`` when it is something the runtime cannot do (``unsupported``), else ``failed`` (traceback to the log)."""
    if isinstance(e, unsupported):
        status, error = "skipped", str(e)
    else:
        print(traceback.format_exc(), file=sys.stderr)
        status, error = "failed", f"prepare: {_one_line(e)}"
    for b in batches:
        emit("record", record=asdict(new_record(b, status=status, error=error)))


def export_job(job: dict[str, Any], emit: _Emitter) -> None:
    """Build the model as a measuring worker would (same seed) and export it to the shared ONNX cache."""
    import torch

    from archbench.bench.measure.runtimes import export_onnx
    from archbench.bench.measure.sources import parse_dtype, resolve

    torch.set_num_threads(int(job["threads"]) or 1)
    t = time.perf_counter()
    torch.manual_seed(0)  # as run_job: the cached export must hold the weights every measuring worker builds
    shape = tuple(job["input_shape"]) if job.get("input_shape") else None
    dtype = parse_dtype(job["dtype"]) if job.get("dtype") else None
    src = resolve(job["model"], job.get("knobs") or {}, shape, dtype, job.get("weights"))
    notes: list[str] = []
    path = export_onnx(src, Path(job["workdir"]), notes)
    emit("exported", path=str(path), seconds=round(time.perf_counter() - t, 3), notes=notes)


def run_job(job: dict[str, Any], emit: _Emitter) -> None:
    if job.get("mode") == "export":
        export_job(job, emit)
        return
    if job.get("mode") in ("train", "maxbatch-trial"):  # training steps and max-batch trials: archbench.bench.measure.train
        from archbench.bench.measure.train import run_train_job

        run_train_job(job, emit)
        return
    import torch

    from archbench.bench.env import environment
    from archbench.bench.measure.harness import (
        QUICK,
        StopRule,
        cpu_snapshot,
        measure,
        other_cpu_pct,
        peak_rss_mib,
        reset_peak_rss,
    )
    from archbench.bench.measure.runtimes import UnsupportedCell, get_runtime
    from archbench.bench.measure.sources import parse_dtype, resolve
    from archbench.bench.record import Record

    threads = int(job["threads"])
    runtime_name = job["runtime"]
    # One pool at a time: torch gets the threads unless ONNX Runtime measures here (then torch stays at 1).
    torch.set_num_threads(1 if runtime_name == "onnxruntime" else threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    rule = StopRule(**job["rule"]) if job.get("rule") else QUICK
    workdir = Path(job["workdir"])
    env = environment()
    base = dict(
        model=job["model"], runtime=runtime_name, precision=job["precision"], device=job["device"],
        threads=threads, knobs=json.dumps(job.get("knobs") or {}, sort_keys=True), run_id=job.get("run_id", ""),
        **env,
    )

    def new_record(batch: int, **kw: Any) -> Record:
        ts = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return Record(batch=batch, timestamp=ts, **base, **kw)

    batches: list[int] = list(job["batches"])
    options: dict[str, Any] = job.get("options") or {}
    fid_samples = int(options.get("fidelity_samples", DEFAULT_FIDELITY_SAMPLES))
    try:
        t = time.perf_counter()
        shape = tuple(job["input_shape"]) if job.get("input_shape") else None
        dtype = parse_dtype(job["dtype"]) if job.get("dtype") else None
        # Zoo models initialise at random: seed, so every worker of a run builds the same weights. The ONNX export
        # is cached per model and shared by its precisions' workers, and fidelity compares against this module.
        torch.manual_seed(0)
        src = resolve(job["model"], job.get("knobs") or {}, shape, dtype, job.get("weights"))
        build_ms = (time.perf_counter() - t) * 1e3
        if src.kind == "onnx" and src.input_spec is None:
            src.input_spec = _onnx_input_spec(src.onnx_path)
        counts = _static_counts(src, workdir)
        rt = get_runtime(runtime_name)()
        # The fp32 PyTorch model is the reference for fidelity. torch at fp32 *is* the reference; a cast
        # (fp16/bf16) happens in place in prepare, so keep an fp32 copy for that case.
        ref_model = None
        if src.module is not None and not (runtime_name == "torch" and job["precision"] == "fp32"):
            ref_model = copy.deepcopy(src.module) if job["precision"] != "fp32" else src.module
        rt.prepare(src, job["precision"], job["device"], threads, workdir, quant=_quant_config(options))
        hook = _metric_hook(options)
        load_ms = rt.load_ms + (build_ms if runtime_name != "onnxruntime" else 0.0)
    except Exception as e:
        prepare_failed(e, UnsupportedCell, batches, new_record, emit)
        return

    cuda = job["device"] == "cuda"
    for b in batches:
        emit("start", batch=b)
        spec = src.input_spec.with_batch(b)
        rec = new_record(
            b, family=src.family, input_shape="x".join(map(str, spec.shape)),
            input_dtype=str(spec.dtype).removeprefix("torch."), params=counts.get("params"),
            size_mib=rt.size_bytes / 2**20, load_ms=load_ms, quant_method=getattr(rt, "quant_method", ""),
        )
        if counts.get("macs") is not None:
            # MACs of a forward scale with the batch (no zoo op mixes samples); counted once at batch 1.
            rec.macs = counts["macs"] * b
            rec.flops = 2 * rec.macs
        try:
            sets = [rt.convert(src.example_inputs(batch=b, seed=s)) for s in range(job.get("input_sets", 4))]
            before = cpu_snapshot()
            timing = measure(rt.run, sets, rule, cuda=cuda)
            rec.fill_latency(timing.samples_ms, first_ms=timing.first_ms, warmup_iters=timing.warmup_iters,
                             measure_s=timing.measure_s, other_cpu_pct=other_cpu_pct(before, cpu_snapshot()),
                             flops_per_call=rec.flops)  # achieved GFLOP/s = FLOPs per forward / p50
            # Memory pass, separate from timing: peak RSS over a few calls after resetting the high-water mark.
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            reset_peak_rss()
            for i in range(3):
                out = rt.run(sets[i % len(sets)])
            if cuda:
                torch.cuda.synchronize()
                rec.cuda_max_allocated_mib = torch.cuda.max_memory_allocated() / 2**20
                rec.cuda_max_reserved_mib = torch.cuda.max_memory_reserved() / 2**20
            rec.peak_rss_mib = peak_rss_mib()
            del out
            if ref_model is not None:
                from archbench.bench.measure.fidelity import compare

                # Several input sets: the timing sets (seeds 0..k-1) plus more until --fidelity-samples samples.
                seeds = fidelity_seeds(b, len(sets), fid_samples)
                refs = [_reference(ref_model, src, b, s) for s in seeds]
                gots = [rt.outputs(rt.run(sets[s] if s < len(sets) else rt.convert(src.example_inputs(b, s))))
                        for s in seeds]
                fid = compare(refs, gots)
                rec.max_abs_err, rec.cosine, rec.sqnr_db = fid.max_abs_err, fid.cosine, fid.sqnr_db
                rec.top1_agree, rec.top1_rows, rec.fidelity_sets = fid.top1_agree, fid.top1_rows, fid.sets
            if hook is not None:
                rec.task_metric, why = _task_metric(hook, rt, src, job, b)
                if why:
                    rec.warning = "; ".join([rec.warning, why]).strip("; ")
        except Exception as e:
            print(traceback.format_exc(), file=sys.stderr)
            rec.status, rec.error = "failed", _one_line(e)
            if cuda and "out of memory" in str(e).lower():
                torch.cuda.empty_cache()
        if rt.notes:
            rec.warning = "; ".join([*rt.notes, rec.warning]).strip("; ")
        emit("record", record=asdict(rec))


DEFAULT_FIDELITY_SAMPLES = 64


def fidelity_seeds(batch: int, input_sets: int, samples: int) -> list[int]:
    """Seeds of the input sets fidelity compares: the timing sets 0..k-1, plus more until ``samples`` samples."""
    return list(range(max(input_sets, math.ceil(samples / batch) if samples > 0 else 0, 1)))


def _reference(model: Any, src: Any, batch: int, seed: int = 0) -> list[np.ndarray]:
    """fp32 PyTorch outputs on the input set ``seed`` (the runtime gets the same one)."""
    import torch

    from archbench.bench.measure.runtimes import _flatten

    with torch.inference_mode():
        out = model(*src.example_inputs(batch=batch, seed=seed))
    return [t.float().cpu().numpy() for t in _flatten(out)]


def _quant_config(options: dict[str, Any]) -> Any:
    from archbench.bench.measure.quantize import QuantConfig

    keys = ("calib_batches", "calib_batch_size", "calibration", "per_channel", "reduce_range")
    return QuantConfig(**{k: options[k] for k in keys if options.get(k) is not None})


def _metric_hook(options: dict[str, Any]) -> Any:
    if not options.get("metric_hook"):
        return None
    from archbench.bench.measure.hooks import load_hook

    return load_hook(options["metric_hook"], "--metric-hook")


def _task_metric(hook: Any, rt: Any, src: Any, job: dict[str, Any], batch: int) -> tuple[float | None, str]:
    """(value, "") or (None, why): a hook that raises leaves the timing record intact and says so."""
    from archbench.bench.measure.hooks import HookContext

    def predict(inputs: Any) -> list[np.ndarray]:
        return rt.outputs(rt.run(rt.convert(tuple(inputs))))

    ctx = HookContext(job["model"], dict(job.get("knobs") or {}), job["runtime"], job["precision"], batch,
                      job["device"], src.input_spec.with_batch(batch), src.family, list(getattr(rt, "input_names", [])))
    try:
        return float(hook(predict, ctx)), ""
    except Exception as e:
        print(traceback.format_exc(), file=sys.stderr)
        return None, f"metric hook failed: {_one_line(e)}"


def _static_counts(src: Any, workdir: Path) -> dict[str, Any]:
    """Params and batch-1 MACs, cached per model in the run's artefact folder (shared by its runtimes)."""
    path = workdir / "counts.json"
    if path.exists():
        return json.loads(path.read_text())
    workdir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, Any] = {}
    if src.module is not None:
        from archbench.bench.measure.profile import count_macs, count_params

        counts["params"] = count_params(src.module)[0]
        try:
            counts["macs"] = count_macs(src.module, src.example_inputs(batch=1))
        except Exception as e:  # a model fvcore cannot trace still gets timed
            print(f"MAC count failed: {_one_line(e)}", file=sys.stderr)
    else:
        from archbench.bench.measure.onnx_profile import profile_onnx

        spec = src.input_spec
        p = profile_onnx(src.onnx_path, spec.with_batch(1).shape if spec else None)
        counts = {"params": p.params, "macs": p.macs}
    path.write_text(json.dumps(counts))
    return counts


def _onnx_input_spec(path: Path) -> Any:
    """An InputSpec from an ONNX graph's single input (symbolic dims -> 1)."""
    import onnx

    from archbench.bench.errors import UsageError
    from archbench.models import InputSpec

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {t.name for t in g.initializer}
    ins = [i for i in g.input if i.name not in inits]
    if len(ins) != 1:
        raise UsageError(f"{path}: {len(ins)} graph inputs; archbench measures single-input graphs")
    tt = ins[0].type.tensor_type
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tt.shape.dim)
    np_dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
    import torch

    dtype = {np.dtype("float32"): torch.float32, np.dtype("float16"): torch.float16,
             np.dtype("int64"): torch.int64, np.dtype("int32"): torch.int32}.get(np.dtype(np_dtype), torch.float32)
    return InputSpec(shape, dtype, None if dtype.is_floating_point else 2)


def main() -> None:
    # Keep the protocol on the original stdout; send everything else (prints, C-level output) to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    job = json.loads(sys.stdin.read())
    if job.get("cwd"):
        sys.path.insert(0, job["cwd"])  # user factories import like they did in the parent's directory
    run_job(job, _Emitter(proto))


if __name__ == "__main__":
    main()
