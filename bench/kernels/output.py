"""Output of ``archbench kernels``: the provenance block, the tables on stdout, kernels.md / kernels.csv /
kernels.json. Renderers only: every number is computed by kernelbench_sweep (Row) or peaks (Peaks)."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archbench.bench.kernels.checks import CheckRow
from archbench.bench.kernels.sweep import Row
from archbench.bench.machine.peaks import Peaks

# CSV columns appended to every row, from the environment block
PROVENANCE = ("gpu_name", "torch_version", "triton_version", "timestamp")
# Shown at the top of kernels.md, in this order (keys of kernel_environment()).
ENV_SHOWN = ("gpu_name", "gpu_capability", "gpu_driver", "cuda_version", "cudnn_version", "torch_version",
             "triton_version", "python_version", "git_commit", "hostname", "cpu_model", "timestamp", "dtype",
             "cudnn_benchmark", "budget_s", "rounds", "mode")


def kernel_environment(**extra: Any) -> dict[str, Any]:
    """archbench.bench.env.environment() (versions, git commit, CPU, GPU and driver; shared with every Record) plus
    what a kernel benchmark adds: the time, torch's CUDA and cuDNN versions, the GPU's compute capability, and
    ``extra``. A new dict: environment() is cached, and must not be mutated."""
    import torch

    from archbench.bench.env import environment

    env: dict[str, Any] = {
        **environment(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu_capability": None,
    }
    if torch.cuda.is_available():
        env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    env.update(extra)
    return env


def describe_peaks(peaks: Peaks) -> str:
    """One line: each measured peak with the formula that produced it."""
    return (f"copy {peaks.copy_mib:g} MiB: bytes/s = 2*B/t -> {peaks.bytes_per_s / 1e9:.4g} GB/s; "
            f"{peaks.dtype} matmul n={peaks.matmul_n}: FLOP/s = 2*n^3/t -> {peaks.flops_per_s / 1e12:.4g} TFLOP/s "
            f"(t: best of the timed calls)")


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    """A table cell with a fixed format (kernel tables align columns of like values), "" when missing."""
    return "" if value is None else f"{value:{spec}}{suffix}"


def _interval(lo: float | None, hi: float | None, spec: str) -> str:
    return "" if lo is None or hi is None else f" [{lo:{spec}}, {hi:{spec}}]"


def _cells(r: Row) -> list[str]:
    metric = "" if r.metric is None else f"{r.metric:.4g} {r.metric_unit}"
    median = "" if r.median_ms is None else _cell(r.median_ms, ".4f") + _interval(r.median_lo_ms, r.median_hi_ms, ".4f")
    if r.speedup is not None:
        speedup = f"{r.speedup:.2f}x" + _interval(r.speedup_lo, r.speedup_hi, ".2f")
    else:
        speedup = "(ours)" if r.impl == "triton" and r.status == "ok" else ""
    return [r.kernel, r.case, r.dtype, r.direction, r.impl, r.status, median, metric, _cell(r.pct_of_peak, ".0f", "%"),
            speedup, _cell(r.max_abs_err, ".1e"), r.error or r.note]


HEADERS = ["kernel", "case", "dtype", "dir", "impl", "status", "median ms [95% CI]", "metric", "% peak",
           "triton speed-up [95% CI]", "max abs err", "error / note"]
SPEEDUP_NOTE = ("triton speed-up: this row's time / triton's time, paired per round (> 1: triton is faster); "
                "intervals: lowest and highest of the rounds' block medians (95%, distribution-free, >= 6 rounds); "
                "triton[...] rows: candidate tiles (kernels.attention.tile_config), faster than ours where < 1")


def formulas(rows: Sequence[Row]) -> list[str]:
    """Each (kernel, direction)'s metric formula, once."""
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        seen.setdefault((r.kernel, r.direction), f"{r.metric_unit} = {r.formula} / median time")
    return [f"{kernel} {direction}: {text}" for (kernel, direction), text in seen.items()]


def format_rows(rows: Sequence[Row]) -> str:
    """The GPU benchmark table, then the speed-up definition and each metric's formula."""
    from tabulate import tabulate

    table = tabulate([_cells(r) for r in rows], headers=HEADERS, disable_numparse=True)
    return "\n".join([table, "", SPEEDUP_NOTE, "formulas:"] + [f"  {f}" for f in formulas(rows)])


def format_markdown(rows: Sequence[Row], env: dict[str, Any], title: str = "archbench kernels") -> str:
    """kernels.md: the environment, the measured peaks, one table per kernel, the formulas."""
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {env[key]} |" for key in ENV_SHOWN if env.get(key) not in (None, "")]
    if env.get("peaks"):
        lines += ["", f"Measured peaks (same run): {describe_peaks(Peaks(**env['peaks']))}"]
    for kernel in dict.fromkeys(r.kernel for r in rows):
        lines += ["", f"## {kernel}", "", "| " + " | ".join(HEADERS[1:]) + " |",
                  "|" + "---|" * (len(HEADERS) - 1)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)[1:]) + " |" for r in rows
                  if r.kernel == kernel]
    lines += ["", SPEEDUP_NOTE + ".", "", "Formulas:", ""] + [f"- {f}" for f in formulas(rows)]
    return "\n".join(lines) + "\n"


def format_checks(rows: Sequence[CheckRow]) -> str:
    """The interpreter correctness-check table (no GPU)."""
    from tabulate import tabulate

    return tabulate([[r.kernel, r.case, r.dtype, r.output, r.status, _cell(r.max_abs_err, ".2e"), f"{r.atol:g}",
                      f"{r.wall_ms:.0f}", r.error] for r in rows],
                    headers=["kernel", "case", "dtype", "output", "status", "max abs err", "atol",
                             "interp. wall ms (meaningless)", "error"], disable_numparse=True)


def write_outputs(out_dir: Path, rows: Sequence[Any], env: dict[str, Any], row_type: type) -> list[Path]:
    """kernels.csv (one row per record, ``PROVENANCE`` columns appended), kernels.json (environment + rows) and,
    for benchmark rows, kernels.md; returns their paths. Raises OSError when they cannot be written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = [f.name for f in dataclasses.fields(row_type)]
    csv_path, json_path = out_dir / "kernels.csv", out_dir / "kernels.json"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields + list(PROVENANCE))
        for r in rows:
            record = dataclasses.asdict(r)
            writer.writerow([record[f] for f in fields] + [env.get(p) for p in PROVENANCE])
    with open(json_path, "w") as fh:
        json.dump({"environment": env, "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=2)
    paths = [csv_path, json_path]
    if row_type is Row:
        md_path = out_dir / "kernels.md"
        from archbench.bench.atomic import atomic_write

        atomic_write(md_path, format_markdown(rows, env))
        paths.append(md_path)
    return paths
