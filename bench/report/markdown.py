"""Reports from records: report.md (for people: PRs, wikis, design reviews), CSV and JSON (for machines).
Renders Records and archbench.bench.analyze's results; the tables live in archbench.bench.report.tables, the findings'
words in archbench.bench.report.findings.

    write_reports(out, records, command)                       # what `archbench run` writes at the end
    write_reports(out, records, command, peaks=..., placements=..., layers=..., plots=[...], verdicts=...,
                  csv_name="report.csv", json_name="report.json")   # what `archbench report` writes

The markdown has: an environment header (one line set per machine), conventions, computed **findings** (MACs
that fail to predict latency, int8/fp16/bf16 slower than fp32, the fastest runtime per model and by how much, unstable
cells, cells timed on a busy machine, cells far below their roofline, budget verdicts), one table per model
family, a cross-machine table when records come from several machines, the roofline placement and per-layer
memory/compute bounds when measured peaks are given, and links to the plots.

Budget verdicts (``verdicts``: archbench.bench.analyze.budgets.CellVerdict per record, keyed by
archbench.bench.analyze.merge.machine_cell_key) add a budget column, a finding, and ``verdict`` / ``verdict_reason``
to each record of report.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tabulate import tabulate

from archbench.bench.analyze.budgets import Verdicts, verdict_of
from archbench.bench.analyze.findings import failed_cells
from archbench.bench.atomic import atomic_write
from archbench.bench.record import CSV_FIELDS, Record, write_csv
from archbench.bench.report.findings import findings, findings_md
from archbench.bench.report.format import human, num
from archbench.bench.report.tables import TABLE_COLS, family_tables, md_table, table_rows

# The end-of-run table lives in archbench.bench.report.tables; importable from here too for `archbench run`.
__all__ = ["TABLE_COLS", "environment_lines", "markdown", "report_json", "table_rows", "write_reports"]

# ----------------------------------------------------------------------------------------------------- sections


def environment_lines(records: Sequence[Record]) -> list[str]:
    """Markdown lines describing where the records were measured: bullets for one machine, a table for several."""
    if not records:
        return []
    from archbench.bench.analyze.merge import machines

    ms = machines(records)
    if len(ms) == 1:
        r = records[0]
        gpu = f"{r.gpu_name} (driver {r.gpu_driver})" if r.gpu_name else "none"
        runs = ", ".join(ms[0].run_ids) or "-"
        return [
            f"- machine: {r.hostname or '?'}: {r.cpu_model} ({r.cpu_count} logical CPUs), GPU: {gpu}, {r.os}",
            f"- threads: {r.threads} (torch intra-op and ONNX Runtime intra-op alike; inter-op 1)",
            f"- versions: archbench {r.archbench_version} ({r.git_commit or 'no git'}), "
            f"python {r.python_version}, torch {r.torch_version}, onnxruntime "
            f"{r.onnxruntime_version}, onnx {r.onnx_version}, triton {r.triton_version or '-'}",
            f"- run: {runs}, first record {r.timestamp}",
        ]
    rows = [[m.label, f"{m.cpu_model} ({m.cpu_count} CPUs)", m.gpu_name or "-", str(m.threads), m.torch_version,
             m.onnxruntime_version or "-", m.os, ", ".join(m.run_ids) or "-", str(m.n_records)] for m in ms]
    return [f"Records from {len(ms)} machines (a machine = one environment fingerprint: CPU, GPU, threads, "
            "torch and onnxruntime versions; only cells measured alike are compared directly):", "",
            tabulate(rows, headers=["machine", "CPU", "GPU", "threads", "torch", "onnxruntime", "OS", "runs",
                                    "records"], tablefmt="github", disable_numparse=True)]


CONVENTIONS = (
    "Latency of one forward at the given batch, milliseconds; percentiles by linear interpolation (numpy "
    "`linear`); samples/s = batch / mean latency; `!` marks CV (std / mean) > 10%. MACs = multiply-accumulates of "
    "one forward at that batch (conv, linear, matmul, attention, RNN gates), FLOPs = 2 x MACs. size = the "
    "artefact the runtime loads (state_dict or .onnx). Peak RSS = the measuring process's resident memory. "
    "Mode train: latency = one training step (forward, backward, optimizer), samples/s = batch / mean step. "
    "Mode generate: latency = one decode step (TPOT), samples/s = tokens/s, MACs = one decode step (see Generation)."
)


def _cross_machine_md(records: Sequence[Record]) -> list[str]:
    from archbench.bench.analyze.merge import cross_machine_rows

    headers, rows = cross_machine_rows(records, "p50_ms")
    if len(headers) < 2:
        return []
    table = [[*map(str, row[:4]), *[num(v) for v in row[4:-1]],
              "-" if row[-1] is None else f"{row[-1]:.2f}x"] for row in rows]
    return ["## Across machines", "",
            "p50 latency (ms) of each cell on each machine and device; last column = slowest / fastest.", "",
            md_table(["model", "runtime", "precision", "batch", *[f"{h} p50 ms" for h in headers],
                       "slowest / fastest"], table), ""]


def _roofline_md(records: Sequence[Record], peaks: Sequence[Any], placements: Sequence[Any]) -> list[str]:
    from archbench.bench.analyze.merge import machine_labels

    labels = machine_labels(records)
    many = len(labels) > 1
    lines = ["## Roofline", ""]
    if peaks:
        lines += ["Peaks measured on the machine itself (`archbench.bench.analyze.roofline.measure_peaks`): FLOP/s = 2 n^3 / t of the "
                  "best n x n fp32 `torch.mm`; bytes/s = 2 N / t of the best copy of an N-byte tensor (read + "
                  "write), far larger than the caches; ridge = peak FLOP/s / peak bytes/s.", ""]
        lines.append(tabulate(
            [[p.hostname, p.device, str(p.threads), num(p.flops_per_s / 1e9), num(p.bytes_per_s / 1e9),
              num(p.ridge), f"n={p.matmul_n}, {p.copy_mib:g} MiB", p.measured_at] for p in peaks],
            headers=["host", "device", "threads", "peak GFLOP/s", "peak GB/s", "ridge FLOP/B", "sizes", "measured"],
            tablefmt="github", disable_numparse=True))
        lines.append("")
    else:
        lines += ["No measured peaks for these records' machines (`archbench report` measures them when run on "
                  "the machine that produced the records, unless --no-measure), so cells are placed without "
                  "roofs.", ""]
    lines += ["Each cell at achieved FLOP/s = FLOPs / p50 and arithmetic intensity = FLOPs / bytes. **Bytes per "
              "forward is an estimate**: weights (the loaded artefact's size) + input tensor + output tensors, "
              "each moved once; intermediate activations are not counted, so the true intensity is lower. "
              "bound = memory when the intensity is below the ridge point. % of roof = achieved / attainable at "
              "that intensity; above 100% means the weights stayed in cache (bandwidth side) or the runtime's "
              "kernels beat `torch.mm` (compute side). A `model decode` row is one decode step of `--mode "
              "generate`: bytes = the weights it reads (the embedding table left out) + the KV cache at the mean "
              "context, exact rather than estimated.", ""]
    rows = []
    for p in placements:
        rows.append([p.model, p.runtime, p.precision, str(p.batch), *([labels.get(p.machine, "?")] if many else []),
                     num(p.achieved_flops_per_s / 1e9), num(p.intensity),
                     human(p.bytes, "B", binary=True) + ("" if p.output_bytes is not None else " (no outputs)"),
                     p.bound, "-" if p.of_roof is None else f"{p.of_roof:.1%}"])
    lines.append(md_table(["model", "runtime", "precision", "batch", *(["machine"] if many else []),
                            "GFLOP/s", "FLOP/B", "bytes/forward", "bound", "% of roof"], rows))
    lines.append("")
    return lines


def _layers_md(layers: dict[str, list[Any]], ridge_by_model: dict[str, float]) -> list[str]:
    if not layers:
        return []
    lines = ["## Memory-bound layers", "",
             "Per module with MACs of its own (children excluded), batch 1, fp32: intensity = 2 x own MACs / (own "
             "weights + input + output activation bytes), against the ridge point of the measured peaks. A "
             "memory-bound layer waits on bytes, not FLOPs: fusing it with its neighbours or shrinking its weights "
             "helps, more FLOP/s does not.", ""]
    summary = []
    for model, rows in layers.items():
        mem = [lb for lb in rows if lb.bound == "memory"]
        total = sum(lb.macs for lb in rows) or 1
        low = sorted(rows, key=lambda lb: lb.intensity)[:3]
        summary.append([model, num(ridge_by_model.get(model, float("nan"))), str(len(rows)), str(len(mem)),
                        f"{sum(lb.macs for lb in mem) / total:.1%}",
                        ", ".join(f"{lb.module} ({num(lb.intensity, 2)})" for lb in low)])
    lines.append(md_table(["model", "ridge FLOP/B", "layers with MACs", "memory-bound",
                            "MACs in memory-bound layers", "lowest intensity (FLOP/B)"], summary))
    lines.append("")
    for model, rows in layers.items():
        lines += [f"<details><summary>{model}: every layer</summary>", ""]
        lines.append(md_table(
            ["module", "type", "MACs", "weights", "activations", "FLOP/B", "bound"],
            [[lb.module, lb.type, human(lb.macs), human(lb.weight_bytes, "B", binary=True),
              human(lb.activation_bytes, "B", binary=True), num(lb.intensity),
              "**memory**" if lb.bound == "memory" else "compute"] for lb in rows]))
        lines += ["", "</details>", ""]
    return lines


def markdown(records: Sequence[Record], command: str = "", *, peaks: Sequence[Any] = (),
             placements: Sequence[Any] | None = None, layers: dict[str, list[Any]] | None = None,
             layer_ridges: dict[str, float] | None = None, plots: Sequence[str] = (),
             sources: Sequence[str] = (), budget: str = "", verdicts: Verdicts | None = None,
             sections: Sequence[str] = ()) -> str:
    """The report in markdown (GitHub flavour). ``plots`` are paths relative to the report's folder; ``verdicts``
    the records' budget verdicts and ``budget`` what they were judged against; ``sections``: markdown lines the
    run modes render for their records (training, generation, serving), placed after the tables."""
    lines = ["# archbench report", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if sources:
        lines += ["Records: " + ", ".join(f"`{s}`" for s in sources), ""]
    lines += ["## Environment", "", *environment_lines(records), ""]
    lines += ["## How to read this", "", CONVENTIONS, ""]
    fs = findings(records, placements or (), verdicts)
    if fs:
        lines += ["## Findings", ""]
        lines += [f"Budget verdicts judged against {budget}.", ""] if budget else []
        lines += [*findings_md(fs), ""]
    tables = family_tables(records, verdicts)
    if tables:
        lines += ["## Results by family", ""]
        for fam, (headers, rows) in tables.items():
            lines += [f"### {fam}", "", md_table(headers, rows), ""]
    lines += _cross_machine_md(records)
    if placements:
        lines += _roofline_md(records, peaks, placements)
    if layers:
        lines += _layers_md(layers, layer_ridges or {})
    lines += list(sections)  # the run modes' own sections (archbench.bench.modes: report_md)
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            lines += [f"![{Path(p).stem.replace('_', ' ')}]({p})", ""]
    bad = failed_cells(records)
    if bad:
        lines += ["## Cells that did not run", ""]
        for r in bad:
            lines.append(f"- {r.model} / {r.runtime} / {r.precision} / batch {r.batch}: **{r.status}**: {r.error}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- JSON, files


def _public(r: Record, verdicts: Verdicts) -> dict[str, Any]:
    """A record for report.json: its fields without the raw samples, and its budget verdict when it has one."""
    d = {k: v for k, v in r.to_dict().items() if k != "samples_ms"}
    v = verdict_of(r, verdicts)
    if v is not None:
        d |= {"verdict": v.verdict, "verdict_reason": v.reason}
    return d


def _finite(x: Any) -> Any:
    """JSON has no inf/nan: such floats become the strings 'inf', '-inf', 'nan' (e.g. SQNR of an exact match)."""
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def report_json(records: Sequence[Record], command: str = "", *, peaks: Sequence[Any] = (),
                placements: Sequence[Any] | None = None, layers: dict[str, list[Any]] | None = None,
                verdicts: Verdicts | None = None) -> dict[str, Any]:
    """Everything the markdown says, as data (records without raw samples; units in the key names)."""
    from archbench.bench.analyze.merge import machines

    verdicts = verdicts or {}
    return _finite({
        "command": command,
        "schema_version": records[0].schema_version if records else None,
        "csv_fields": CSV_FIELDS,
        "machines": [asdict(m) for m in machines(records)] if records else [],
        "peaks": [asdict(p) | {"ridge_flop_per_byte": p.ridge} for p in peaks],
        "findings": [asdict(f) for f in findings(records, placements or (), verdicts)],
        "roofline": [asdict(p) | {"bytes": p.bytes, "intensity_flop_per_byte": p.intensity, "of_roof": p.of_roof}
                     for p in placements or ()],
        "layers": {m: [asdict(lb) for lb in rows] for m, rows in (layers or {}).items()},
        "records": [_public(r, verdicts) for r in records],
    })


def write_reports(out: Path, records: Sequence[Record], command: str = "", *, peaks: Sequence[Any] = (),
                  placements: Sequence[Any] | None = None, layers: dict[str, list[Any]] | None = None,
                  layer_ridges: dict[str, float] | None = None, plots: Sequence[Path] = (),
                  csv_name: str = "records.csv", md_name: str = "report.md", json_name: str | None = None,
                  sources: Sequence[str] = (), budget: str = "", verdicts: Verdicts | None = None,
                  sections: Sequence[str] = ()) -> list[Path]:
    """Write the CSV (record.CSV_FIELDS columns, in that order), the markdown and optionally the JSON into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / csv_name, out / md_name
    write_csv(csv_path, records)
    rel = [str(Path(p).resolve().relative_to(out.resolve())) if Path(p).resolve().is_relative_to(out.resolve())
           else str(p) for p in plots]
    atomic_write(md_path, markdown(records, command, peaks=peaks, placements=placements, layers=layers,
                                   layer_ridges=layer_ridges, plots=rel, sources=sources, budget=budget,
                                   verdicts=verdicts, sections=sections))
    paths = [csv_path, md_path]
    if json_name:
        js = out / json_name
        doc = report_json(records, command, peaks=peaks, placements=placements, layers=layers, verdicts=verdicts)
        atomic_write(js, json.dumps(doc, indent=1, default=str) + "\n")
        paths.append(js)
    return paths
