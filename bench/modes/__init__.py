"""Run modes: one file each, behind one protocol, chosen by name from ``MODES`` — as runtimes are.

    mode = get_mode("generate")          # imports only that mode's file
    mode = mode_of(cell.mode)            # the mode that owns a Cell.mode value ("server" -> serve)
    mode.run_job(job, emit)              # in the measuring worker: every cell of the job gets exactly one record
    mode.build_artifacts(job, emit)      # in the artifacts worker (default: measure.artifacts.build)
    mode.summary(records)                # the lines `archbench run` prints for its records
    mode.report_md(records)              # its section of report.md; mode.plots(records, out): its plots

What a mode class declares, and so owns — nothing outside its file special-cases it:

- ``name``: the ``--mode`` value (serve: the ``--scenario`` cells); ``cell_modes``: the ``Cell.mode`` values whose
  jobs it runs (train also owns its max-batch trials, serve the offline / server / concurrency scenarios);
- ``artifacts``: whether its models go through the artifacts worker before measuring (export, input specs,
  reference outputs); training builds its model in the measuring worker;
- ``run_job``: the worker's job, on the shared path: measure.prepare.prepare, then measure.harness's loop (or
  what the mode times with it), a record per cell, never raising;
- its analysis (how repetitions combine, its metrics) lives in analyze/ beside the others, so that reports and
  comparisons can read it without measuring anything; ``summary``, ``report_md`` and ``plots`` render it.

Adding a mode is one file defining such a class plus one line in ``MODES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from archbench.bench.cell import Job
from archbench.bench.record import Record

# name -> "module:Class", imported on first use.
MODES: dict[str, str] = {
    "infer": "archbench.bench.modes.infer:Infer",
    "train": "archbench.bench.modes.train:Train",
    "generate": "archbench.bench.modes.generate:Generate",
    "serve": "archbench.bench.modes.serve:Serve",
}

# Cell.mode values owned by a mode of another name (read without importing the mode's file).
CELL_MODES: dict[str, str] = {"maxbatch-trial": "train", "offline": "serve", "server": "serve",
                              "concurrency": "serve"}


class ModeBase:
    """Defaults shared by the mode files (a convenience, not part of the protocol)."""

    name: ClassVar[str] = ""
    cell_modes: ClassVar[tuple[str, ...]] = ()
    artifacts: ClassVar[bool] = True

    def run_job(self, job: Job, emit: Any) -> None:
        raise NotImplementedError

    def build_artifacts(self, job: Job, emit: Any) -> None:
        """The artifacts worker's job for this mode's cells: the exported graph, input specs, references, and the
        reduced-precision variants (measure.artifacts, measure.variants)."""
        from archbench.bench.measure.artifacts import build
        from archbench.bench.measure.variants import build_variants

        build(job, emit)
        build_variants(job, Path(job.workdir))

    def own(self, records: Sequence[Record]) -> list[Record]:
        """The records of this mode's cells."""
        return [r for r in records if (r.mode or "infer") in self.cell_modes]

    def summary(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        """Lines `archbench run` prints for this mode's records (its table); ``records`` may hold others."""
        return []

    def report_md(self, records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
        """This mode's section of report.md (markdown lines; empty: none)."""
        return []

    def plots(self, records: Sequence[Record], out: Path) -> list[Path]:
        """This mode's plots, written under ``out``."""
        return []

    def peaks(self, records: Sequence[Record], known: Sequence[Any]) -> Any:
        """A machine peak (machine.peaks.Peaks) its report reads and ``known`` lacks, measured now; None: none."""
        return None


def get_mode(name: str) -> Any:
    """The mode registered as ``name`` (an instance); ValueError for an unknown name."""
    try:
        ref = MODES[name]
    except KeyError:
        raise ValueError(f"unknown mode {name!r}; known: {', '.join(MODES)}") from None
    mod, _, cls = ref.partition(":")
    return getattr(importlib.import_module(mod), cls)()


def mode_of(cell_mode: str) -> Any:
    """The mode that runs cells of ``Cell.mode`` == ``cell_mode``."""
    return get_mode(CELL_MODES.get(cell_mode, cell_mode))


def mode_names() -> list[str]:
    return list(MODES)


def records_by_mode(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records grouped by the mode that owns them, in ``MODES`` order."""
    out: dict[str, list[Record]] = {m: [] for m in MODES}
    for r in records:
        out.setdefault(CELL_MODES.get(r.mode or "infer", r.mode or "infer"), []).append(r)
    return {m: rs for m, rs in out.items() if rs}


# The hooks below call each mode that owns some of ``records`` with all of them: a mode renders its own records
# and may read the others as context (serving's planner reads the single-stream inference records).


def summaries(records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
    """Every mode's end-of-run lines, in ``MODES`` order."""
    return [line for m in records_by_mode(records) for line in get_mode(m).summary(records, peaks)]


def report_sections(records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
    """Every mode's report.md section (infer's tables are the report's own)."""
    return [line for m in records_by_mode(records) for line in get_mode(m).report_md(records, peaks)]


def plots(records: Sequence[Record], out: Path) -> list[Path]:
    """Every mode's plots."""
    return [p for m in records_by_mode(records) for p in get_mode(m).plots(records, out)]


def peaks(records: Sequence[Record], known: Sequence[Any]) -> list[Any]:
    """The machine peaks the modes' reports need and ``known`` lacks, measured now."""
    new = [get_mode(m).peaks(records, known) for m in records_by_mode(records)]
    return [p for p in new if p is not None]
