"""Regression benchmarks of the kernels: the torch references everywhere, the Triton kernels on CUDA only.

The references come from kernels/ (never copied). On CPU the public entry points (``rms_norm``, ``conv_bn_act``,
``attention``) fall back to those same references, so the ``triton`` rows run only where Triton compiles for a
GPU. CPU and CUDA rows use their own shapes (below); four random input sets are rotated.
Derived metrics, beside their formulas: achieved GFLOP/s = flops / p50 (the fixture, from ``flops``);
GB/s = bytes / p50 for the memory-bound RMSNorm (below).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from archbench.kernels.attention import attention, attention_flops, attention_reference
from archbench.kernels.conv_bn_relu import (
    conv_bn_act,
    conv_bn_act_reference,
    conv_flops,
    conv_output_size,
    fold_bn,
)
from archbench.kernels.rms_norm import rms_norm, rms_norm_bytes, rms_norm_reference

no_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SETS = 4  # input sets rotated through the timed calls


def _cases(cpu_shapes: list[Any], cuda_shapes: list[Any], label: Callable[[Any], str]) -> list[Any]:
    """(impl, device, shape) rows: the reference on CPU; reference and Triton on CUDA (skipped without one).
    Ids read ``reference-cpu-<shape>``, ``triton-cuda-<shape>``."""
    def row(impl: str, device: str, shape: Any) -> Any:
        marks = (no_cuda, pytest.mark.gpu) if device == "cuda" else ()  # `-m gpu`: the kernel review's selection
        return pytest.param(impl, device, shape, id="-".join(p for p in (impl, device, label(shape)) if p), marks=marks)

    return [row("reference", "cpu", sh) for sh in cpu_shapes] + [
        row(impl, "cuda", sh) for impl in ("reference", "triton") for sh in cuda_shapes]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# CPU: tensors of about 1 MiB. The references' fp32 temporaries are as large as the input, and at several MiB their
# time depends on the allocator's history (fresh mmap'd pages fault in): on the dev VM 2048 x 1024 (8 MiB) took
# 2.4 ms in one process and 10.4 ms in the next, and 4 MiB shapes swung 2x in `min` from run to run.
# CUDA: LLM-like (tokens M, hidden N), as `archbench kernels --quick`; 5120 is not a power of two (masked tail).
RMS_CASES = _cases([(256, 1024), (300, 700)], [(4096, 4096), (8192, 5120)], lambda s: f"{s[0]}-{s[1]}")


@pytest.mark.parametrize(("impl", "device", "shape"), RMS_CASES)
def test_rms_norm(archbench_bench, impl: str, device: str, shape: tuple[int, int]) -> None:
    m, n = shape
    w = (1 + 0.1 * torch.randn(n, generator=_gen(99))).to(device)
    sets = [torch.randn(m, n, generator=_gen(s)).to(device) for s in range(SETS)]
    fn: Callable[[Any], Any] = (lambda x: rms_norm_reference(x, w)) if impl == "reference" else (lambda x: rms_norm(x, w))
    moved = rms_norm_bytes(m, n, 4)  # (read M*N + N, write M*N) * 4 bytes, fp32
    rec = archbench_bench(fn, sets, name=f"rms_norm M={m} N={n}", runtime=impl, precision="fp32",
                          extra={"bytes": moved, "bytes_formula": "(read M*N + N, write M*N) * 4"})
    if rec.latency_p50_ms:
        info = archbench_bench.benchmark.extra_info["archbench"]
        info["gb_per_s"] = moved / (rec.latency_p50_ms * 1e-3) / 1e9  # bytes / p50 seconds / 1e9


# (N, C, H, W, K, kernel, stride, padding). CPU: a ResNet stage-1 3x3 layer and a strided stem-like 7x7 at batch 1;
# CUDA: ResNet-50-like layers at batch 32, as `archbench kernels --quick`.
CONV_CASES = _cases([(1, 64, 56, 56, 64, 3, 1, 1), (1, 3, 224, 224, 64, 7, 2, 3)],
                    [(32, 64, 56, 56, 64, 3, 1, 1), (32, 256, 14, 14, 256, 3, 1, 1)],
                    lambda s: "{}x{}x{}x{}-k{}-{}x{}s{}".format(*s[:6], s[5], s[6]))


@pytest.mark.parametrize(("impl", "device", "shape"), CONV_CASES)
def test_conv_bn_act(archbench_bench, impl: str, device: str, shape: tuple[int, ...]) -> None:
    n, c, h, w, k, ks, s, p = shape
    g = _gen(99)
    cw = torch.randn(k, c, ks, ks, generator=g) / math.sqrt(c * ks * ks)
    gamma, beta = 1 + 0.1 * torch.randn(k, generator=g), 0.1 * torch.randn(k, generator=g)
    mean, var = 0.1 * torch.randn(k, generator=g), 0.5 + torch.rand(k, generator=g)
    fw, fb = (t.to(device) for t in fold_bn(cw, gamma, beta, mean, var, 1e-5))
    sets = [torch.randn(n, c, h, w, generator=_gen(i)).to(device) for i in range(SETS)]
    f = conv_bn_act_reference if impl == "reference" else conv_bn_act
    oh, ow = conv_output_size(h, ks, s, p, 1), conv_output_size(w, ks, s, p, 1)
    archbench_bench(lambda x: f(x, fw, fb, s, p, 1, "relu"), sets, name=f"conv_bn_act {n}x{c}x{h}x{w} k{k} {ks}x{ks}/{s}",
                    runtime=impl, precision="fp32", batch=n, flops=conv_flops(n, c, k, oh, ow, ks, ks),
                    extra={"flops_formula": "2*N*OH*OW*K*C*KH*KW"})


# (B, H, N, d). CPU: (B, H, N, N) fp32 scores of 1 MiB (see RMS_CASES on larger temporaries); CUDA: GPT-like heads.
ATTENTION_CASES = _cases([(1, 4, 256, 64)], [(4, 16, 1024, 64)], lambda s: "")


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(("impl", "device", "shape"), ATTENTION_CASES)
def test_attention(archbench_bench, impl: str, device: str, shape: tuple[int, int, int, int], causal: bool) -> None:
    b, h, n, d = shape
    sets = [tuple(torch.randn(b, h, n, d, generator=_gen(3 * i + j)).to(device) for j in range(3)) for i in range(SETS)]
    f = attention_reference if impl == "reference" else attention
    archbench_bench(lambda qkv: f(*qkv, causal=causal), sets, name=f"attention B={b} H={h} N={n} d={d}" +
                    (" causal" if causal else ""), runtime=impl, precision="fp32", batch=b,
                    flops=attention_flops(b, h, n, n, d, causal),
                    extra={"flops_formula": "4*B*H*N^2*d" + (" / 2 (causal)" if causal else "")})
