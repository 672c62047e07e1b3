"""Provenance: what machine and versions a record was measured with. Queried on call, never at import."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archbench.bench.record import Record


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The commit of the archbench checkout, with '+dirty' when it has uncommitted changes; '' if not a repo."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        if not sha:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def gpu_info() -> tuple[str, str]:
    """(GPU name, driver version) of GPU 0, or ('', '') without one.

    Asks ``nvidia-smi``, so torch-free workers (ONNX Runtime, OpenVINO) never import torch for provenance; torch is
    asked only when it is already imported and nvidia-smi is missing."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        if out:
            name, _, driver = out.splitlines()[0].partition(",")
            return name.strip(), driver.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch.cuda.get_device_name(0), ""
    return "", ""


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, Any]:
    """Fields shared by every record of this process (see archbench.bench.record.Record)."""
    gpu, driver = gpu_info()
    return {
        "archbench_version": _version("archbench"),
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
        "torch_version": _version("torch"),
        "onnxruntime_version": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "onnx_version": _version("onnx"),
        "triton_version": _version("triton"),
        "os": f"{platform.system()} {platform.release()}",
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "gpu_name": gpu,
        "gpu_driver": driver,
    }


# What must match for two records' timings to be comparable: the machine (CPU model and count, GPU), the threads it
# ran with and the versions of the installed runtimes. One per machine, not per runtime: every cell of one run on
# one machine shares it, whichever runtime measured it. (A cell's own ``runtime_version`` is compared on top of it
# by archbench.bench.analyze.compare, which pairs cells of the same runtime.)
FINGERPRINT_FIELDS = ("cpu_model", "cpu_count", "gpu_name", "torch_version", "onnxruntime_version", "threads")


def fingerprint(rec: Record) -> str:
    """The one machine fingerprint of a record: its FINGERPRINT_FIELDS joined by '|'. Used by merge (what a machine
    is), compare (environment differences), the sibling lookup, findings, plots and the pytest plugin."""
    return fingerprint_of({k: getattr(rec, k) for k in FINGERPRINT_FIELDS})


def fingerprint_of(values: Mapping[str, Any]) -> str:
    """The fingerprint of FINGERPRINT_FIELDS given as a mapping: a record's, or this process's ``environment()``
    plus the threads it gives a runtime (the pytest plugin's machine_info)."""
    return "|".join(str(values.get(k, "")) for k in FINGERPRINT_FIELDS)
