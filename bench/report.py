"""Reports from records: records.csv, report.md, and the end-of-run table. Formatting lives here only."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench.formatting import human
from bench.record import write_csv

TABLE_COLS = ("model", "runtime", "precision", "batch", "status", "p50 ms", "p95 ms", "CV", "samples/s",
              "MACs", "size MiB", "peak RSS MiB")


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def table_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in records:
        ok = r.get("status") == "ok"
        rows.append([
            r["model"], r["runtime"], r["precision"], str(r["batch"]),
            r["status"] + ("" if ok else f": {r.get('error', '')[:60]}"),
            _f(r.get("latency_p50_ms")), _f(r.get("latency_p95_ms")),
            "-" if r.get("latency_cv") is None else f"{r['latency_cv']:.0%}" + ("" if r.get("stable") else " !"),
            _f(r.get("throughput_sps"), 4), human(r.get("macs")),
            _f(r.get("size_mib")), _f(r.get("peak_rss_mib"), 4),
        ])
    return rows


def runtime_winners(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, precision, batch, device): the runtime with the lowest p50, and how much faster than the next."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("status") == "ok" and r.get("latency_p50_ms"):
            cells[(r["model"], r["precision"], r["batch"], r["device"])].append(r)
    out = []
    for (model, precision, batch, device), rs in cells.items():
        if len({r["runtime"] for r in rs}) < 2:
            continue
        rs = sorted(rs, key=lambda r: r["latency_p50_ms"])
        best, second = rs[0], rs[1]
        out.append({
            "model": model, "precision": precision, "batch": batch, "device": device,
            "fastest": best["runtime"], "p50_ms": best["latency_p50_ms"],
            "runner_up": second["runtime"], "runner_up_p50_ms": second["latency_p50_ms"],
            "speedup": second["latency_p50_ms"] / best["latency_p50_ms"],
        })
    return out


def environment_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    if not records:
        return []
    r = records[0]
    gpu = f"{r.get('gpu_name')} (driver {r.get('gpu_driver')})" if r.get("gpu_name") else "none"
    return [
        f"- machine: {r.get('cpu_model')} ({r.get('cpu_count')} logical CPUs), GPU: {gpu}, {r.get('os')}",
        f"- threads: {r.get('threads')} (torch intra-op and ONNX Runtime intra-op alike; inter-op 1)",
        f"- versions: archbench {r.get('archbench_version')} ({r.get('git_commit') or 'no git'}), "
        f"python {r.get('python_version')}, torch {r.get('torch_version')}, onnxruntime "
        f"{r.get('onnxruntime_version')}, onnx {r.get('onnx_version')}, triton {r.get('triton_version') or '-'}",
        f"- run: {r.get('run_id')}, first record {r.get('timestamp')}",
    ]


def markdown(records: Sequence[dict[str, Any]], command: str = "") -> str:
    ok = [r for r in records if r.get("status") == "ok"]
    lines = ["# archbench report", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += ["## Environment", "", *environment_lines(records), ""]
    lines += ["## Results", "",
              "Latency of one forward at the given batch, milliseconds; percentiles by linear interpolation "
              "(numpy `linear`); samples/s = batch / mean latency; `!` marks CV > 10%.", ""]
    lines.append(tabulate(table_rows(records), headers=TABLE_COLS, tablefmt="github", disable_numparse=True))
    lines.append("")
    wins = runtime_winners(records)
    if wins:
        lines += ["## Fastest runtime per model", ""]
        for w in wins:
            lines.append(
                f"- **{w['model']}** ({w['precision']}, batch {w['batch']}, {w['device']}): **{w['fastest']}** "
                f"{w['p50_ms']:.3g} ms p50, {w['speedup']:.2f}x faster than {w['runner_up']} "
                f"({w['runner_up_p50_ms']:.3g} ms)"
            )
        lines.append("")
    bad = [r for r in records if r.get("status") != "ok"]
    if bad:
        lines += ["## Cells that did not run", ""]
        for r in bad:
            lines.append(f"- {r['model']} / {r['runtime']} / {r['precision']} / batch {r['batch']}: "
                         f"**{r['status']}**: {r.get('error', '')}")
        lines.append("")
    unstable = [r for r in ok if r.get("stable") is False]
    if unstable:
        lines += [f"{len(unstable)} of {len(ok)} measurements had CV > 10% (sub-millisecond models are dominated "
                  "by dispatch jitter; raise --min-time for steadier numbers).", ""]
    return "\n".join(lines)


def write_reports(out: Path, records: Sequence[dict[str, Any]], command: str = "") -> list[Path]:
    csv_path, md_path = out / "records.csv", out / "report.md"
    write_csv(csv_path, records)
    md_path.write_text(markdown(records, command), encoding="utf-8")
    return [csv_path, md_path]
