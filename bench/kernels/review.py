"""The kernels' GPU review in one command, for whoever has an H100/H200 (or any CUDA GPU) for ~12 minutes:

    python -m archbench.bench.kernels.review            # writes results/kernels/

1. native kernel tests: ``pytest tests/test_kernels.py`` (every row on CUDA, bf16 included) and the CUDA rows of
   ``tests/benchmarks/test_bench_kernels.py`` (``-m gpu``) -> tests.log (both runs' output), tests-*.xml (JUnit);
2. ``archbench kernels --review``: issue 20's target shapes, forward and forward+backward, every baseline,
   median with interval, GB/s or TFLOP/s, % of the peaks measured in the same run, triton's speed-up over each
   baseline, within ``--budget-s`` (default 420 s) -> kernels.md, kernels.csv, kernels.json;
3. the targets, judged from those rows (``check_targets``) -> targets.md;
4. environment.json (GPU, driver, CUDA, cuDNN, torch, triton, git commit, nvidia-smi) and README.md, an index of
   what ran, what it returned and where it is. The last lines printed say where everything was written.

The tests take 1-3 minutes (each kernel specialization compiles once), the review ``--budget-s`` plus ~30 s;
``--skip-tests`` / ``--tests-only`` split them over two sessions. Exit status: 0 when the tests passed and every
Triton row is ok, 1 otherwise, 2 when it cannot run (no CUDA device, bad arguments). Targets missed do not
change the exit status: they are findings, listed in targets.md.

``--device cpu`` runs steps 2-4 on the CPU with the torch fallbacks standing in for the kernels (give small
``--shapes``): a check of this script's plumbing, used by tests/test_kernels_bench.py, not a review.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from archbench.bench.atomic import atomic_write

ROOT = Path(__file__).resolve().parents[2]  # the repository (bench/kernels/review.py)
DEFAULT_OUT = ROOT / "results" / "kernels"
TESTS = (  # (name, pytest arguments): the native kernel tests
    ("kernels", ["tests/kernels/test_kernels.py"]),
    ("kernel-benchmarks", ["tests/benchmarks/test_bench_kernels.py", "-m", "gpu"]),
)

# Issue 20's targets on H100/H200 (thresholds as stated there).
RMS_PCT_OF_COPY = 85.0  # RMSNorm forward: >= 85% of the copy bandwidth measured in the same run
ATTN_VS_FLASH = 0.9  # attention forward at d = 128 bf16: >= 0.9x SDPA flash (speed-up >= 0.9), causal and not
CONV_VS_CUDNN = 1 / 1.25  # conv+BN+ReLU within 1.25x of cuDNN conv alone: speed-up over cudnn-conv >= 0.8
CONV_MIN_BATCH = 8  # the conv targets apply at batch >= 8


@dataclass(frozen=True)
class TargetCheck:
    """One target on one case: the measured value against its threshold; ``met`` None when not measured."""

    target: str
    kernel: str
    case: str
    direction: str
    value: float | None
    lo: float | None  # the value's 95% interval, where the rows have one
    hi: float | None
    threshold: float
    unit: str  # "% of copy bandwidth" | "x (speed-up)"
    met: bool | None
    note: str = ""


def check_targets(rows: Sequence[Any]) -> list[TargetCheck]:
    """Issue 20's targets, judged from ``archbench kernels`` rows (kernelbench_sweep.Row or their dicts).

    RMSNorm fwd: our % of the measured copy bandwidth >= 85. Attention fwd, d = 128, bf16, causal and not: our
    speed-up over sdpa-flash >= 0.9. conv_bn_act at batch >= 8: speed-up over eager-unfused > 1 and over
    cudnn-conv >= 0.8 (our time <= 1.25 x cuDNN's). ``met`` compares the point estimate; the interval is beside it.
    """
    from archbench.bench.kernels.cases import ShapeError, parse_shape

    recs = [r if isinstance(r, dict) else asdict(r) for r in rows]
    by_key = {(r["kernel"], r["case"], r["direction"], r["impl"]): r for r in recs}
    checks = []

    def shape_of(r: dict) -> tuple | None:
        try:
            return parse_shape(r["kernel"], r["shape"]) if r.get("shape") else None
        except ShapeError:
            return None

    def speedup_check(target: str, ours: dict, baseline: str, threshold: float, strict: bool = False) -> None:
        other = by_key.get((ours["kernel"], ours["case"], ours["direction"], baseline))
        value = other.get("speedup") if other and ours["status"] == "ok" else None
        why = ""
        if value is None:
            why = (f"{baseline}: {other['status']} {other['error']}".strip() if other and other["status"] != "ok"
                   else f"triton: {ours['status']} {ours['error']}".strip() if ours["status"] != "ok"
                   else f"no {baseline} row")
        met = None if value is None else (value > threshold if strict else value >= threshold)
        checks.append(TargetCheck(target, ours["kernel"], ours["case"], ours["direction"], value,
                                  other.get("speedup_lo") if other else None,
                                  other.get("speedup_hi") if other else None, threshold, "x (speed-up)", met, why))

    for r in recs:
        if r["impl"] != "triton":
            continue
        shape = shape_of(r)
        if r["kernel"] == "rms_norm" and r["direction"] == "fwd":
            value = r.get("pct_of_peak") if r["status"] == "ok" else None
            checks.append(TargetCheck("RMSNorm fwd >= 85% of measured copy bandwidth", r["kernel"], r["case"],
                                      r["direction"], value, None, None, RMS_PCT_OF_COPY, "% of copy bandwidth",
                                      None if value is None else value >= RMS_PCT_OF_COPY,
                                      "" if value is not None else f"triton: {r['status']} {r['error']}".strip()))
        elif (r["kernel"] == "attention" and r["direction"] == "fwd" and r["dtype"] == "bf16" and shape
              and shape[3] == 128):
            speedup_check("attention fwd d128 bf16 >= 0.9x SDPA flash", r, "sdpa-flash", ATTN_VS_FLASH)
        elif r["kernel"] == "conv_bn_act" and shape and shape[0] >= CONV_MIN_BATCH:
            speedup_check("conv+BN+ReLU faster than eager conv->BN->ReLU", r, "eager-unfused", 1.0, strict=True)
            speedup_check("conv+BN+ReLU within 1.25x of cuDNN conv alone", r, "cudnn-conv", CONV_VS_CUDNN)
    return checks


def format_targets(checks: Sequence[TargetCheck]) -> str:
    """Markdown table of the target checks."""
    lines = ["| target | case | value [95% CI] | threshold | met | note |", "|---|---|---|---|---|---|"]
    for c in checks:
        if c.value is None:
            value = "not measured"
        else:
            ci = f" [{c.lo:.2f}, {c.hi:.2f}]" if c.lo is not None and c.hi is not None else ""
            value = f"{c.value:.1f}%" if c.unit.startswith("%") else f"{c.value:.2f}x{ci}"
        threshold = f"{c.threshold:g}%" if c.unit.startswith("%") else f"{c.threshold:.2f}x"
        met = {True: "yes", False: "**no**", None: "?"}[c.met]
        lines.append(f"| {c.target} | {c.case} {c.direction} | {value} | {threshold} | {met} | {c.note} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class StepResult:
    """One step of the review: what ran, its exit status, its wall time and the files it wrote."""

    name: str
    command: str
    returncode: int
    seconds: float
    outputs: tuple[str, ...]


def _run_tests(out: Path, timeout_s: float) -> list[StepResult]:
    """The native kernel tests, each pytest run logged to tests.log and reported as JUnit XML."""
    log = out / "tests.log"
    results = []
    with open(log, "w") as fh:
        for name, pytest_args in TESTS:
            junit = out / f"tests-{name}.xml"
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *pytest_args,
                   f"--junitxml={junit}"]
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            t0 = time.monotonic()
            try:
                proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                fh.write(f"\n(timed out after {timeout_s:g} s)\n")
                code = 124
            fh.write(f"\n(exit {code})\n\n")
            fh.flush()
            results.append(StepResult(f"tests: {name}", " ".join(cmd[1:]), code, time.monotonic() - t0,
                                      (str(log), str(junit))))
            print(f"tests {name}: exit {code} ({time.monotonic() - t0:.0f} s), log {log}", flush=True)
    return results


def _nvidia_smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                               "clocks.max.mem,power.limit,pcie.link.gen.max", "--format=csv"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _readme(steps: Sequence[StepResult], checks: Sequence[TargetCheck], env: dict[str, Any], device: str) -> str:
    lines = ["# Kernel review", "",
             f"`python -m archbench.bench.kernels.review` on {env.get('gpu_name') or 'no GPU'} "
             f"(driver {env.get('gpu_driver') or '?'}), torch {env.get('torch_version')}, triton "
             f"{env.get('triton_version')}, CUDA {env.get('cuda_version')}, cuDNN {env.get('cudnn_version')}, "
             f"commit {env.get('git_commit') or '?'}, {env.get('timestamp')}.", ""]
    if device == "cpu":
        lines += ["**--device cpu: a plumbing check. The triton rows are the kernels' torch fallbacks; nothing here "
                  "measures the kernels.**", ""]
    lines += ["| step | command | exit | seconds | files |", "|---|---|---|---|---|"]
    lines += [f"| {s.name} | `{s.command}` | {s.returncode} | {s.seconds:.0f} | "
              f"{', '.join(Path(o).name for o in s.outputs)} |" for s in steps]
    lines += ["", "## Targets (issue 20)", "", format_targets(checks) if checks else "(none measured)", "",
              "The full table: kernels.md (also kernels.csv, kernels.json); environment: environment.json."]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"results folder (default {DEFAULT_OUT.relative_to(ROOT)} in the repository)")
    parser.add_argument("--budget-s", type=float, default=420.0, metavar="SECONDS",
                        help="budget of the benchmark sweep (default 420; the tests come on top)")
    parser.add_argument("--tests-timeout-s", type=float, default=300.0, metavar="SECONDS",
                        help="limit of each pytest run (default 300)")
    steps = parser.add_mutually_exclusive_group()
    steps.add_argument("--skip-tests", action="store_true", help="only the benchmark review and the targets")
    steps.add_argument("--tests-only", action="store_true", help="only the native tests")
    parser.add_argument("--shapes", nargs="+", default=[], metavar="KERNEL=SHAPE[,SHAPE...]",
                        help="replace the review's shapes of the named kernels (archbench kernels --shapes syntax)")
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16",
                        help="input dtype of the benchmark (default bf16, the dtype of issue 20's targets)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda (default); cpu: a plumbing check with the torch fallbacks (module docstring)")


def review(args: argparse.Namespace) -> int:
    """Run the review's steps (module docstring); returns the exit status."""
    import torch

    from archbench.bench.kernels.cases import REVIEW_SHAPES, ShapeError, parse_shapes
    from archbench.bench.kernels.output import kernel_environment
    from archbench.bench.kernels.run import KernelSpec
    from archbench.bench.kernels.run import run as run_kernels

    if args.device == "cuda" and not torch.cuda.is_available():
        print("kernel_review: error: no CUDA device visible to torch. This review needs a GPU (H100/H200 for "
              "issue 20's targets); without one, `archbench kernels` runs the interpreter checks.", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    steps: list[StepResult] = []
    if not args.skip_tests:
        if (ROOT / "tests" / "kernels" / "test_kernels.py").exists():
            steps += _run_tests(out, args.tests_timeout_s)
        else:
            print(f"kernel_review: tests not found under {ROOT} (installed without the repository): skipped",
                  file=sys.stderr)
    checks: list[TargetCheck] = []
    if not args.tests_only:
        bench_args = ["--review", "--out", str(out), "--budget-s", f"{args.budget_s:g}", "--device", args.device,
                      "--dtype", args.dtype]
        bench_args += (["--shapes", *args.shapes] if args.shapes else []) + (["--no-compile"] if args.no_compile
                                                                             else [])
        try:
            shapes = {**{k: list(v) for k, v in REVIEW_SHAPES.items()}, **parse_shapes(args.shapes)}
        except ShapeError as e:
            print(f"kernel_review: error: {e}", file=sys.stderr)
            return 2
        spec = KernelSpec(tuple(REVIEW_SHAPES), shapes, False, ("fwd", "fwd+bwd"), args.budget_s, dtype=args.dtype,
                          compile=not args.no_compile, device=args.device, out=out, review=True)
        t0 = time.monotonic()
        code = run_kernels(spec)
        written = tuple(str(out / f) for f in ("kernels.md", "kernels.csv", "kernels.json"))
        steps.append(StepResult("archbench kernels --review", "archbench kernels " + " ".join(bench_args), code,
                                time.monotonic() - t0, written))
        if (out / "kernels.json").exists() and code in (0, 1):
            checks = check_targets(json.loads((out / "kernels.json").read_text())["rows"])
            atomic_write(out / "targets.md", "# Issue 20 targets\n\n" + format_targets(checks) + "\n")
            print("\n" + format_targets(checks))
    env = kernel_environment(nvidia_smi=_nvidia_smi(), review_steps=[asdict(s) for s in steps])
    atomic_write(out / "environment.json", json.dumps(env, indent=2, default=str))
    atomic_write(out / "README.md", _readme(steps, checks, env, args.device))
    print(f"\nkernel review written to {out}/:")
    for name in ("README.md", "kernels.md", "kernels.csv", "kernels.json", "targets.md", "environment.json",
                 "tests.log"):
        if (out / name).exists():
            print(f"  {out / name}")
    return 0 if steps and all(s.returncode == 0 for s in steps) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m archbench.bench.kernels.review``: parse ``argv`` and ``review``."""
    parser = argparse.ArgumentParser(prog="python -m archbench.bench.kernels.review",
                                     description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return review(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
