"""Provenance: what machine and versions a record was measured with. Queried on call, never at import."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


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
    """(GPU name, driver version) of CUDA device 0, or ('', '') without one."""
    import torch

    if not torch.cuda.is_available():
        return "", ""
    name = torch.cuda.get_device_name(0)
    driver = ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
        driver = out.splitlines()[0] if out else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return name, driver


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


def fingerprint(rec: dict[str, Any]) -> str:
    """What must match for two records' timings to be comparable: machine and the versions that run the model."""
    keys = ("cpu_model", "cpu_count", "gpu_name", "torch_version", "onnxruntime_version", "threads")
    return "|".join(str(rec.get(k, "")) for k in keys)
