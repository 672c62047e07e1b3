"""The ``archbench`` command line. It only parses arguments and calls the engine; see ``archbench --help``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from archbench.bench.cli.argtypes import Parser, count
from archbench.bench.cli.options import (  # noqa: F401  (re-exported for sweep and tests)
    DEFAULT_ZOO,
    KNOB_FLAGS,
    add_cell_options,
    add_cluster_options,
    add_model_options,
    add_timing_options,
    knobs_from_args,
)
from archbench.bench.cli.run import _progress, cmd_run, spec_from_args  # noqa: F401  (re-exported)
from archbench.bench.cli.zoo import cmd_list, cmd_profile
from archbench.bench.errors import EXIT_CODES, EXIT_INTERNAL, EXIT_OS_ERROR, UsageError, one_line_text
from archbench.bench.measure.runtimes import RUNTIMES
from archbench.bench.report.format import FORMATS

EPILOG = """examples:
  archbench list                                  the zoo: name, family, params, default input, knobs
  archbench profile resnet_s                      params, size, MACs, FLOPs, uncounted ops
  archbench profile mypkg.nets:build --input-shape 1,3,160,160
  archbench run                                   the default zoo on CPU: torch eager vs ONNX Runtime
  archbench run resnet_s mobilenet_s --precision fp32,int8-dynamic --budget "p95_ms<=20, size_mib<=30"
  archbench run vit_s --mode train --batch 8,32
  archbench check runs/x --budget budgets/edge.toml
  archbench pick runs/x --budget budgets/edge.toml --objective size_mib
  archbench sweep resnet_s --width 0.25,0.5,1 --budget budgets/edge.toml
  archbench report runs/x --out review/           report.md, CSV, JSON and plots
  archbench compare runs/base runs/new --fail-on "p95_ms:+10%"
  archbench run mlp_s --scenario server --qps 200,800 --executors 1,2   latency under Poisson load
  archbench run resnet_s --find-max-qps --sla "p99_ms<=20"      the highest QPS that meets the SLA
  archbench plan runs/x --qps 500 --sla "p99_ms<=20"             executors for a QPS, from single-stream runs
  archbench kernels --quick                       fused Triton kernels vs PyTorch (GPU; interpreter checks on CPU)

exit codes:
""" + "\n".join(f"  {code:<16} {what}" for code, what in EXIT_CODES.items())

# ----------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="archbench",
        description="Which architecture is the smallest one that meets my deployment budget on this hardware?",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the model zoo (or timm / torchvision / hf models)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  archbench list\n  archbench list 'resnet*' --format csv\n"
                              "  archbench list --source timm 'convnext*'\n  archbench list 'tv:mobilenet*'\n"
                              "  archbench list --source hf 'llama*'          transformers model types")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit*' (or 'timm:vit*')")
    p.add_argument("--source", choices=("zoo", "timm", "torchvision", "tv", "hf"), default="zoo",
                   help="where names come from: the zoo (default), timm, torchvision (tv) or hf (transformers)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "profile", help="params, size, MACs/FLOPs per module and operator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  archbench profile resnet_s\n  archbench profile llama_tiny --seq-len 1024 --by module\n"
               "  archbench profile vit_tiny --by operator --format csv\n"
               "  archbench profile mypkg.nets:build --input-shape 1,3,160,160\n  archbench profile exported.onnx")
    p.add_argument("model", help="zoo name, pkg.module:factory, or file.onnx")
    p.add_argument("--by", choices=("summary", "module", "operator"), default="summary")
    p.add_argument("--max-depth", type=count(1), default=2, help="module tree depth shown by --by module (default 2)")
    p.add_argument("--batch", type=count(1), default=None, help="batch size of the example input (default: the model's)")
    p.add_argument("--no-timing", action="store_true", help="skip the CPU forward that times uncounted ops")
    p.add_argument("--format", choices=FORMATS, default="table")
    add_model_options(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "run", help="measure latency, throughput, memory across runtimes (the main job)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  archbench run                        the default zoo, torch + onnxruntime, CPU, quick\n"
               "  archbench run resnet_s vit_s --runtime torch,onnxruntime --batch 1,8,32 --threads 2\n"
               "  archbench run llama_tiny --runtime torch-compile --device cuda\n"
               "  archbench run mypkg.nets:build --input-shape 1,3,224,224 --out results/mynet\n"
               "  archbench run --out runs/x --resume  continue an interrupted run, skipping finished cells\n"
               "  archbench run resnet_s vit_s --repetitions 5 --rel-ci 0.05   repeat until p50 is within +/-5%\n"
               "  archbench run mynet.v1:build mynet.v2:build --baseline mynet.v1:build   v2 vs v1, paired by round\n"
               "  archbench run resnet_s vit_s --mode train --batch 8,32 --optimizer adamw   training steps\n"
               "  archbench run mlp_m --mode train --find-max-batch --mem-cap-mib 2048    largest batch that fits\n"
               "  archbench run mlp_s resnet_s --scenario single-stream,offline,server --qps 200,800 --batch 1,8 "
               "--max-batch 8\n"
               "  archbench run resnet_s --runtime onnxruntime --find-max-qps --sla \"p99_ms<=20\" --executors 1,2\n"
               "  archbench run llama_s --mode generate --prompt-len 128,512 --new-tokens 64 "
               "--budget \"ttft_ms<=200, tpot_ms<=20\"\n"
               "  archbench run resnet_s mobilenet_s --precision fp32,int8-dynamic,int8-static "
               "--budget budgets/edge.toml\n"
               "  archbench run llama_tiny --precision fp32,int8-static --calibration mypkg.data:calib "
               "--metric-hook mypkg.eval:acc \\\n      --budget \"p95_ms<=5, task_metric_drop<=1\"\n\n"
               "exit codes: 0 all cells ok or skipped (and no budget FAIL), 1 some cell failed or a budget FAIL/ERROR "
               "(INCONCLUSIVE too with --strict), 2 bad input, 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (finished cells kept)")
    p.add_argument("models", nargs="*", help=f"zoo names, pkg.module:factory or .onnx files "
                   f"(default: {' '.join(DEFAULT_ZOO)})")
    p.add_argument("--runtime", default=None, help=f"comma list: {', '.join(RUNTIMES)} "
                   "(default torch,onnxruntime; --mode train: torch)")
    p.add_argument("--precision", default="fp32",
                   help="comma list: fp32, fp16, bf16, int8-dynamic, int8-static (default fp32)")
    add_cell_options(p)
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out: skip cells that have ok records")
    p.add_argument("--baseline", metavar="MODEL", default=None,
                   help="one of the models: compare every other model with it, cell by cell (same runtime, "
                        "precision, batch), as a p50 ratio paired by round with its 95%% interval")
    add_timing_options(p)
    add_cluster_options(p)
    add_model_options(p)
    from archbench.bench.cli import trainopts

    trainopts.add_arguments(p)
    from archbench.bench.cli import serveopts

    serveopts.add_arguments(p)
    from archbench.bench.cli import budget_args

    budget_args.add_budget_arguments(p)
    budget_args.add_variant_arguments(p)
    p.set_defaults(func=cmd_run)

    _add_module_commands(sub)
    return parser


def _add_module_commands(sub: Any) -> None:
    """Subcommands that live in their own modules (each exposes add_arguments, run and an EPILOG of examples).
    The modules import nothing heavy at top level, so `archbench --help` stays fast."""
    import importlib

    table: list[tuple[str, str, str]] = [
        ("kernels", "archbench.bench.cli.kernels", "microbenchmark and check the fused Triton kernels"),
        ("report", "archbench.bench.cli.report", "markdown, CSV, JSON and plots from runs' records, across machines"),
        ("compare", "archbench.bench.cli.compare", "compare two runs cell by cell, with significance tests and --fail-on"),
        ("check", "archbench.bench.cli.check", "judge recorded cells against a budget: PASS / FAIL / INCONCLUSIVE"),
        ("pick", "archbench.bench.cli.pick", "the best record that passes a budget, the Pareto front, int8/dominated flags"),
        ("sweep", "archbench.bench.cli.sweep", "measure knob variants of a model and report the smallest that passes"),
        ("doctor", "archbench.bench.cli.doctor", "is this machine fit to measure? its run-to-run noise, OS facts, advice"),
        ("plan", "archbench.bench.cli.plan", "executors (replicas) for a QPS at a latency SLA, from single-stream records"),
    ]
    for name, module, help_text in table:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=getattr(mod, "EPILOG", None))
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)




def main(argv: Sequence[str] | None = None) -> int:
    from archbench.bench.measure.hooks import demote_cwd

    demote_cwd()  # `python -m archbench...` from a repository with its own kernels/ or models/ (measure.hooks)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except UsageError as e:
        if args.debug:
            raise
        print(f"archbench: error: {one_line_text(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM/SIGHUP where a command turned them into this (cli.run)
        sig = getattr(e, "signum", 2)
        print(f"archbench: interrupted{'' if sig == 2 else f' (signal {sig})'}", file=sys.stderr)
        return 128 + sig
    except BrokenPipeError:  # `archbench ... | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:  # a folder that is a file, a full disk, no permission: the OS said no, not a check
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"archbench: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_OS_ERROR
    except Exception as e:  # a bug of ours: still one line (and the exit code says so); --debug has the traceback
        if args.debug:
            raise
        from archbench.bench.measure.protocol import one_line

        print(f"archbench: internal error: {one_line(e)} (rerun with --debug for the traceback, and please "
              "report it)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
