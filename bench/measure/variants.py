"""Reduced-precision (and runtime-format) variants of the export: built once in the artifacts worker, loaded by
the measuring workers. A runtime class with a ``build(model, precision, workdir, quant) -> dict`` classmethod
makes its file there; the outcome is kept in ``variant_<runtime>_<precision>.json`` beside it: the path, the files
that make up its size, how it was made (``quant_method``, notes), or why it was skipped or failed.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archbench.bench.cell import Cell, Job
from archbench.bench.measure.files import onnx_files, read_json, write_json
from archbench.bench.measure.model import Exported


@dataclass(frozen=True)
class Variant:
    """The file a runtime loads for one precision, and how it was made (``build`` of the runtime's class)."""

    path: Path
    notes: list[str]
    quant_method: str
    size_bytes: int


def variant_path(workdir: Path, runtime: str, precision: str) -> Path:
    return workdir / f"variant_{runtime}_{precision}.json"


def quant_config(cell: Cell) -> Any:
    from archbench.bench.measure.quantize import QuantConfig

    o = cell.options
    return QuantConfig(**{k: getattr(o, k) for k in ("calib_batches", "calib_batch_size", "calibration")
                          if getattr(o, k) is not None})


def build_variants(job: Job, workdir: Path) -> None:
    """Every (runtime, precision) file the job's torch-free cells will load, each recorded in its variant json:
    a failure or an unsupported precision is written there too, for the measuring worker to report."""
    from archbench.bench.measure.protocol import one_line
    from archbench.bench.measure.runtimes import UnsupportedCell, get_runtime

    model = Exported(job.head, workdir)
    done: set[tuple[str, str]] = set()
    for c in job.cells:
        if (c.runtime, c.precision) in done:
            continue
        done.add((c.runtime, c.precision))
        try:
            cls = get_runtime(c.runtime)
        except (ValueError, ImportError):
            continue
        if cls.needs_torch or not hasattr(cls, "build") or variant_path(workdir, c.runtime, c.precision).exists():
            continue
        print(f"archbench: building the {c.runtime} {c.precision} variant", file=sys.stderr, flush=True)  # the log
        try:
            got = cls.build(model, c.precision, workdir, quant_config(c))
        except UnsupportedCell as e:
            got = {"skip": str(e)}
        except Exception as e:
            print(traceback.format_exc(), file=sys.stderr)
            got = {"error": f"{c.precision} variant: {one_line(e)}"}
        write_json(variant_path(workdir, c.runtime, c.precision), got)


def variant(cls: Any, model: Any, precision: str, workdir: Path, quant: Any = None) -> Variant:
    """The variant the artifacts worker built for ``cls`` at ``precision`` (built here when it is missing, e.g.
    in the pytest fixture's process); UnsupportedCell / RuntimeError when building it was skipped or failed."""
    from archbench.bench.measure.runtimes import UnsupportedCell

    path = variant_path(workdir, cls.name, precision)
    got = read_json(path)
    if not got:
        got = cls.build(model, precision, workdir, quant)
        write_json(path, got)
    if got.get("skip"):
        raise UnsupportedCell(got["skip"])
    if got.get("error"):
        raise RuntimeError(got["error"])
    files = [Path(f) for f in got.get("files") or [got["path"]]]
    if "files" not in got and str(got["path"]).endswith(".onnx"):
        files = onnx_files(Path(got["path"]))
        got["files"] = [str(f) for f in files]
        write_json(path, got)
    notes = list(got.get("notes") or [])
    if getattr(model, "exporter", ""):
        how, _, why = model.exporter.partition(";")
        notes.insert(0, f"exported with the {how} exporter" + (f" ({why.strip()})" if why else ""))
    return Variant(Path(got["path"]), notes, got.get("quant_method", ""),
                   sum(f.stat().st_size for f in files if f.exists()))
