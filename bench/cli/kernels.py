"""``archbench kernels``: its flags -> a KernelSpec -> archbench.bench.kernels.run (what it measures and how: there).

    archbench kernels --quick
    python -m archbench.bench.cli.kernels --quick        the same, without the console script
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from archbench.bench.kernels.cases import KERNELS, SHAPE_SYNTAX
from archbench.bench.kernels.run import DTYPES, REVIEW_BUDGET_S, KernelBenchError, KernelSpec  # noqa: F401  (REVIEW_BUDGET_S: the help)

EPILOG = """examples:
  archbench kernels --quick                       short sweep (on a GPU); interpreter correctness checks on CPU
  archbench kernels --review --out results/kernels  issue 20's target shapes, fwd and fwd+bwd, in ~7 minutes
  archbench kernels --shapes attention=4x32x8192x128,4x32x8192x128:causal --direction fwd
  archbench kernels --shapes rms_norm=16384x4096 conv_bn_act=8x64x56x56x64x3 --budget-s 120
  archbench kernels --review --plan               list what would be measured, and exit

shapes (--shapes KERNEL=SHAPE[,SHAPE...] ...; only the named kernels run unless --kernels says otherwise):
""" + "\n".join(f"  {k:<12} {v}" for k, v in SHAPE_SYNTAX.items()) + """

On a machine without a CUDA GPU the kernels run under the Triton interpreter for correctness only:
timings there mean nothing. The whole GPU review (native tests, this review, targets, results/kernels/) is one
command: python -m archbench.bench.kernels.review
exit codes: 0 ok, 1 a Triton kernel failed or mismatched, 2 bad input"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``archbench kernels``."""
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=None, metavar="NAME",
                        help=f"kernels to benchmark (default: those named by --shapes, else all of "
                             f"{', '.join(KERNELS)})")
    parser.add_argument("--shapes", action="extend", nargs="+", default=[], metavar="KERNEL=SHAPE[,SHAPE...]",
                        help="shapes instead of a kernel's default sweep, e.g. rms_norm=16384x4096,2048x16384 "
                             "attention=4x32x8192x128:causal (syntax per kernel below)")
    parser.add_argument("--quick", action="store_true", help="a short sweep (two shapes per kernel)")
    parser.add_argument("--review", action="store_true",
                        help="issue 20's target shapes (attention d128 bf16 first, then RMSNorm, conv at batch 1-32) "
                             f"with --budget-s {REVIEW_BUDGET_S:g} unless given")
    parser.add_argument("--dtype", choices=DTYPES, default="bf16",
                        help="input dtype on a GPU (default bf16; fp32 convs use TF32 as cuDNN does)")
    parser.add_argument("--direction", choices=("fwd", "fwd+bwd", "both"), default="both",
                        help="time the forward, forward+backward, or both in one run (default); conv_bn_act is "
                             "inference-only and always forward")
    parser.add_argument("--backward", action="store_const", const="fwd+bwd", dest="direction",
                        help="same as --direction fwd+bwd")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the torch.compile baselines (they add compile time per shape)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed calls before timing (default 10)")
    parser.add_argument("--repeats", type=int, default=60,
                        help="timed calls per row, split over the rounds (default 60; fewer when a budget says so)")
    parser.add_argument("--rounds", type=int, default=6,
                        help="interleaved rounds per bench (default 6, the fewest for a 95%% interval)")
    parser.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                        help="wall-clock budget of the sweep (default: none; --review: "
                             f"{REVIEW_BUDGET_S:g})")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto (default): benchmark on CUDA, else interpreter checks; cpu: time the harness "
                             "on the CPU (the triton rows are torch fallbacks: plumbing only)")
    parser.add_argument("--plan", action="store_true", help="print the benches that would run, then exit")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="write kernels.md, kernels.csv and kernels.json")


def spec_from_args(args: argparse.Namespace) -> KernelSpec:
    """Parse and validate the arguments into a KernelSpec; KernelBenchError on bad input."""
    from archbench.bench.kernels.cases import REVIEW_SHAPES, ShapeError, parse_shapes

    if args.warmup < 0 or args.repeats < 1 or args.rounds < 1:
        raise KernelBenchError(f"--warmup must be >= 0, --repeats and --rounds >= 1 (got {args.warmup}, "
                               f"{args.repeats}, {args.rounds})")
    if args.budget_s is not None and args.budget_s <= 0:
        raise KernelBenchError(f"--budget-s must be > 0 (got {args.budget_s:g})")
    try:
        shapes = parse_shapes(args.shapes)
    except ShapeError as exc:
        raise KernelBenchError(str(exc)) from exc
    if args.review:
        shapes = {**{k: list(v) for k, v in REVIEW_SHAPES.items()}, **shapes}
    kernels = args.kernels or (list(dict.fromkeys(shapes)) if args.shapes else
                               list(REVIEW_SHAPES) if args.review else list(KERNELS))
    unused = [k for k in shapes if k not in kernels and not args.review]
    if unused:
        raise KernelBenchError(f"--shapes names {', '.join(unused)}, not in --kernels {' '.join(kernels)}")
    directions = ("fwd", "fwd+bwd") if args.direction == "both" else (args.direction,)
    budget = args.budget_s if args.budget_s is not None else (REVIEW_BUDGET_S if args.review else None)
    return KernelSpec(tuple(kernels), shapes, args.quick, directions, budget, dtype=args.dtype, compile=args.compile,
                      warmup=args.warmup, repeats=args.repeats, rounds=args.rounds, device=args.device, out=args.out,
                      review=args.review)


def run(args: argparse.Namespace) -> int:
    """``archbench kernels``: the benchmark (GPU), the interpreter checks (no GPU) or ``--plan``; the exit status."""
    from archbench.bench.kernels.run import format_plan
    from archbench.bench.kernels.run import run as run_kernels

    try:
        spec = spec_from_args(args)
    except KernelBenchError as exc:
        print(f"archbench kernels: error: {exc}", file=sys.stderr)
        return 2
    if args.plan:
        print(format_plan(spec))
        return 0
    return run_kernels(spec)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="archbench kernels", formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=EPILOG)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
