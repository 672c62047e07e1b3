"""Helpers shared by tests (not fixtures of a framework, just functions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archbench.bench.record import Record

TESTS = Path(__file__).resolve().parent  # where userfactories.py and the other helpers live (tests/conftest.py puts
ROOT = TESTS.parent  # it on sys.path); the repository
FIX = TESTS / "fixtures"


def make_record(**fields: Any) -> Record:
    """A Record for tests: model "m", torch fp32, batch 1, cpu, 1 thread, status ok, unless ``fields`` say otherwise."""
    base: dict[str, Any] = {"model": "m", "runtime": "torch", "precision": "fp32", "batch": 1, "device": "cpu",
                            "threads": 1}
    return Record(**(base | fields))


def export_small_onnx(folder: Path) -> Path:
    """Export userfactories' small conv net (input 1x3x20x20) with the legacy exporter (fast, one file)."""
    import torch
    from userfactories import good

    path = folder / "small.onnx"
    torch.onnx.export(good().eval(), (torch.randn(1, 3, 20, 20),), str(path), dynamo=False,
                      input_names=["input"], dynamic_axes={"input": {0: "batch"}})
    return path
