"""Records from several runs and machines, read into one list that reports and ``compare`` can use.

    records = load_records(["results/laptop", "results/h100/records.jsonl"])
    for m in machines(records): print(m.label, m.cpu_model, m.gpu_name)
    headers, rows = cross_machine_rows(records, "latency_p50_ms")

A *machine* here is one ``archbench.bench.env.fingerprint`` (CPU model and count, GPU, torch and onnxruntime versions,
threads): records with the same fingerprint were measured under conditions whose timings compare directly.
Its label is the hostname, with the fields that tell same-named machines apart appended when needed.

Records come back as archbench.bench.record.Record objects (older schemas migrated on read), but runs written with
different ``schema_version`` are never mixed: a field may have changed meaning between versions (bench/record.py
bumps the version when that happens), so ``load_records`` raises a UsageError instead. ``load_runs`` keeps the
file each record came from (``RunFile``), for the run folders' peaks.json and verdicts.json.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archbench.bench.env import fingerprint
from archbench.bench.errors import UsageError
from archbench.bench.record import SCHEMA_VERSION, Record, SchemaError, read_records


def resolve_paths(paths: Iterable[str | Path]) -> list[Path]:
    """JSONL files named by ``paths``: a file as given; a folder -> its records.jsonl, else its *.jsonl files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = [p / "records.jsonl"] if (p / "records.jsonl").is_file() else sorted(p.glob("*.jsonl"))
            if not found:
                raise UsageError(f"{p}: no records.jsonl or *.jsonl in this folder")
            out += found
        elif p.is_file():
            if p.suffix != ".jsonl":
                raise UsageError(f"{p}: expected a .jsonl records file (CSV has no raw samples) or a run folder")
            out.append(p)
        else:
            raise UsageError(f"no such file or folder: {p}")
    unique: dict[Path, Path] = {}  # a file named twice (a folder and its records.jsonl) is read once
    for p in out:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


@dataclass(frozen=True)
class RunFile:
    """The records of one JSONL file, in file order, and the schema versions they were written with (before
    archbench.bench.record migrated them to the current one)."""

    path: Path
    records: tuple[Record, ...]
    versions: frozenset[Any]


def read_run(path: Path) -> RunFile:
    """One records file as Records (Record.from_dict: older schemas migrated); UsageError for one it cannot read."""
    versions: set[int] = set()
    try:
        records = read_records(path, versions)  # bad lines: one warning each, naming file and line
    except SchemaError as e:
        raise UsageError(str(e)) from None
    return RunFile(path, tuple(records), frozenset(versions))


def check_schema(runs: Sequence[RunFile]) -> int:
    """The one schema_version ``runs`` were written with; UsageError when they mix versions or come from a newer
    archbench. (Migration brings a record up to date field by field, but a field may still mean something else in
    an old run, e.g. schema 1's ONNX Runtime peak RSS included torch: runs of different versions are not mixed.)"""
    by_version: dict[Any, set[str]] = defaultdict(set)
    for run in runs:
        for v in run.versions:
            by_version[v].add(str(run.path))
    if len(by_version) > 1:
        parts = "; ".join(f"v{v}: {', '.join(sorted(srcs)[:3])}{' ...' if len(srcs) > 3 else ''}"
                          for v, srcs in sorted(by_version.items(), key=lambda kv: str(kv[0])))
        raise UsageError(f"refusing to mix record schema versions ({parts}); re-measure the older runs with this "
                         "archbench, or compare each version on its own")
    version = next(iter(by_version), SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise UsageError(f"records have schema_version {version}, newer than this archbench understands "
                         f"({SCHEMA_VERSION}); upgrade archbench")
    if not isinstance(version, int) or version < 1:
        raise UsageError(f"records have schema_version {version!r}, which this archbench cannot read")
    return version


def machine_cell_key(r: Record) -> tuple:
    """(machine fingerprint, cell key): what identifies a record among several runs and machines."""
    return (fingerprint(r), r.key())


def dedupe(records: Iterable[Record]) -> list[Record]:
    """The last record of each (machine, cell), in first-seen order: a resumed run's retry replaces its failure,
    while the same cell measured on two machines stays twice."""
    out: dict[tuple, Record] = {}
    for r in records:
        out[machine_cell_key(r)] = r
    return list(out.values())


def read_runs(paths: Iterable[str | Path]) -> list[RunFile]:
    """Every records file of ``paths`` (files or run folders), read; not yet schema-checked (``check_schema``)."""
    return [read_run(f) for f in resolve_paths(paths)]


def load_runs(paths: Iterable[str | Path]) -> list[RunFile]:
    """Every records file of ``paths`` (files or run folders), read and schema-checked together."""
    runs = read_runs(paths)
    check_schema(runs)
    return runs


def merge_runs(runs: Sequence[RunFile]) -> list[Record]:
    """The records of ``runs``, de-duplicated per machine and cell; UsageError when there are none."""
    records = dedupe(r for run in runs for r in run.records)
    if not records:
        raise UsageError(f"no records in {', '.join(str(run.path) for run in runs)}")
    return records


def load_records(paths: Iterable[str | Path]) -> list[Record]:
    """Every record of ``paths`` (files or run folders), schema-checked and de-duplicated per machine and cell."""
    return merge_runs(load_runs(paths))


# ----------------------------------------------------------------------------------------------------- machines


@dataclass(frozen=True)
class Machine:
    key: str  # archbench.bench.env.fingerprint of its records
    label: str  # short and unique within one report: hostname, plus what tells same-named machines apart
    hostname: str
    cpu_model: str
    cpu_count: int
    gpu_name: str
    threads: int
    torch_version: str
    onnxruntime_version: str
    os: str
    run_ids: tuple[str, ...]
    n_records: int


# Fields that can tell two machines with the same hostname apart, in the order a label mentions them.
_DISTINGUISH = (("gpu_name", "{}"), ("cpu_model", "{}"), ("cpu_count", "{} CPUs"), ("threads", "{} threads"),
                ("torch_version", "torch {}"), ("onnxruntime_version", "ort {}"))


def machines(records: Sequence[Record]) -> list[Machine]:
    """One Machine per fingerprint, in first-seen order, with labels unique among them."""
    first: dict[str, Record] = {}
    runs: dict[str, list[str]] = defaultdict(list)
    count: dict[str, int] = defaultdict(int)
    for r in records:
        k = fingerprint(r)
        first.setdefault(k, r)
        count[k] += 1
        rid = r.run_id or ""
        if rid and rid not in runs[k]:
            runs[k].append(rid)
    labels = {k: r.hostname or "unknown-host" for k, r in first.items()}
    by_label: dict[str, list[str]] = defaultdict(list)
    for k, lab in labels.items():
        by_label[lab].append(k)
    for lab, keys in by_label.items():
        if len(keys) < 2:
            continue
        for k in keys:
            extra = [fmt.format(getattr(first[k], f)) for f, fmt in _DISTINGUISH
                     if len({str(getattr(first[j], f)) for j in keys}) > 1]
            labels[k] = f"{lab} ({', '.join(extra)})"
    return [
        Machine(key=k, label=labels[k], hostname=r.hostname or "", cpu_model=r.cpu_model or "",
                cpu_count=int(r.cpu_count or 0), gpu_name=r.gpu_name or "", threads=int(r.threads or 0),
                torch_version=r.torch_version or "", onnxruntime_version=r.onnxruntime_version or "", os=r.os or "",
                run_ids=tuple(runs[k]), n_records=count[k])
        for k, r in first.items()
    ]


def machine_labels(records: Sequence[Record]) -> dict[str, str]:
    """fingerprint -> label, for every machine in ``records``."""
    return {m.key: m.label for m in machines(records)}


# ----------------------------------------------------------------------------------------------------- comparison


def _row_key(r: Record) -> tuple:
    # Record.key without device and threads: those belong to the column group (what measured it), not the row.
    return (r.model, r.knobs or "", r.runtime, r.precision, r.batch, r.mode or "infer")


def cross_machine_rows(records: Sequence[Record], metric: str = "p50_ms") -> tuple[list[str], list[list[Any]]]:
    """A table with one row per (model, knobs, runtime, precision, batch) and one column per (machine, device).

    Values are raw numbers of ``metric`` (a name of archbench.bench.analyze.metrics; None where a machine has no ok
    record of the cell); the last column is the ratio of the largest to the smallest value of the row (how much the
    slowest machine trails the fastest on ``metric``).
    Returns (group headers, rows); each row starts with model, runtime, precision, batch."""
    from archbench.bench.analyze.metrics import metric as metric_named

    met = metric_named(metric)
    labels = machine_labels(records)
    groups: list[tuple[str, str]] = []
    cells: dict[tuple, dict[tuple[str, str], Any]] = {}
    for r in records:
        value = met.value(r, records)
        if not r.ok or value is None or r.mode == "maxbatch-trial" or r.scenario:  # serving: report.serving
            continue
        g = (labels[fingerprint(r)], r.device)
        if g not in groups:
            groups.append(g)
        cells.setdefault(_row_key(r), {})[g] = value
    headers = [f"{lab} / {dev}" for lab, dev in groups]
    rows = []
    for key, vals in cells.items():
        model, knobs, runtime, precision, batch, mode = key
        name = model + (f" {knobs}" if knobs not in ("", "{}") else "") + ("" if mode == "infer" else f" ({mode})")
        row: list[Any] = [name, runtime, precision, batch]
        row += [vals.get(g) for g in groups]
        present = [v for v in vals.values() if v]
        row.append(max(present) / min(present) if len(present) > 1 else None)
        rows.append(row)
    return headers, rows
