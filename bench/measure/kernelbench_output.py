"""Output of ``archbench kernels``: the provenance block, the tables on stdout, kernels.csv and kernels.json."""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from archbench.bench.measure.kernelbench_checks import CheckRow
from archbench.bench.measure.kernelbench_sweep import Row
from archbench.bench.measure.peaks import Peaks

# CSV columns appended to every row, from the environment block
PROVENANCE = ("gpu_name", "torch_version", "triton_version", "timestamp")


def kernel_environment(**extra: Any) -> dict[str, Any]:
    """archbench.bench.env.environment() (versions, git commit, CPU, GPU; shared with every Record) plus what a
    kernel benchmark adds: the time, torch's CUDA version and the GPU's compute capability, and ``extra``.
    A new dict: environment() is cached, and must not be mutated."""
    import torch

    from archbench.bench.env import environment

    env: dict[str, Any] = {
        **environment(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cuda_version": torch.version.cuda,
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


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def format_rows(rows: Sequence[Row]) -> str:
    """The GPU benchmark table."""
    from tabulate import tabulate

    table = []
    for r in rows:
        metric = "" if r.metric is None else f"{r.metric:.4g} {r.metric_unit}"
        table.append([
            r.kernel, r.case, r.dtype, r.direction, r.impl, r.status,
            _fmt(r.median_ms, ".4f"), metric, _fmt(r.pct_of_peak, ".0f", "%"), r.formula,
            _fmt(r.max_abs_err, ".1e"), r.error or r.note,
        ])
    headers = ["kernel", "case", "dtype", "dir", "impl", "status", "median ms", "metric", "% peak", "formula",
               "max abs err", "error / note"]
    return tabulate(table, headers=headers, disable_numparse=True)


def format_checks(rows: Sequence[CheckRow]) -> str:
    """The interpreter correctness-check table (no GPU)."""
    from tabulate import tabulate

    return tabulate([[r.kernel, r.case, r.dtype, r.output, r.status, _fmt(r.max_abs_err, ".2e"), f"{r.atol:g}",
                      f"{r.wall_ms:.0f}", r.error] for r in rows],
                    headers=["kernel", "case", "dtype", "output", "status", "max abs err", "atol",
                             "interp. wall ms (meaningless)", "error"], disable_numparse=True)


def write_outputs(out_dir: Path, rows: Sequence[Any], env: dict[str, Any], row_type: type) -> list[Path]:
    """kernels.csv (one row per record, ``PROVENANCE`` columns appended) and kernels.json (environment + rows);
    returns their paths. Raises OSError when they cannot be written."""
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
    return [csv_path, json_path]
