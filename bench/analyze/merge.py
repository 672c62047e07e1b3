"""Records from several runs and machines, read into one list that reports and ``compare`` can use.

    records = load_records(["results/laptop", "results/h100/records.jsonl"])
    for m in machines(records): print(m.label, m.cpu_model, m.gpu_name)
    headers, rows = cross_machine_rows(records, "latency_p50_ms")

A *machine* here is one ``archbench.bench.env.fingerprint`` (CPU model and count, GPU, torch and onnxruntime versions,
threads): records with the same fingerprint were measured under conditions whose timings compare directly.
Its label is the hostname, with the fields that tell same-named machines apart appended when needed.

Records of different ``schema_version`` are never mixed: a field may have changed meaning between versions
(bench/record.py bumps the version when that happens), so ``load_records`` raises a UsageError instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archbench.bench.env import fingerprint
from archbench.bench.errors import UsageError
from archbench.bench.record import SCHEMA_VERSION, cell_key, read_jsonl

# Key under which load_records remembers which file a record came from. Not a Record field: CSV writers drop it
# (extrasaction="ignore") and report.json strips keys that start with "_".
SOURCE = "_source"


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


def check_schema(records: Sequence[dict[str, Any]]) -> int:
    """The one schema_version of ``records``; UsageError when they mix versions or come from a newer archbench."""
    by_version: dict[Any, set[str]] = defaultdict(set)
    for r in records:
        by_version[r.get("schema_version")].add(str(r.get(SOURCE, "?")))
    if len(by_version) > 1:
        parts = "; ".join(f"v{v}: {', '.join(sorted(srcs)[:3])}{' ...' if len(srcs) > 3 else ''}"
                          for v, srcs in sorted(by_version.items(), key=lambda kv: str(kv[0])))
        raise UsageError(f"refusing to mix record schema versions ({parts}); re-measure the older runs with this "
                         "archbench, or compare each version on its own")
    version = next(iter(by_version), SCHEMA_VERSION)
    if isinstance(version, int) and version > SCHEMA_VERSION:
        raise UsageError(f"records have schema_version {version}, newer than this archbench understands "
                         f"({SCHEMA_VERSION}); upgrade archbench")
    return version if isinstance(version, int) else SCHEMA_VERSION


def dedupe(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each (machine, cell), in first-seen order: a resumed run's retry replaces its failure,
    while the same cell measured on two machines stays twice."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in records:
        out[(fingerprint(r), cell_key(r))] = r
    return list(out.values())


def load_records(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every record of ``paths`` (files or run folders), schema-checked and de-duplicated per machine and cell.

    Each record dict gets ``_source`` (the file it came from)."""
    files = resolve_paths(paths)
    records: list[dict[str, Any]] = []
    for f in files:
        for r in read_jsonl(f):
            records.append({**r, SOURCE: str(f)})
    if not records:
        raise UsageError(f"no records in {', '.join(map(str, files))}")
    check_schema(records)
    return dedupe(records)


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


def machines(records: Sequence[dict[str, Any]]) -> list[Machine]:
    """One Machine per fingerprint, in first-seen order, with labels unique among them."""
    first: dict[str, dict[str, Any]] = {}
    runs: dict[str, list[str]] = defaultdict(list)
    count: dict[str, int] = defaultdict(int)
    for r in records:
        k = fingerprint(r)
        first.setdefault(k, r)
        count[k] += 1
        rid = str(r.get("run_id") or "")
        if rid and rid not in runs[k]:
            runs[k].append(rid)
    labels = {k: str(r.get("hostname") or "unknown-host") for k, r in first.items()}
    by_label: dict[str, list[str]] = defaultdict(list)
    for k, lab in labels.items():
        by_label[lab].append(k)
    for lab, keys in by_label.items():
        if len(keys) < 2:
            continue
        for k in keys:
            extra = [fmt.format(first[k].get(f)) for f, fmt in _DISTINGUISH
                     if len({str(first[j].get(f)) for j in keys}) > 1]
            labels[k] = f"{lab} ({', '.join(extra)})"
    return [
        Machine(key=k, label=labels[k], hostname=str(r.get("hostname") or ""), cpu_model=str(r.get("cpu_model") or ""),
                cpu_count=int(r.get("cpu_count") or 0), gpu_name=str(r.get("gpu_name") or ""),
                threads=int(r.get("threads") or 0), torch_version=str(r.get("torch_version") or ""),
                onnxruntime_version=str(r.get("onnxruntime_version") or ""), os=str(r.get("os") or ""),
                run_ids=tuple(runs[k]), n_records=count[k])
        for k, r in first.items()
    ]


def machine_labels(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """fingerprint -> label, for every machine in ``records``."""
    return {m.key: m.label for m in machines(records)}


# ----------------------------------------------------------------------------------------------------- comparison


def _row_key(r: dict[str, Any]) -> tuple:
    # cell_key without device and threads: those belong to the column group (what measured it), not the row.
    return (r.get("model"), r.get("knobs") or "", r.get("runtime"), r.get("precision"), r.get("batch"),
            r.get("mode") or "infer")


def cross_machine_rows(
    records: Sequence[dict[str, Any]], metric: str = "latency_p50_ms"
) -> tuple[list[str], list[list[Any]]]:
    """A table with one row per (model, knobs, runtime, precision, batch) and one column per (machine, device).

    Values are raw numbers (None where a machine has no ok record of the cell); the last column is the ratio of
    the largest to the smallest value of the row (how much the slowest machine trails the fastest on ``metric``).
    Returns (group headers, rows); each row starts with model, runtime, precision, batch."""
    labels = machine_labels(records)
    groups: list[tuple[str, str]] = []
    cells: dict[tuple, dict[tuple[str, str], Any]] = {}
    for r in records:
        if r.get("status") != "ok" or r.get(metric) is None or r.get("mode") == "maxbatch-trial":
            continue
        g = (labels[fingerprint(r)], str(r.get("device")))
        if g not in groups:
            groups.append(g)
        cells.setdefault(_row_key(r), {})[g] = r[metric]
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
