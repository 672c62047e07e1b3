"""The one preparing path of every measuring job: the runtime imported and sized, the model loaded (built, or read
from the artefact folder), the runtime prepared on it; then a cell's record started with everything known before
timing, its memory pass, fidelity and task metric. Inference, serving and generation workers (archbench.bench.modes)
and the pytest fixture (archbench.bench.plugin) all start here.

What a measuring worker imports is what a deployment of its runtime would: a runtime with ``needs_torch = False``
(ONNX Runtime, OpenVINO) gets its model from the artefact folder and never imports torch; a record says so in its
``warning`` if something did (a user's hook, say). Memory: ``rss_imports_mib`` is read right after the runtime's
imports, before the model is loaded; ``peak_rss_mib`` over a separate inference pass; ``rss_model_mib`` the
difference (the model and inference).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from archbench.bench.cell import Cell, Job
from archbench.bench.errors import USER_CODE_ERRORS
from archbench.bench.measure.protocol import new_record, one_line
from archbench.bench.record import Record

Loader = Callable[[Cell, Path, tuple[Cell, ...]], Any]  # (head cell, artefact folder, cells) -> model handle


@dataclass
class Prepared:
    runtimes: list[Any]  # one prepared runtime instance per executor (one, but for serving)
    model: Any  # measure.model.TorchModel or measure.model.Exported (or a mode's own, see ``prepare(load=)``)
    rss_imports_mib: float  # resident memory right after the runtime's imports, before the model

    @property
    def runtime(self) -> Any:
        return self.runtimes[0]


def prepare(job: Job, cell: Cell | None = None, *, instances: int = 1, threads: int | None = None,
            load: Loader | None = None, references: bool = True) -> Prepared:
    """Prepare ``cell`` (default: the job's first; the job's cells share source, runtime and precision).

    ``instances`` runtime instances of ``threads`` intra-op threads each (default: the cell's); ``load`` loads the
    model instead of the runtime's default (the PyTorch module for runtimes that need torch, else the artefact
    folder's exported graph); ``references``: keep the fp32 reference outputs for fidelity. Raises UnsupportedCell
    (a skipped cell) or anything else (a failed one)."""
    from archbench.bench.measure.harness import current_rss_mib
    from archbench.bench.measure.runtimes import get_runtime
    from archbench.bench.measure.variants import quant_config

    head = cell or job.head
    cells = (cell,) if cell is not None else job.cells
    workdir = Path(job.workdir)
    cls = get_runtime(head.runtime)
    cls.check(head.precision, head.device)
    rts = [cls(threads or head.threads, head.device) for _ in range(instances)]  # imports, sizes thread pools
    rss_imports = current_rss_mib()
    if load is not None:
        model = load(head, workdir, cells)
    elif cls.needs_torch:
        from archbench.bench.measure.model import TorchModel

        model = TorchModel(head, workdir, cells, references=references)
    else:
        from archbench.bench.measure.model import Exported

        model = Exported(head, workdir)
    for rt in rts:
        rt.prepare(model, head.precision, workdir, quant_config(head))
    model.release()
    return Prepared(rts, model, rss_imports)


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


def finish(rec: Record, rt: Any) -> Record:
    """The runtime's notes on the record; a warning when torch got into a torch-free worker."""
    if rt.notes:
        rec.warning = "; ".join([*rt.notes, rec.warning]).strip("; ")
    if not type(rt).needs_torch and sys.modules.get("torch") is not None:  # (None: made unimportable)
        rec.warning = "; ".join([rec.warning, "torch was imported into this torch-free worker (by a hook?): "
                                 "peak_rss_mib includes it"]).strip("; ")
    return rec


def memory_pass(rec: Record, rt: Any, sets: list[Any], cuda: bool) -> None:
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


def metric_hook(ref: str | None) -> Any:
    if not ref:
        return None
    from archbench.bench.measure.hooks import load_hook

    return load_hook(ref, "--metric-hook")


def task_metric(hook: Any, rt: Any, model: Any, cell: Cell) -> tuple[float | None, str]:
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


