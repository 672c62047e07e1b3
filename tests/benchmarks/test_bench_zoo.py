"""Regression benchmarks of the default zoo (`archbench run`'s models): every model x runtime x precision.

One pytest-benchmark per cell, timed in this process by the ``archbench_bench`` fixture (archbench.bench.plugin.fixture:
warm-up, rotated random inputs, CUDA sync; params, MACs, p50..p99 and the environment in extra_info). Batch 1,
threads from --archbench-threads / ini archbench_threads (this repository: 1). A runtime that cannot run a precision (torch int8-dynamic on a model with no Linear) is a
skipped row with the reason. GPU rows run only where there is a CUDA device.
"""

from __future__ import annotations

import pytest
import torch

from archbench.bench.cli.main import DEFAULT_ZOO

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# (runtime, precision, device)
CELLS = [
    ("torch", "fp32", "cpu"),
    ("torch", "int8-dynamic", "cpu"),
    ("onnxruntime", "fp32", "cpu"),
    ("onnxruntime", "int8-dynamic", "cpu"),
    pytest.param("torch", "fp32", "cuda", marks=no_cuda),
    pytest.param("torch", "fp16", "cuda", marks=no_cuda),
    pytest.param("torch", "bf16", "cuda", marks=no_cuda),
]


@pytest.mark.parametrize(("runtime", "precision", "device"), CELLS, ids=lambda v: str(v))
@pytest.mark.parametrize("model", DEFAULT_ZOO)
def test_zoo(archbench_bench, model: str, runtime: str, precision: str, device: str) -> None:
    rec = archbench_bench.model(model, runtime=runtime, precision=precision, device=device)
    assert rec.status == "ok", rec.error
    assert rec.params and rec.size_mib and rec.size_mib > 0
    if not archbench_bench.benchmark.disabled:
        assert rec.n_samples and rec.latency_p50_ms and rec.latency_p50_ms > 0
