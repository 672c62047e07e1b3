"""``archbench kernels``: microbenchmarks of the fused Triton kernels against PyTorch, with correctness checks.

On a CUDA GPU, for each kernel over a shape sweep it times

    rms_norm     triton | eager (fp32 reference) | eager F.rms_norm | torch.compile(reference)
    conv_bn_act  triton (BN folded) | eager conv->BN->ReLU | eager folded conv+bias->ReLU | torch.compile(unfused)
    attention    triton | eager (explicit fp32 softmax) | torch.compile(eager) | SDPA flash / efficient / cudnn /
                 math, each forced with torch.nn.attention.sdpa_kernel (an unavailable backend is a skipped row)

and reports the median time (CUDA events around each call, after warm-up, L2 flushed before each call, random
non-zero inputs), GB/s or TFLOP/s with the formula beside it, % of the device's peak measured in the same run
(archbench.bench.measure.peaks: copy bandwidth of a large ``dst.copy_(src)``; matmul TFLOP/s of a large square
matmul in the run's dtype, bf16 for an fp32 run), and each output's max abs error against the fp32 reference.
Output: a table on stdout; ``--out DIR`` writes kernels.csv and kernels.json (rows plus environment: GPU,
torch, triton, CUDA versions, measured peaks).

Without a GPU it re-runs itself in a subprocess with TRITON_INTERPRET=1 (Triton fixes the interpreter mode
when it is first imported, so the variable must be set before that) and runs each kernel's correctness checks
on small odd shapes under the interpreter. Timings there mean nothing, and it says so.

Exit status: 0 when every Triton row is ok, 1 when one of ours failed or mismatched (baseline failures are
recorded, not fatal), 2 for a usage or environment error (one line on stderr).

This module is the CLI wiring: ``add_arguments(parser)`` then ``run(args) -> int``; run directly with
``python -m archbench.bench.measure.kernelbench [--quick]``. The parts, for library use:

    kernelbench_cases   the benches per kernel: shapes, implementations, work and formula (Work, Bench, BENCHES)
    kernelbench_sweep   checking and timing them into Rows (measure_bench, run_sweep, TOLERANCE)
    kernelbench_checks  the interpreter correctness checks (interpreter_checks, CheckRow)
    kernelbench_output  environment block, tables, kernels.csv / kernels.json
    peaks               the timers and the device's measured peaks (shared with the roofline)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archbench.bench.measure.kernelbench_cases import KERNELS

DTYPES = ("bf16", "fp16", "fp32")
NO_GPU_NOTICE = (
    "NOTE: no CUDA GPU here. These are correctness checks of the Triton kernels under the Triton interpreter "
    "(TRITON_INTERPRET=1, numpy on the CPU, in a subprocess). Timings on this machine mean nothing; run "
    "`archbench kernels` on a GPU to benchmark."
)

EPILOG = """examples:
  archbench kernels --quick                       short sweep (on a GPU); interpreter correctness checks on CPU
  archbench kernels --kernels attention --backward --out results/kernels
  archbench kernels --dtype fp16 --no-compile

On a machine without a CUDA GPU the kernels run under the Triton interpreter for correctness only:
timings there mean nothing. exit codes: 0 ok, 1 a Triton kernel failed or mismatched, 2 bad input"""


class KernelBenchError(Exception):
    """A usage or environment problem: reported as one line, exit status 2."""


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
    """``python -m archbench.bench.measure.kernelbench``: parse ``argv`` and ``run``."""
    parser = argparse.ArgumentParser(prog="python -m archbench.bench.measure.kernelbench",
                                     description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    add_arguments(parser)
    return run(parser.parse_args(argv))


# Matmul dtype of the compute peak (the denominator of a TFLOP/s row's % of peak): the run's half-precision dtype,
# and bf16 for an fp32 run (the tensor-core peak, as this command has always quoted; fp32 convs may use TF32).
PEAK_DTYPE = {"bf16": "bf16", "fp16": "fp16", "fp32": "bf16"}


def _run_gpu(args: argparse.Namespace) -> int:
    from archbench.bench.measure.kernelbench_output import describe_peaks, format_rows, kernel_environment
    from archbench.bench.measure.kernelbench_sweep import Row, run_sweep
    from archbench.bench.measure.peaks import cuda_timer, measure_peaks
    from archbench.kernels._common import HAS_TRITON, interpreting

    if not HAS_TRITON:
        raise KernelBenchError("triton is not installed; `pip install triton` (Linux x86_64) to benchmark kernels")
    if interpreting():
        raise KernelBenchError("TRITON_INTERPRET is set: the kernels would run in the CPU interpreter; unset it "
                               "to benchmark on the GPU")
    timer = cuda_timer()
    peaks = measure_peaks("cuda", dtype=PEAK_DTYPE[args.dtype], timer=timer, reps=20, warmup=3)
    env = kernel_environment(peaks=dataclasses.asdict(peaks))
    print(f"archbench kernels on {env['gpu_name']} (compute capability {env['gpu_capability']}), "
          f"torch {env['torch_version']}, "
          f"triton {env['triton_version']}, dtype {args.dtype}")
    print(f"measured peaks: {describe_peaks(peaks)}")
    rows = run_sweep(args.kernels, args.quick, args.dtype, "cuda", timer, args.warmup, args.repeats,
                     args.backward, args.compile, peaks,
                     progress=lambda s: print(f"  ... {s}", file=sys.stderr, flush=True))
    print(format_rows(rows))
    if args.out is not None:
        _write(args.out, rows, env, Row)
    failed = [r for r in rows if r.impl == "triton" and r.status == "failed"]
    for r in failed:
        print(f"FAILED: {r.kernel} {r.case} triton: {r.error}", file=sys.stderr)
    return 1 if failed else 0


def _run_cpu_checks(args: argparse.Namespace) -> int:
    from archbench.bench.measure.kernelbench_checks import CheckRow
    from archbench.bench.measure.kernelbench_output import format_checks, kernel_environment
    from archbench.kernels._common import HAS_TRITON

    if not HAS_TRITON:
        raise KernelBenchError("no CUDA GPU and triton is not installed: nothing to check or benchmark")
    print(NO_GPU_NOTICE)
    # Re-exec: Triton fixes interpreter mode at its first import, so set TRITON_INTERPRET=1 in a fresh process.
    code = ("import json, sys; from archbench.bench.measure.kernelbench_checks import interpreter_checks; "
            "print(json.dumps(interpreter_checks(sys.argv[1].split(','), sys.argv[2] == '1')))")
    child_env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code, ",".join(args.kernels), "1" if args.quick else "0"],
                          env=child_env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise KernelBenchError(f"interpreter check process failed (exit {proc.returncode}): {last}")
    rows = [CheckRow(**r) for r in json.loads(proc.stdout.strip().splitlines()[-1])]
    print(format_checks(rows))
    failed = [r for r in rows if r.status != "ok"]
    print(f"{len(rows) - len(failed)}/{len(rows)} interpreter checks passed. {NO_GPU_NOTICE.split('. ', 1)[1]}")
    if args.out is not None:
        env = kernel_environment(mode="interpreter-correctness-check (no GPU; timings meaningless)")
        _write(args.out, rows, env, CheckRow)
    return 1 if failed else 0


def _write(out_dir: Path, rows: Sequence[Any], env: dict[str, Any], row_type: type) -> None:
    from archbench.bench.measure.kernelbench_output import write_outputs

    try:
        csv_path, json_path = write_outputs(out_dir, rows, env, row_type)
    except OSError as exc:
        raise KernelBenchError(f"cannot write results to {out_dir}: {exc}") from exc
    print(f"wrote {csv_path} and {json_path}")


if __name__ == "__main__":
    sys.exit(main())
