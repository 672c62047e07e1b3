"""``archbench kernels``: microbenchmarks of the fused Triton kernels against PyTorch, with correctness checks.

On a CUDA GPU, for each kernel over a shape sweep (defaults, ``--shapes``, or ``--review``'s targets), forward
and forward+backward in one run, it times

    rms_norm     triton | eager (fp32 reference) | eager F.rms_norm | torch.compile(reference)
    conv_bn_act  triton (BN folded) | eager conv->BN->ReLU | eager folded conv+bias->ReLU | cuDNN conv alone |
                 torch.compile(unfused)                                   (cuDNN with torch.backends.cudnn.benchmark)
    attention    triton | eager (explicit fp32 softmax) | torch.compile(eager) | SDPA flash / efficient / cudnn /
                 math, each forced with torch.nn.attention.sdpa_kernel (an unavailable backend is a skipped row)

in interleaved rounds (archbench.bench.kernels.sweep: CUDA events around each call, L2 flushed before
each call, random non-zero inputs) and reports the median with a 95% interval, GB/s or TFLOP/s with the formula,
% of the device's peak measured in the same run (archbench.bench.machine.peaks: copy bandwidth of a large
``dst.copy_(src)``; matmul TFLOP/s of a large square matmul in the run's dtype, bf16 for an fp32 run), triton's
speed-up over each baseline (paired per round, with its interval) and each output's max abs error against the
fp32 reference. ``--budget-s`` bounds the whole sweep (blocks shrink, then torch.compile baselines and finally
benches are skipped, each with the reason). Output: a table on stdout; ``--out DIR`` writes kernels.md,
kernels.csv and kernels.json (rows plus environment: GPU, driver, torch, triton, CUDA, cuDNN versions, peaks).

Without a GPU it re-runs itself in a subprocess with TRITON_INTERPRET=1 (Triton fixes the interpreter mode
when it is first imported, so the variable must be set before that) and runs each kernel's correctness checks
on small odd shapes (or ``--shapes``) under the interpreter. Timings there mean nothing, and it says so.
``--device cpu`` instead runs the GPU path's timing plumbing on the CPU, where the "triton" rows are the kernels'
torch fallbacks: a check of the harness, not of the kernels.

Exit status: 0 when every Triton row is ok, 1 when one of ours failed or mismatched (baseline failures are
recorded, not fatal), 2 for a usage or environment error (one line on stderr).

``run(KernelSpec) -> int`` is the entry; the command's flags are archbench.bench.cli.kernels. The parts:

    kernels.cases    shapes (defaults, review, --shapes parsing), the benches and their work (plan, build_bench)
    kernels.sweep    checking and timing them into Rows (measure_bench, run_sweep, TimeBudget)
    kernels.checks   the interpreter correctness checks (interpreter_checks, CheckRow)
    kernels.output   environment block, tables, kernels.md / kernels.csv / kernels.json
    machine.peaks    the timers and the device's measured peaks (shared with the roofline)
    kernels.review   the one-command GPU review: native tests, this review, targets, results/kernels/
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from archbench.bench.kernels.cases import format_shape

DTYPES = ("bf16", "fp16", "fp32")
REVIEW_BUDGET_S = 420.0  # --review's default budget: the sweep plus peaks and start-up inside ~8 minutes
NO_GPU_NOTICE = (
    "NOTE: no CUDA GPU here. These are correctness checks of the Triton kernels under the Triton interpreter "
    "(TRITON_INTERPRET=1, numpy on the CPU, in a subprocess). Timings on this machine mean nothing; run "
    "`archbench kernels` on a GPU to benchmark."
)
CPU_TIMING_NOTICE = (
    "NOTE: --device cpu times the harness on the CPU: the \"triton\" rows are the kernels' torch fallbacks (Triton "
    "runs on CUDA only), so these numbers say nothing about the kernels. It checks the plumbing: shapes, rounds, "
    "speed-ups, budget, outputs."
)

class KernelBenchError(Exception):
    """A usage or environment problem: reported as one line, exit status 2."""


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """What ``archbench kernels`` measures, from its arguments."""

    kernels: tuple[str, ...]
    shapes: dict[str, list[tuple]]
    quick: bool
    directions: tuple[str, ...]
    budget_s: float | None
    dtype: str = "bf16"
    compile: bool = True  # time the torch.compile baselines
    warmup: int = 10
    repeats: int = 60
    rounds: int = 6
    device: str = "auto"  # auto | cuda | cpu
    out: Path | None = None
    review: bool = False


def run(spec: KernelSpec) -> int:
    """Run the benchmark (GPU) or the interpreter correctness checks (no GPU); the exit status."""
    try:
        import torch

        device = spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "interpreter"
        if device == "cuda" and not torch.cuda.is_available():
            raise KernelBenchError("--device cuda: no CUDA device visible to torch")
        if device == "interpreter":
            return _run_cpu_checks(spec)
        return _run_timing(spec, device)
    except KernelBenchError as exc:
        print(f"archbench kernels: error: {exc}", file=sys.stderr)
        return 2


def format_plan(spec: KernelSpec) -> str:
    """The benches a run would measure, in order, with the budget."""
    from archbench.bench.kernels.cases import format_shape, plan

    specs = plan(spec.kernels, spec.shapes, spec.quick, spec.directions)
    budget = f"budget {spec.budget_s:g} s" if spec.budget_s else "no time budget"
    lines = [f"{len(specs)} benches, {budget}:"]
    lines += [f"  {i + 1:>3}. {s.kernel:<12} {format_shape(s.kernel, s.shape):<24} {s.direction}"
              for i, s in enumerate(specs)]
    return "\n".join(lines)


# Matmul dtype of the compute peak (the denominator of a TFLOP/s row's % of peak): the run's half-precision dtype,
# and bf16 for an fp32 run (the tensor-core peak, as this command has always quoted; fp32 convs may use TF32).
PEAK_DTYPE = {"bf16": "bf16", "fp16": "fp16", "fp32": "bf16"}


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool = True) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` set for the block (cuDNN picks the fastest conv algorithm per shape on
    the first call, which the sweep's first call absorbs), restored after."""
    import torch

    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


def _run_timing(spec: KernelSpec, device: str) -> int:
    from archbench.bench.kernels.cases import plan
    from archbench.bench.kernels.output import describe_peaks, format_rows, kernel_environment
    from archbench.bench.kernels.sweep import Row, run_sweep
    from archbench.bench.machine.peaks import cuda_timer, measure_peaks, wall_timer
    from archbench.kernels._common import HAS_TRITON, interpreting

    if device == "cuda":
        if not HAS_TRITON:
            raise KernelBenchError("triton is not installed; `pip install triton` (Linux x86_64) to benchmark "
                                   "kernels")
        if interpreting():
            raise KernelBenchError("TRITON_INTERPRET is set: the kernels would run in the CPU interpreter; unset "
                                   "it to benchmark on the GPU")
        timer = cuda_timer()
        peaks = measure_peaks("cuda", dtype=PEAK_DTYPE[spec.dtype], timer=timer, reps=20, warmup=3)
    else:
        print(CPU_TIMING_NOTICE)
        if interpreting():
            raise KernelBenchError("--device cpu times the torch fallbacks: unset TRITON_INTERPRET")
        timer = wall_timer
        peaks = measure_peaks("cpu", dtype="fp32", timer=timer, reps=3, matmul_n=512, copy_mib=64)
    env = kernel_environment(peaks=dataclasses.asdict(peaks), dtype=spec.dtype, cudnn_benchmark=True,
                             budget_s=spec.budget_s, rounds=spec.rounds,
                             mode="benchmark" if device == "cuda" else "cpu-plumbing-check (triton rows are "
                                                                       "torch fallbacks)")
    specs = plan(spec.kernels, spec.shapes, spec.quick, spec.directions)
    budget = f", budget {spec.budget_s:g} s" if spec.budget_s else ""
    where = (f"{env['gpu_name']} (compute capability {env['gpu_capability']}, driver {env['gpu_driver']})"
             if device == "cuda" else env["cpu_model"])
    print(f"archbench kernels on {where}, torch {env['torch_version']}, triton {env['triton_version']}, dtype "
          f"{spec.dtype}: {len(specs)} benches, {spec.rounds} rounds{budget}")
    print(f"measured peaks: {describe_peaks(peaks)}")
    t0 = time.monotonic()
    with cudnn_benchmark(True):
        rows = run_sweep(specs, spec.dtype, device, timer, spec.warmup, spec.repeats, spec.compile, peaks,
                         rounds=spec.rounds, budget_s=spec.budget_s,
                         progress=lambda s: print(f"  ... {s}", file=sys.stderr, flush=True))
    print(format_rows(rows))
    print(f"sweep: {time.monotonic() - t0:.0f} s" + (f" of a {spec.budget_s:g} s budget" if spec.budget_s else ""))
    if spec.out is not None:
        _write(spec.out, rows, env, Row)
    failed = [r for r in rows if r.impl == "triton" and r.status == "failed"]
    for r in failed:
        print(f"FAILED: {r.kernel} {r.case} {r.direction} triton: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def _run_cpu_checks(spec: KernelSpec) -> int:
    from archbench.bench.kernels.checks import CheckRow
    from archbench.bench.kernels.output import format_checks, kernel_environment
    from archbench.kernels._common import HAS_TRITON

    if not HAS_TRITON:
        raise KernelBenchError("no CUDA GPU and triton is not installed: nothing to check or benchmark")
    print(NO_GPU_NOTICE)
    # Re-exec: Triton fixes interpreter mode at its first import, so set TRITON_INTERPRET=1 in a fresh process.
    code = ("import json, sys; from archbench.bench.kernels.checks import interpreter_checks; "
            "print(json.dumps(interpreter_checks(sys.argv[1].split(','), sys.argv[2] == '1', "
            "json.loads(sys.argv[3]) or None)))")
    # only --shapes reach the interpreter: the review's and the default sweeps' GPU-sized shapes would take hours
    shapes = {} if spec.review else spec.shapes
    for kernel, kernel_shapes in shapes.items():
        for shape in kernel_shapes:
            if _interpreter_work(kernel, shape) > INTERPRETER_MAX_WORK:
                raise KernelBenchError(
                    f"{kernel} {format_shape(kernel, shape)} is too large for the Triton interpreter (numpy, ~1 ms per "
                    f"program; this would take hours): without a GPU give small shapes, e.g. rms_norm=5x300 "
                    f"attention=1x2x64x32:causal conv_bn_act=2x8x9x9x16x3")
    child_env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code, ",".join(spec.kernels), "1" if spec.quick else "0",
                           json.dumps(shapes)], env=child_env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KernelBenchError(f"interpreter check process failed (exit {proc.returncode}): {last}")
    rows = [CheckRow(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]
    print(format_checks(rows))
    failed = [r for r in rows if r.status != "ok"]
    print(f"{len(rows) - len(failed)}/{len(rows)} interpreter checks passed. {NO_GPU_NOTICE.split('. ', 1)[1]}")
    if spec.out is not None:
        env = kernel_environment(mode="interpreter-correctness-check (no GPU; timings meaningless)")
        _write(spec.out, rows, env, CheckRow)
    return 1 if failed else 0


INTERPRETER_MAX_WORK = 1 << 24  # multiply-adds (or elements for rms_norm) per check: seconds under the interpreter


def _interpreter_work(kernel: str, shape: tuple) -> int:
    """Rough work of one interpreter check: elements (rms_norm) or multiply-adds (conv, attention)."""
    if kernel == "rms_norm":
        return shape[0] * shape[1]
    if kernel == "conv_bn_act":
        n, c, h, w, k, ks = shape[:6]
        return n * c * h * w * k * ks * ks
    b, h, n, d = shape[:4]
    return b * h * n * n * d


def _write(out_dir: Path, rows: Sequence[Any], env: dict[str, Any], row_type: type) -> None:
    from archbench.bench.kernels.output import write_outputs

    try:
        paths = write_outputs(out_dir, rows, env, row_type)
    except OSError as exc:
        raise KernelBenchError(f"cannot write results to {out_dir}: {exc}") from exc
    print(f"wrote {', '.join(str(p) for p in paths)}")

