"""``archbench kernels``: microbenchmarks of the fused Triton kernels against PyTorch, with correctness checks.

On a CUDA GPU, for each kernel over a shape sweep it times

    rms_norm     triton | eager (fp32 reference) | eager F.rms_norm | torch.compile(reference)
    conv_bn_act  triton (BN folded) | eager conv->BN->ReLU | eager folded conv+bias->ReLU | torch.compile(unfused)
    attention    triton | eager (explicit fp32 softmax) | torch.compile(eager) | SDPA flash / efficient / cudnn /
                 math, each forced with torch.nn.attention.sdpa_kernel (an unavailable backend is a skipped row)

and reports the median time (CUDA events around each call, after warm-up, L2 flushed before each call, random
non-zero inputs), GB/s or TFLOP/s with the formula beside it, % of the device's peak measured in the same run
(copy bandwidth of a large ``y.copy_(x)``; bf16 matmul TFLOP/s of a large square matmul), and each output's max
abs error against the fp32 reference. Output: a table on stdout; ``--out DIR`` writes kernels.csv and
kernels.json (rows plus environment: GPU, torch, triton, CUDA versions, measured peaks).

Without a GPU it re-runs itself in a subprocess with TRITON_INTERPRET=1 (Triton fixes the interpreter mode
when it is first imported, so the variable must be set before that) and runs each kernel's correctness checks
on small odd shapes under the interpreter. Timings there mean nothing, and it says so.

Exit status: 0 when every Triton row is ok, 1 when one of ours failed or mismatched (baseline failures are
recorded, not fatal), 2 for a usage or environment error (one line on stderr).

Library use (the CLI wires these): ``add_arguments(parser)`` then ``run(args) -> int``. Run directly with
``python -m archbench.bench.measure.kernelbench [--quick]``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KERNELS = ("rms_norm", "conv_bn_act", "attention")
DTYPES = ("bf16", "fp16", "fp32")
CV_WARN = 0.10  # coefficient of variation above which a row is flagged as noisy
ROOT = Path(__file__).resolve().parents[1]
NO_GPU_NOTICE = (
    "NOTE: no CUDA GPU here. These are correctness checks of the Triton kernels under the Triton interpreter "
    "(TRITON_INTERPRET=1, numpy on the CPU, in a subprocess). Timings on this machine mean nothing; run "
    "`archbench kernels` on a GPU to benchmark."
)


class KernelBenchError(Exception):
    """A usage or environment problem: reported as one line, exit status 2."""


# ============================================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``archbench kernels`` (the lead's CLI calls this, then ``run``)."""
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS), metavar="NAME",
                        help=f"kernels to benchmark (default: all of {', '.join(KERNELS)})")
    parser.add_argument("--quick", action="store_true", help="a short sweep (two or four shapes per kernel)")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16",
                        help="input dtype on a GPU (default bf16; fp32 convs use TF32 as cuDNN does)")
    parser.add_argument("--backward", action="store_true",
                        help="time forward+backward for rms_norm and attention (conv_bn_act is inference-only)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile baselines (they add compile time per shape)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default 10)")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per row (default 50)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR", help="write kernels.csv and kernels.json")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (GPU) or the interpreter correctness checks (no GPU); returns the exit status."""
    try:
        if args.warmup < 0 or args.repeats < 1:
            raise KernelBenchError(f"--warmup must be >= 0 and --repeats >= 1 (got {args.warmup}, {args.repeats})")
        import torch

        if torch.cuda.is_available():
            return _run_gpu(args)
        return _run_cpu_checks(args)
    except KernelBenchError as exc:
        print(f"archbench kernels: error: {exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m archbench.bench.measure.kernelbench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


# ============================================================================================== records
@dataclass
class Row:
    """One (kernel, case, impl) measurement; field order is the CSV column order."""

    kernel: str
    case: str
    dtype: str
    direction: str  # "fwd" | "fwd+bwd"
    impl: str
    status: str = "ok"  # ok | failed | skipped
    error: str = ""
    median_ms: float | None = None
    min_ms: float | None = None
    mean_ms: float | None = None
    std_ms: float | None = None
    cv: float | None = None
    repeats: int = 0
    metric_unit: str = ""  # "GB/s" | "TFLOP/s"
    metric: float | None = None
    pct_of_peak: float | None = None
    formula: str = ""
    work: float | None = None  # bytes or FLOPs per call, the numerator of `metric`
    max_abs_err: float | None = None
    note: str = ""


@dataclass
class CheckRow:
    """One interpreter correctness check (no GPU); field order is the CSV column order."""

    kernel: str
    case: str
    dtype: str
    output: str  # y, dx, dw, o, dq, ...
    status: str  # ok | failed
    max_abs_err: float | None
    atol: float
    rtol: float
    wall_ms: float  # interpreter wall time: meaningless as a kernel timing
    error: str = ""


@dataclass(frozen=True)
class Stats:
    """Summary of timing samples in milliseconds (pure numbers; formatting is the report's job)."""

    median: float
    min: float
    mean: float
    std: float
    cv: float
    n: int


def summarize(samples_ms: Sequence[float]) -> Stats:
    if not samples_ms:
        raise ValueError("summarize: no samples")
    mean = statistics.fmean(samples_ms)
    std = statistics.stdev(samples_ms) if len(samples_ms) > 1 else 0.0
    return Stats(statistics.median(samples_ms), min(samples_ms), mean, std, std / mean if mean > 0 else 0.0,
                 len(samples_ms))


# ============================================================================================== environment
def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "archbench_version": _archbench_version(),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch_version": torch.__version__,
        "triton_version": _triton_version(),
        "cuda_version": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "gpu_name": None,
        "gpu_capability": None,
    }
    if torch.cuda.is_available():
        env["gpu_name"] = torch.cuda.get_device_name()
        env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    return env


def _archbench_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("archbench")
    except metadata.PackageNotFoundError:
        return None


def _triton_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("triton")  # no `import triton`: that would fix its interpreter mode
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


# ============================================================================================== timing
Timer = Callable[[Callable[[], Any], int, int], list[float]]


def cuda_timer(flush_bytes: int = 256 << 20) -> Timer:
    """Times ``fn`` with a CUDA event pair per call, in ms. Before each call a ``flush_bytes`` buffer is zeroed
    (outside the events) so inputs are not served from the previous call's L2 (H100: 50 MiB), as
    ``triton.testing.do_bench`` does. Warm-up calls (JIT compile, cuDNN autotune, allocator) are not timed."""
    import torch

    cache = torch.empty(flush_bytes, dtype=torch.int8, device="cuda")

    def timer(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for start, end in zip(starts, ends, strict=True):
            cache.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in zip(starts, ends, strict=True)]

    return timer


def wall_timer(fn: Callable[[], Any], warmup: int, repeats: int) -> list[float]:
    """perf_counter timing in ms (CPU tensors only: used by tests of the sweep plumbing)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


@dataclass(frozen=True)
class Peaks:
    copy_gbps: float  # y.copy_(x): bytes = 2 * numel * element_size (read x, write y)
    matmul_tflops: float  # bf16 (n x n) @ (n x n): FLOPs = 2 * n^3
    copy_desc: str
    matmul_desc: str


def measure_peaks(device: str, timer: Timer, copy_mib: int = 1024, matmul_n: int = 8192, repeats: int = 20) -> Peaks:
    """The device's achievable copy bandwidth and bf16 matmul throughput, measured now (not datasheet numbers)."""
    import torch

    numel = (copy_mib << 20) // 2
    x = torch.randn(numel, dtype=torch.float16, device=device)
    y = torch.empty_like(x)
    copy_ms = summarize(timer(lambda: y.copy_(x), 3, repeats)).median
    copy_gbps = 2 * numel * 2 / (copy_ms * 1e-3) / 1e9
    x = y = None  # free 2 GiB before the matmul
    a = torch.randn(matmul_n, matmul_n, dtype=torch.bfloat16, device=device)
    b = torch.randn(matmul_n, matmul_n, dtype=torch.bfloat16, device=device)
    mm_ms = summarize(timer(lambda: torch.matmul(a, b), 3, repeats)).median
    tflops = 2 * matmul_n**3 / (mm_ms * 1e-3) / 1e12
    return Peaks(copy_gbps, tflops,
                 f"y.copy_(x), {copy_mib} MiB fp16: bytes = 2*numel*2 -> {copy_gbps:.0f} GB/s",
                 f"bf16 matmul {matmul_n}^3: FLOPs = 2*n^3 -> {tflops:.0f} TFLOP/s")


# ============================================================================================== benchmark cases
@dataclass(frozen=True)
class Work:
    """What one call moves or computes; ``rate(ms)`` is the metric reported beside its formula."""

    unit: str  # "GB/s" (amount in bytes) | "TFLOP/s" (amount in FLOPs)
    amount: float
    formula: str

    def rate(self, ms: float) -> float:
        return self.amount / (ms * 1e-3) / (1e9 if self.unit == "GB/s" else 1e12)


@dataclass
class Impl:
    fn: Callable[[], Any]  # returns the forward output (for the error check)
    ours: bool = False  # one of our Triton kernels (its failure makes the exit status 1)
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # entered around timing
    skip_reason: str = ""  # non-empty: not run, a skipped row


@dataclass
class Bench:
    kernel: str
    case: str
    direction: str
    work: Work
    expected: Callable[[], Any]  # fp32 reference of the forward output
    impls: dict[str, Impl] = field(default_factory=dict)


_TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def _tdtype(name: str):
    import torch

    return getattr(torch, _TORCH_DTYPES[name])


def _compiled(fn: Callable) -> Callable:
    """torch.compile after a dynamo reset, so each shape compiles fresh instead of hitting the recompile limit."""
    import torch

    torch._dynamo.reset()
    return torch.compile(fn)


def _with_backward(forward: Callable[[], Any], leaves: Sequence[Any], grad_out: Any) -> Callable[[], Any]:
    """Forward + backward; grads are cleared each call so no accumulate kernel is timed."""

    def fn():
        for t in leaves:
            t.grad = None
        out = forward()
        out.backward(grad_out)
        return out.detach()

    return fn


def rms_norm_benches(quick: bool, dtype: str, device: str, backward: bool, compile_baselines: bool,
                     shapes: Sequence[tuple[int, int]] | None = None) -> Iterator[Bench]:
    import torch
    import torch.nn.functional as F

    from archbench.kernels.rms_norm import rms_norm, rms_norm_bytes, rms_norm_reference

    if shapes is None:  # (tokens M, hidden N): LLM-like; 5120 is not a power of two (masked tail)
        shapes = [(4096, 4096), (8192, 5120)] if quick else [
            (4096, 2048), (4096, 4096), (16384, 4096), (8192, 5120), (4096, 8192), (2048, 16384)]
    td = _tdtype(dtype)
    for m, n in shapes:
        x = torch.randn(m, n, device=device, dtype=td, requires_grad=backward)
        w = (1 + 0.1 * torch.randn(n, device=device)).to(td).requires_grad_(backward)
        size = x.element_size()
        if backward:
            work = Work("GB/s", rms_norm_bytes(m, n, size) + (3 * m * n + n) * size,
                        "fwd (2*M*N + N)*s + bwd (read x, dy, w; write dx: 3*M*N + N)*s")
        else:
            work = Work("GB/s", rms_norm_bytes(m, n, size), "(read M*N + N, write M*N) * elem_size")
        fns: dict[str, Callable[[], Any]] = {
            "triton": lambda x=x, w=w: rms_norm(x, w, 1e-6),
            "eager": lambda x=x, w=w: rms_norm_reference(x, w, 1e-6),
            "eager-F.rms_norm": lambda x=x, w=w, n=n: F.rms_norm(x, (n,), w, 1e-6),
        }
        if compile_baselines:
            compiled = _compiled(rms_norm_reference)
            fns["compile"] = lambda x=x, w=w, f=compiled: f(x, w, 1e-6)
        if backward:
            dy = torch.randn_like(x)
            fns = {k: _with_backward(f, (x, w), dy) for k, f in fns.items()}
        bench = Bench("rms_norm", f"M={m} N={n}", "fwd+bwd" if backward else "fwd", work,
                      lambda x=x, w=w: rms_norm_reference(x.detach().float(), w.detach().float(), 1e-6))
        bench.impls = {k: Impl(f, ours=k == "triton") for k, f in fns.items()}
        yield bench


def conv_benches(quick: bool, dtype: str, device: str, backward: bool, compile_baselines: bool,
                 shapes: Sequence[tuple[int, ...]] | None = None) -> Iterator[Bench]:
    import torch

    from archbench.kernels.conv_bn_relu import (
        conv_bn_act,
        conv_bn_act_reference,
        conv_bn_act_unfused_reference,
        conv_flops,
        conv_output_size,
        fold_bn,
    )

    if shapes is None:  # (N, C, H, W, K, kernel, stride, padding): ResNet-50-like layers at batch 32
        shapes = [(32, 64, 56, 56, 64, 3, 1, 1), (32, 256, 14, 14, 256, 3, 1, 1)] if quick else [
            (32, 3, 224, 224, 64, 7, 2, 3), (32, 64, 56, 56, 64, 3, 1, 1), (32, 256, 56, 56, 64, 1, 1, 0),
            (32, 128, 28, 28, 128, 3, 1, 1), (32, 256, 14, 14, 256, 3, 1, 1), (32, 512, 7, 7, 2048, 1, 1, 0)]
    td = _tdtype(dtype)
    for n, c, h, w, k, ks, s, p in shapes:
        # channels_last for every impl: the layout cuDNN prefers for fp16/bf16 and that makes our A-tile
        # loads contiguous along the reduction (channel) dim
        x = torch.randn(n, c, h, w, device=device, dtype=td).to(memory_format=torch.channels_last)
        cw = (torch.randn(k, c, ks, ks, device=device) / math.sqrt(c * ks * ks)).to(td)
        cb = None
        gamma, beta = 1 + 0.1 * torch.randn(k, device=device), 0.1 * torch.randn(k, device=device)
        mean, var = 0.1 * torch.randn(k, device=device), 0.5 + torch.rand(k, device=device)
        bn = [gamma, beta, mean, var]  # fp32 BN parameters with fp16/bf16 activations, as cuDNN expects
        fw, fb = fold_bn(cw, gamma, beta, mean, var, 1e-5, cb)
        oh, ow = conv_output_size(h, ks, s, p, 1), conv_output_size(w, ks, s, p, 1)
        work = Work("TFLOP/s", conv_flops(n, c, k, oh, ow, ks, ks), "2*N*OH*OW*K*C*KH*KW")

        def unfused(x=x, cw=cw, bn=bn, s=s, p=p):
            return conv_bn_act_unfused_reference(x, cw, None, *bn, 1e-5, stride=s, padding=p)

        fns: dict[str, Callable[[], Any]] = {
            "triton": lambda x=x, fw=fw, fb=fb, s=s, p=p: conv_bn_act(x, fw, fb, s, p, 1, "relu"),
            "eager-unfused": unfused,
            "eager-folded": lambda x=x, fw=fw, fb=fb, s=s, p=p: conv_bn_act_reference(x, fw, fb, s, p, 1, "relu"),
        }
        if compile_baselines:
            fns["compile-unfused"] = _compiled(unfused)
        bench = Bench("conv_bn_act", f"{n}x{c}x{h}x{w} k{k} {ks}x{ks}/{s}", "fwd", work,
                      lambda x=x, fw=fw, fb=fb, s=s, p=p: conv_bn_act_reference(
                          x.float(), fw.float(), fb.float(), s, p, 1, "relu"))
        bench.impls = {k_: Impl(f, ours=k_ == "triton") for k_, f in fns.items()}
        if backward:
            bench.case += " (fwd only: inference kernel)"
        yield bench


SCORES_LIMIT_BYTES = 8 << 30  # eager attention materializes (B, H, N, N) fp32 scores: skip it beyond this


def attention_benches(quick: bool, dtype: str, device: str, backward: bool, compile_baselines: bool,
                      shapes: Sequence[tuple[int, int, int, int, bool]] | None = None) -> Iterator[Bench]:
    import torch
    import torch.nn.functional as F

    from archbench.kernels.attention import attention, attention_flops, attention_reference

    if shapes is None:  # (B, H, N, d, causal): 16k tokens per batch, GPT-like heads
        seqs = [(4, 16, 1024, 64), (2, 16, 4096, 128)] if quick else [
            (16, 16, 1024, 64), (8, 16, 2048, 64), (4, 16, 4096, 64), (2, 16, 8192, 64),
            (16, 16, 1024, 128), (8, 16, 2048, 128), (4, 16, 4096, 128), (2, 16, 8192, 128)]
        shapes = [(*s, causal) for s in seqs for causal in (False, True)]
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backends = {f"sdpa-{name}": getattr(SDPBackend, attr, None) for name, attr in (
            ("flash", "FLASH_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"),
            ("math", "MATH"))}
    except ImportError:  # torch < 2.3
        sdpa_kernel, backends = None, {}
    td = _tdtype(dtype)
    for b, h, n, d, causal in shapes:
        q, k, v = (torch.randn(b, h, n, d, device=device, dtype=td, requires_grad=backward) for _ in range(3))
        flops = attention_flops(b, h, n, n, d, causal, backward=backward)
        formula = "4*B*H*N^2*d" + (" / 2 (causal)" if causal else "") + (" * 3.5 (fwd+bwd)" if backward else "")
        work = Work("TFLOP/s", flops, formula)
        fns: dict[str, Callable[[], Any]] = {
            "triton": lambda q=q, k=k, v=v, c=causal: attention(q, k, v, causal=c),
            "eager": lambda q=q, k=k, v=v, c=causal: attention_reference(q, k, v, causal=c),
        }
        if compile_baselines:
            compiled = _compiled(attention_reference)
            fns["compile"] = lambda q=q, k=k, v=v, c=causal, f=compiled: f(q, k, v, causal=c)
        for name in backends:
            fns[name] = lambda q=q, k=k, v=v, c=causal: F.scaled_dot_product_attention(q, k, v, is_causal=c)
        if backward:
            do = torch.randn_like(q)
            fns = {key: _with_backward(f, (q, k, v), do) for key, f in fns.items()}
        bench = Bench("attention", f"B={b} H={h} N={n} d={d}" + (" causal" if causal else ""),
                      "fwd+bwd" if backward else "fwd", work,
                      lambda q=q, k=k, v=v, c=causal: attention_reference(
                          q.detach().float(), k.detach().float(), v.detach().float(), causal=c))
        impls = {key: Impl(f, ours=key == "triton") for key, f in fns.items()}
        for name, backend in backends.items():
            if backend is None:
                impls[name].skip_reason = f"this torch has no SDPBackend for {name}"
            else:
                impls[name].context = lambda backend=backend: sdpa_kernel(backend)
        scores = b * h * n * n * 4
        if scores > SCORES_LIMIT_BYTES:
            for key in ("eager", "compile"):
                if key in impls:
                    impls[key].skip_reason = (f"(B,H,N,N) fp32 scores need {scores / 2**30:.0f} GiB "
                                              f"> {SCORES_LIMIT_BYTES >> 30} GiB")
        bench.impls = impls
        yield bench


BENCHES = {"rms_norm": rms_norm_benches, "conv_bn_act": conv_benches, "attention": attention_benches}


# ============================================================================================== measuring
def _max_abs_err(out: Any, expected: Any) -> float:
    return (out.detach().float() - expected.float()).abs().max().item()


def _is_unavailable(exc: BaseException) -> bool:
    """An SDPA backend that cannot run these inputs on this device (a skipped row, not a failure).
    CUDA says "No available kernel"; CPU builds say "No viable backend"."""
    return isinstance(exc, RuntimeError) and any(
        m in str(exc) for m in ("No available kernel", "No viable backend"))


def _first_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else ""


def measure_bench(bench: Bench, dtype: str, timer: Timer, warmup: int, repeats: int, peaks: Peaks | None,
                  tolerance: float) -> list[Row]:
    """Check then time every impl of one bench; each failure becomes a row with its error."""
    rows = []
    expected = bench.expected()
    for name, impl in bench.impls.items():
        row = Row(bench.kernel, bench.case, dtype, bench.direction, name, metric_unit=bench.work.unit,
                  formula=bench.work.formula, work=bench.work.amount)
        rows.append(row)
        if impl.skip_reason:
            row.status, row.error = "skipped", impl.skip_reason
            continue
        # SDPA explains why a forced backend cannot run in UserWarnings: keep the first as the row's reason
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with impl.context():
                    out = impl.fn()  # first call: JIT compile / autotune, then the correctness check
                    row.max_abs_err = _max_abs_err(out, expected)
                    del out
                    samples = timer(impl.fn, warmup, repeats)
            except Exception as exc:  # a failing impl is a row with status and error, never a crash
                row.status = "skipped" if _is_unavailable(exc) else "failed"
                row.error = f"{type(exc).__name__}: {_first_line(str(exc))}"
                if caught:
                    row.error += f" ({_first_line(str(caught[0].message))})"
                continue
        stats = summarize(samples)
        row.median_ms, row.min_ms, row.mean_ms, row.std_ms, row.cv, row.repeats = (
            stats.median, stats.min, stats.mean, stats.std, stats.cv, stats.n)
        row.metric = bench.work.rate(stats.median)
        if peaks is not None:
            peak = peaks.copy_gbps if bench.work.unit == "GB/s" else peaks.matmul_tflops
            row.pct_of_peak = 100 * row.metric / peak
        if stats.cv > CV_WARN:
            row.note = f"noisy: CV {stats.cv:.0%}"
        if row.max_abs_err is not None and row.max_abs_err > tolerance:
            row.note = (row.note + "; " if row.note else "") + f"max abs err > {tolerance:g}"
            if impl.ours:
                row.status, row.error = "failed", f"output mismatch: max abs err {row.max_abs_err:.3g}"
    return rows


# max abs error accepted for our kernel against the fp32 reference, by input dtype (outputs are O(1))
TOLERANCE = {"fp32": 2e-2, "fp16": 2e-2, "bf16": 1e-1}  # fp32 is loose: conv/attention may use TF32


def run_sweep(kernels: Sequence[str], quick: bool, dtype: str, device: str, timer: Timer, warmup: int,
              repeats: int, backward: bool, compile_baselines: bool, peaks: Peaks | None,
              shapes: dict[str, Sequence] | None = None, progress: Callable[[str], None] | None = None) -> list[Row]:
    import torch

    rows: list[Row] = []
    for kernel in kernels:
        for bench in BENCHES[kernel](quick, dtype, device, backward, compile_baselines,
                                     (shapes or {}).get(kernel)):
            if progress:
                progress(f"{kernel} {bench.case}")
            rows += measure_bench(bench, dtype, timer, warmup, repeats, peaks, TOLERANCE[dtype])
            del bench
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


# ============================================================================================== GPU path
def _run_gpu(args: argparse.Namespace) -> int:
    from archbench.kernels._common import HAS_TRITON, interpreting

    if not HAS_TRITON:
        raise KernelBenchError("triton is not installed; `pip install triton` (Linux x86_64) to benchmark kernels")
    if interpreting():
        raise KernelBenchError("TRITON_INTERPRET is set: the kernels would run in the CPU interpreter; unset it "
                               "to benchmark on the GPU")
    env = environment()
    timer = cuda_timer()
    peaks = measure_peaks("cuda", timer)
    env["peaks"] = dataclasses.asdict(peaks)
    print(f"archbench kernels on {env['gpu_name']} (compute capability {env['gpu_capability']}), "
          f"torch {env['torch_version']}, "
          f"triton {env['triton_version']}, dtype {args.dtype}")
    print(f"measured peaks: {peaks.copy_desc}; {peaks.matmul_desc}")
    rows = run_sweep(args.kernels, args.quick, args.dtype, "cuda", timer, args.warmup, args.repeats,
                     args.backward, args.compile, peaks,
                     progress=lambda s: print(f"  ... {s}", file=sys.stderr, flush=True))
    print(format_rows(rows))
    if args.out is not None:
        write_outputs(args.out, rows, env, Row)
    failed = [r for r in rows if r.impl == "triton" and r.status == "failed"]
    for r in failed:
        print(f"FAILED: {r.kernel} {r.case} triton: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def format_rows(rows: Sequence[Row]) -> str:
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


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def write_outputs(out_dir: Path, rows: Sequence[Any], env: dict[str, Any], row_type: type) -> None:
    """kernels.csv (one row per record, provenance columns appended) and kernels.json (environment + rows)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fields = [f.name for f in dataclasses.fields(row_type)]
        provenance = ["gpu_name", "torch_version", "triton_version", "timestamp"]
        with open(out_dir / "kernels.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(fields + provenance)
            for r in rows:
                record = dataclasses.asdict(r)
                writer.writerow([record[f] for f in fields] + [env.get(p) for p in provenance])
        with open(out_dir / "kernels.json", "w") as fh:
            json.dump({"environment": env, "rows": [dataclasses.asdict(r) for r in rows]}, fh, indent=2)
    except OSError as exc:
        raise KernelBenchError(f"cannot write results to {out_dir}: {exc}") from exc
    print(f"wrote {out_dir / 'kernels.csv'} and {out_dir / 'kernels.json'}")


# ============================================================================================== no-GPU path
def _run_cpu_checks(args: argparse.Namespace) -> int:
    from archbench.kernels._common import HAS_TRITON

    if not HAS_TRITON:
        raise KernelBenchError("no CUDA GPU and triton is not installed: nothing to check or benchmark")
    print(NO_GPU_NOTICE)
    # Re-exec: Triton fixes interpreter mode at its first import, so set TRITON_INTERPRET=1 in a fresh process.
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from archbench.bench.measure.kernelbench import interpreter_checks; "
            "print(json.dumps(interpreter_checks(sys.argv[2].split(','), sys.argv[3] == '1')))")
    child_env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT), ",".join(args.kernels), "1" if args.quick else "0"],
                          env=child_env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KernelBenchError(f"interpreter check process failed (exit {proc.returncode}): {last}")
    rows = [CheckRow(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]

    from tabulate import tabulate

    print(tabulate([[r.kernel, r.case, r.dtype, r.output, r.status, _fmt(r.max_abs_err, ".2e"), f"{r.atol:g}",
                     f"{r.wall_ms:.0f}", r.error] for r in rows],
                   headers=["kernel", "case", "dtype", "output", "status", "max abs err", "atol",
                            "interp. wall ms (meaningless)", "error"], disable_numparse=True))
    failed = [r for r in rows if r.status != "ok"]
    print(f"{len(rows) - len(failed)}/{len(rows)} interpreter checks passed. {NO_GPU_NOTICE.split('. ', 1)[1]}")
    if args.out is not None:
        env = environment()
        env["mode"] = "interpreter-correctness-check (no GPU; timings meaningless)"
        write_outputs(args.out, rows, env, CheckRow)
    return 1 if failed else 0


def _check_cases(kernels: Sequence[str], quick: bool) -> Iterator[tuple[str, str, Callable]]:
    """(kernel, case label, fn(dtype) -> {output name: (got, expected)}) on small odd shapes."""
    import torch

    from archbench.kernels.attention import attention, attention_reference
    from archbench.kernels.conv_bn_relu import conv_bn_act, conv_bn_act_unfused_reference, fold_bn
    from archbench.kernels.rms_norm import rms_norm, rms_norm_reference

    def leaves(*shapes, dtype, seed):
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(*s, generator=g).to(dtype).requires_grad_() for s in shapes]

    def grads_vs_reference(fn, ref, inputs, names, grad_seed):
        out = fn(*inputs)
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.dtype)
        out.backward(dout)
        ref_in = [t.detach().float().requires_grad_() for t in inputs]
        ref_out = ref(*ref_in)
        ref_out.backward(dout.float())
        result = {names[0]: (out, ref_out)}
        for name, t, r in zip(names[1:], inputs, ref_in, strict=True):
            result[name] = (t.grad, r.grad)
        return result

    if "rms_norm" in kernels:
        for m, n in [(5, 123)] if quick else [(5, 123), (3, 1000)]:
            yield "rms_norm", f"M={m} N={n} fwd+bwd", lambda dt, m=m, n=n: grads_vs_reference(
                lambda x, w: rms_norm(x, w), lambda x, w: rms_norm_reference(x, w),
                leaves((m, n), (n,), dtype=dt, seed=0), ["y", "dx", "dw"], 1)
    if "conv_bn_act" in kernels:
        convs = [(2, 3, 9, 11, 5, 3, 1, 1, 1)] if quick else [(2, 3, 9, 11, 5, 3, 1, 1, 1),
                                                              (1, 20, 7, 6, 17, 1, 2, 0, 1),
                                                              (2, 5, 10, 9, 7, 3, 2, 2, 2)]
        for n, c, h, w, k, ks, s, p, d in convs:
            def conv_check(dt, n=n, c=c, h=h, w=w, k=k, ks=ks, s=s, p=p, d=d):
                g = torch.Generator().manual_seed(2)
                x = torch.randn(n, c, h, w, generator=g)
                cw, cb = torch.randn(k, c, ks, ks, generator=g), torch.randn(k, generator=g)
                gamma, beta = 1 + 0.2 * torch.randn(k, generator=g), 0.2 * torch.randn(k, generator=g)
                mean, var = 0.2 * torch.randn(k, generator=g), 0.5 + torch.rand(k, generator=g)
                with torch.no_grad():
                    want = conv_bn_act_unfused_reference(x, cw, cb, gamma, beta, mean, var, 1e-5, s, p, d)
                    fw, fb = fold_bn(cw, gamma, beta, mean, var, 1e-5, cb)
                    got = conv_bn_act(x.to(dt), fw.to(dt), fb, s, p, d, "relu")
                return {"y": (got, want)}

            yield "conv_bn_act", f"{n}x{c}x{h}x{w} k{k} {ks}x{ks} s{s} p{p} d{d}", conv_check
    if "attention" in kernels:
        attn = [(1, 2, 37, 37, 64, True)] if quick else [(1, 2, 37, 37, 64, False), (1, 2, 37, 37, 64, True),
                                                         (2, 1, 20, 45, 48, False)]
        for b, h, nq, nk, d, causal in attn:
            yield "attention", f"B={b} H={h} Nq={nq} Nk={nk} d={d}{' causal' if causal else ''} fwd+bwd", (
                lambda dt, b=b, h=h, nq=nq, nk=nk, d=d, causal=causal: grads_vs_reference(
                    lambda q, k, v: attention(q, k, v, causal=causal),
                    lambda q, k, v: attention_reference(q, k, v, causal=causal),
                    leaves((b, h, nq, d), (b, h, nk, d), (b, h, nk, d), dtype=dt, seed=3),
                    ["o", "dq", "dk", "dv"], 4))


CHECK_TOLERANCE = {"fp32": (1e-4, 1e-4), "fp16": (1e-2, 1e-2)}  # (atol, rtol) against the fp32 reference


def interpreter_checks(kernels: Sequence[str], quick: bool) -> list[dict[str, Any]]:
    """Run in the TRITON_INTERPRET=1 child: each kernel on small odd shapes, fp32 and fp16, vs its reference."""
    import torch

    from archbench.kernels._common import interpreting

    if not interpreting():
        raise RuntimeError("interpreter_checks must run with TRITON_INTERPRET=1 set before triton is imported")
    rows = []
    for kernel, case, check in _check_cases(kernels, quick):
        for dt_name, dt in (("fp32", torch.float32), ("fp16", torch.float16)):
            atol, rtol = CHECK_TOLERANCE[dt_name]
            t0 = time.perf_counter()
            try:
                pairs = check(dt)
            except Exception as exc:  # recorded as a failed check row; the parent sets the exit status
                rows.append(CheckRow(kernel, case, dt_name, "*", "failed", None, atol, rtol,
                                     (time.perf_counter() - t0) * 1e3, f"{type(exc).__name__}: {exc}"))
                continue
            wall = (time.perf_counter() - t0) * 1e3
            for output, (got, want) in pairs.items():
                err = (got.detach().float() - want.detach().float()).abs()
                # dw-like outputs sum over rows: scale atol with the magnitude of the expected values
                ok = bool((err <= atol + rtol * want.detach().float().abs()).all())
                flat = int(err.argmax())
                idx = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))
                rows.append(CheckRow(kernel, case, dt_name, output, "ok" if ok else "failed", err.max().item(),
                                     atol, rtol, wall, "" if ok else f"max abs err at index {idx}"))
    return [dataclasses.asdict(r) for r in rows]


if __name__ == "__main__":
    sys.exit(main())


EPILOG = """examples:
  archbench kernels --quick                       short sweep (on a GPU); interpreter correctness checks on CPU
  archbench kernels --kernels attention --backward --out results/kernels
  archbench kernels --dtype fp16 --no-compile

On a machine without a CUDA GPU the kernels run under the Triton interpreter for correctness only:
timings there mean nothing. exit codes: 0 ok, 1 a Triton kernel failed or mismatched, 2 bad input"""
