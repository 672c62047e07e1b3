"""The run: a RunSpec becomes cells, cells are grouped into jobs, jobs run in worker processes, records land on
disk as they come.

    spec = RunSpec(models=["resnet_s"], runtimes=["torch", "onnxruntime"], batches=[1, 8], out=Path("runs/x"))
    records = run(spec)

Per model, first the artifacts worker (measure.artifacts) when any of its runtimes needs an artefact (the ONNX
export for ONNX Runtime and OpenVINO, the input specs of an .onnx file); then one measuring job per (model, runtime,
precision): a worker process that loads the model once and measures every batch size (measure.dispatch). Every
record is appended to ``records.jsonl`` and fsync'ed the moment it arrives; ``resume`` skips cells that have an ok
record there already.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from archbench.bench.cell import QUICK, Cell, Job, Options, StopRule, canonical_knobs
from archbench.bench.measure import dispatch
from archbench.bench.record import Record, append_jsonl, read_records

DEFAULT_TIMEOUT_S = 300.0


@dataclass
class RunSpec:
    models: list[str]  # sources: zoo names, pkg.module:factory, path/to/model.onnx
    out: Path
    runtimes: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batches: list[int] = field(default_factory=lambda: [1])
    device: str = "cpu"
    threads: int = 0  # 0: os.cpu_count()
    knobs: dict[str, Any] = field(default_factory=dict)
    options: Options = field(default_factory=Options)  # how cells are measured, not what they are
    mode: str = "infer"  # infer | train | maxbatch-trial: part of a cell's identity
    rule: StopRule = QUICK
    timeout_s: float = DEFAULT_TIMEOUT_S  # per cell, from the moment the worker starts it (or starts up)
    resume: bool = False

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1

    def cell(self, model: str, runtime: str, precision: str, batch: int, mode: str | None = None) -> Cell:
        return Cell(source=model, runtime=runtime, precision=precision, batch=batch, device=self.device,
                    threads=self.resolved_threads(), knobs=canonical_knobs(self.knobs), mode=mode or self.mode,
                    options=self.options)

    def cells(self) -> Iterator[Cell]:
        """Every cell, in the order given: models, then runtimes, then precisions, then batches."""
        for m in self.models:
            for rt in self.runtimes:
                for p in self.precisions:
                    for b in self.batches:
                        yield self.cell(m, rt, p, b)

    def workdir(self, model: str) -> Path:
        """The model's artefact folder, shared by its runtimes and precisions (measure.artifacts)."""
        knobs = "" if not self.knobs else "_" + dispatch.slug(json.dumps(self.knobs, sort_keys=True))
        return self.out / "artifacts" / (dispatch.slug(model) + knobs)


def plan(spec: RunSpec, done: set[tuple] | None = None) -> list[tuple[Cell, ...]]:
    """Groups of cells still to run (one measuring job each), in the order given."""
    done = done or set()
    groups: dict[tuple, list[Cell]] = {}
    for c in spec.cells():
        if c.key() not in done:
            groups.setdefault((c.source, c.runtime, c.precision), []).append(c)
    return [tuple(g) for g in groups.values()]


def done_cells(path: Path) -> set[tuple]:
    """Keys of cells with an ok record in an existing records.jsonl (what --resume skips; failed cells run again)."""
    if not path.exists():
        return set()
    return {r.key() for r in read_records(path) if r.ok}


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def artifact_kind(runtimes: list[str], source: str) -> str | None:
    """What the artifacts worker must build for ``source`` measured on ``runtimes``; None: no artifacts worker."""
    from archbench.bench.measure.runtimes import get_runtime
    from archbench.bench.measure.sources import is_onnx_ref

    kinds = set()
    for name in runtimes:
        try:
            kinds.add(get_runtime(name).artifact)
        except (ValueError, ImportError):
            continue
    if "onnx" in kinds:
        return "onnx"
    return "none" if is_onnx_ref(source) and kinds else None


def run(spec: RunSpec, progress: Callable[[Record, int, int], None] | None = None) -> list[Record]:
    """Run every cell of ``spec`` not already done; return the records of this invocation."""
    spec.out.mkdir(parents=True, exist_ok=True)
    jsonl = spec.out / "records.jsonl"
    if jsonl.exists() and not spec.resume:
        raise FileExistsError(f"{jsonl} exists; pass --resume to continue that run or choose another --out")
    groups = plan(spec, done_cells(jsonl) if spec.resume else set())
    total = sum(len(g) for g in groups)
    run_id = new_run_id()
    records: list[Record] = []

    def on_record(rec: Record) -> None:
        append_jsonl(jsonl, rec)
        records.append(rec)
        if progress:
            progress(rec, len(records), total)

    built: set[str] = set()
    for g in groups:
        head = g[0]
        workdir = str(spec.workdir(head.source))
        if head.source not in built and spec.mode == "infer":
            built.add(head.source)
            kind = artifact_kind([c.runtime for gg in groups for c in gg if c.source == head.source], head.source)
            if kind is not None:
                cells = tuple(c for gg in groups for c in gg if c.source == head.source)
                dispatch.build_artifacts(Job(cells=cells, workdir=workdir, run_id=run_id,
                                             rule=spec.rule, kind="artifacts", artifact=kind),
                                         spec.out, spec.timeout_s)
        dispatch.run_job(Job(cells=g, workdir=workdir, run_id=run_id, rule=spec.rule), spec.out, spec.timeout_s,
                         on_record)
    return records
