"""The machine's peaks, measured now (not datasheet numbers): matmul FLOP/s and copy bandwidth.

One measurement serves both users:

- the roofline (``archbench report``, archbench.bench.analyze.roofline): fp32 on the CPU at the records' thread
  count, cached in a run folder's peaks.json;
- ``archbench kernels`` (archbench.bench.kernels.run): bf16/fp16 on the GPU, timed with CUDA events, so a
  kernel's GB/s or TFLOP/s can be quoted as a % of what this device achieves.

Formulas (each also beside its line of code):

- peak FLOP/s = 2 n^3 / t for an (n, n) @ (n, n) matmul: n^3 multiply-adds, 2 FLOPs each;
- peak bytes/s = 2 B / t for ``dst.copy_(src)`` of a B-byte tensor: B read + B written, B far beyond any cache,
  so it is DRAM (or HBM) bandwidth.

t is the *best* of ``reps`` timed calls after warm-up, not the median: a peak is what the hardware can do, and on
a shared machine every disturbance only adds time.

Also here: the timers (``Timer``: ``(fn, warmup, repeats) -> samples in ms``) used by the peaks and by the kernel
microbenchmarks: ``wall_timer`` (perf_counter, CPU) and ``cuda_timer`` (CUDA events, L2 flushed before each call).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from archbench.bench.analyze.roofline import Peaks  # noqa: E402  (the data lives with the roofline maths)

Timer = Callable[[Callable[[], Any], int, int], list[float]]

# Precision names (as records carry them) -> torch dtype attribute.
TORCH_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}




# ----------------------------------------------------------------------------------------------------- timers


def wall_timer(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """perf_counter time of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, in ms (CPU work:
    nothing asynchronous to wait for)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def cuda_timer(flush_bytes: int = 256 << 20) -> Timer:
    """A Timer of CUDA work: a CUDA event pair around each call, read after one synchronize at the end, in ms.

    Before each call a ``flush_bytes`` buffer is zeroed (outside the events) so inputs are not served from the
    previous call's L2 (H100: 50 MiB), as ``triton.testing.do_bench`` does. Warm-up calls (JIT compile, cuDNN
    autotune, allocator) are not timed. ``flush_bytes=0``: no flush."""
    import torch

    cache = torch.empty(flush_bytes, dtype=torch.int8, device="cuda") if flush_bytes else None

    def timer(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for start, end in zip(starts, ends, strict=True):
            if cache is not None:
                cache.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in zip(starts, ends, strict=True)]

    return timer


def default_timer(device: str) -> Timer:
    """CUDA events on ``cuda``, perf_counter elsewhere."""
    return cuda_timer() if device == "cuda" else wall_timer


# ----------------------------------------------------------------------------------------------------- peaks


def measure_peaks(device: str = "cpu", threads: int = 0, matmul_n: int | None = None,
                  copy_mib: float | None = None, reps: int = 8, *, dtype: str = "fp32",
                  timer: Timer | None = None, warmup: int = 1) -> Peaks:
    """Measure ``device``'s peak ``dtype`` matmul FLOP/s and copy bandwidth with ``threads`` torch intra-op
    threads (0: all CPUs; torch's thread count is restored after).

    t = best of ``reps`` calls after ``warmup`` untimed ones, timed by ``timer`` (default: ``default_timer``).
    Defaults: n = 8192 and 1 GiB on CUDA; n = 1536 and 256 MiB on a CPU (2 x 1536^3 = 7.2 GFLOP per call,
    about 0.1 s at 70 GFLOP/s: the whole measurement takes about a second on a 2-core CPU)."""
    import torch

    from archbench.bench.env import environment

    cuda = device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("measure_peaks('cuda'): no CUDA device visible to torch")
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"measure_peaks: dtype must be one of {', '.join(TORCH_DTYPES)} (got {dtype!r})")
    n = matmul_n or (8192 if cuda else 1536)
    mib = copy_mib or (1024.0 if cuda else 256.0)  # far beyond any CPU's last-level cache or a GPU's L2
    threads = threads or os.cpu_count() or 1
    timer = timer or default_timer(device)
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        mm_s = _matmul_seconds(device, n, getattr(torch, TORCH_DTYPES[dtype]), timer, warmup, reps)
        numel = int(mib * 2**20) // 4
        cp_s = _copy_seconds(device, numel, timer, warmup, reps)
    finally:
        torch.set_num_threads(saved)
    env = environment()
    return Peaks(
        device=device, threads=threads,
        flops_per_s=2.0 * n**3 / mm_s,  # n^3 multiply-adds = 2 n^3 FLOPs
        bytes_per_s=2.0 * numel * 4 / cp_s,  # each fp32 element read once and written once: 2 x 4 bytes
        matmul_n=n, copy_mib=mib, hostname=env["hostname"], cpu_model=env["cpu_model"],
        gpu_name=env["gpu_name"] if cuda else "",
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        dtype=dtype,
    )


def _matmul_seconds(device: str, n: int, dtype: Any, timer: Timer, warmup: int, reps: int) -> float:
    """Best time in seconds of (n, n) @ (n, n) -> (n, n) into a preallocated output, random non-zero inputs."""
    import torch

    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    return min(timer(lambda: torch.mm(a, b, out=out), warmup, reps)) / 1e3


def _copy_seconds(device: str, numel: int, timer: Timer, warmup: int, reps: int) -> float:
    """Best time in seconds of ``dst.copy_(src)`` for ``numel`` fp32 elements. ``src`` is written once (ones) so
    every page is resident before timing; the matmul's tensors are already freed (a GPU holds both at once)."""
    import torch

    src = torch.ones(numel, device=device)
    dst = torch.empty_like(src)
    return min(timer(lambda: dst.copy_(src), warmup, reps)) / 1e3
