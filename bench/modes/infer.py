"""Mode ``infer``: one forward per call, per batch size, on every runtime and precision (the main job).

A job is one group of cells sharing source, runtime, precision and device: the model is loaded and the runtime
prepared once (measure.prepare), then each batch size is timed by measure.harness's loop. Repetition 0 (a fresh
process per group) also measures peak memory, the cold first call, fidelity against the fp32 PyTorch model and the
task metric; later repetitions only time. The end-of-run table is report.tables'.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from archbench.bench.cell import Cell, Job
from archbench.bench.measure.prepare import (
    finish,
    memory_pass,
    metric_hook,
    prepare,
    start_record,
    task_metric,
)
from archbench.bench.measure.protocol import Emitter, one_line, prepare_failed
from archbench.bench.modes import ModeBase
from archbench.bench.record import Record


class Infer(ModeBase):
    name: ClassVar[str] = "infer"
    cell_modes: ClassVar[tuple[str, ...]] = ("infer",)

    def run_job(self, job: Job, emit: Emitter) -> None:
        """Load, prepare once, then time each batch size."""
        from archbench.bench.measure.runtimes import UnsupportedCell

        try:
            p = prepare(job)
            hook = metric_hook(job.head.options.metric_hook)
        except Exception as e:
            prepare_failed(e, (UnsupportedCell,), job.cells, job.run_id, emit)
            return
        for cell in job.cells:
            emit("start", batch=cell.batch)
            emit.record(measure_cell(cell, p.runtime, p.model, job, p.rss_imports_mib, hook))

    def summary(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        from tabulate import tabulate

        from archbench.bench.report.tables import TABLE_COLS, table_rows

        return tabulate(table_rows(self.own(records)), headers=TABLE_COLS, tablefmt="simple",
                        disable_numparse=True).splitlines()


def measure_cell(cell: Cell, rt: Any, model: Any, job: Job, rss_imports: float, hook: Any = None) -> Record:
    """One cell on a prepared runtime: timing, memory pass, fidelity, task metric. Never raises."""
    from archbench.bench.analyze.stats import fill_latency
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
        fill_latency(rec, timing.samples_ms, first_ms=timing.first_ms, warmup_iters=timing.warmup_iters,
                     measure_s=timing.measure_s, other_cpu_pct=other_cpu_pct(before, cpu_snapshot()),
                     flops_per_call=rec.flops)  # achieved GFLOP/s = FLOPs per forward / p50
        rec.repetitions, rec.rep_rounds = 1, [job.repetition]
        if job.repetition > 0:  # later repetitions only time: memory and fidelity do not vary between processes
            return finish(rec, rt)
        memory_pass(rec, rt, sets, cuda)
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
            rec.task_metric, why = task_metric(hook, rt, model, cell)
            if why:
                rec.warning = "; ".join([rec.warning, why]).strip("; ")
    except Exception as e:
        print(traceback.format_exc(), file=sys.stderr)
        rec.status, rec.error = "failed", one_line(e)
    return finish(rec, rt)
