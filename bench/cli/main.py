"""The ``archbench`` command line. It only parses arguments and calls the engine; see ``archbench --help``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from archbench.bench.errors import UsageError
from archbench.bench.measure.harness import BUSY_PCT
from archbench.bench.report.format import FORMATS, human, pct, render

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
  archbench kernels --quick                       fused Triton kernels vs PyTorch (GPU; interpreter checks on CPU)

exit codes: 0 ok, 1 a check failed, 2 bad input (one line on stderr; --debug for the traceback)"""

# Knob flags every model-taking command understands; each maps to the builder keyword of the same name.
KNOB_FLAGS: dict[str, type] = {"width": float, "depth": int, "resolution": int, "seq_len": int, "num_classes": int}


def add_cell_options(p: argparse.ArgumentParser) -> None:
    """--batch, --device, --threads: shared by `run` and `sweep`."""
    p.add_argument("--batch", default="1", help="comma list of batch sizes (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads for every runtime (default: all CPUs)")


def add_timing_options(p: argparse.ArgumentParser) -> None:
    """--timeout and the stop rule (--min-time, --min-iters, --warmup): shared by `run` and `sweep`."""
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per cell before it is killed (default 300)")
    p.add_argument("--min-time", type=float, default=None, help="seconds of timed calls per cell (default 0.4)")
    p.add_argument("--min-iters", type=int, default=None, help="timed calls per cell at least (default 20)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up calls at least (default 3)")


def add_model_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model options")
    g.add_argument("--input-shape", metavar="1,3,224,224", help="example input shape when the model cannot say")
    g.add_argument("--dtype", help="example input dtype (float32, float16, bfloat16, int64)")
    g.add_argument("--weights", metavar="FILE", help="state_dict to load (torch.load weights_only=True)")
    g.add_argument("--knob", action="append", default=[], metavar="K=V", help="any builder keyword, repeatable")
    for name, typ in KNOB_FLAGS.items():
        g.add_argument("--" + name.replace("_", "-"), dest="knob_" + name, type=typ, metavar=typ.__name__.upper(),
                       help=f"zoo knob {name}")


def knobs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from archbench.bench.measure.sources import parse_knob_value

    knobs: dict[str, Any] = {}
    for kv in args.knob:
        k, sep, v = kv.partition("=")
        if not sep or not k:
            raise UsageError(f"bad --knob {kv!r}: expected NAME=VALUE")
        knobs[k.strip().replace("-", "_")] = parse_knob_value(v.strip())
    for name in KNOB_FLAGS:
        v = getattr(args, "knob_" + name, None)
        if v is not None:
            knobs[name] = v
    return knobs


def _source_from_args(args: argparse.Namespace, ref: str):
    from archbench.bench.measure.sources import parse_dtype, parse_shape, resolve

    shape = parse_shape(args.input_shape) if args.input_shape else None
    dtype = parse_dtype(args.dtype) if args.dtype else None
    return resolve(ref, knobs_from_args(args), shape, dtype, args.weights)


# ----------------------------------------------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    import torch

    from archbench.models import create_model, get_entry, list_models

    names = list_models(args.pattern)
    if not names:
        raise UsageError(f"no model matches {args.pattern!r}; `archbench list` shows them all")
    rows = []
    for n in names:
        e = get_entry(n)
        with torch.device("meta"):  # build without allocating weights: list is instant even for resnet50
            m = create_model(n)
        rows.append({
            "name": n,
            "family": e.family,
            "params": sum(p.numel() for p in m.parameters()),
            "input": m.input_spec.describe(),
            "knobs": " ".join(f"{k}={v}" for k, v in e.knobs.items()),
        })
    if args.format in ("table", "md"):
        for r in rows:
            r["params"] = human(r["params"])
    print(render(rows, args.format))
    return 0


# ----------------------------------------------------------------------------------------------------- profile


def _profile_summary_rows(p) -> list[dict[str, Any]]:
    cc = p.cross_check
    return [{
        "model": p.model,
        "input": p.input,
        "params": p.params,
        "trainable_params": p.trainable_params,
        "state_dict_mib": round(p.state_dict_bytes / 2**20, 4),
        "file_mib": round(p.file_bytes / 2**20, 4),
        "macs": p.macs,
        "flops": p.flops,
        "flop_counter_flops": cc.flop_counter_flops if cc else None,
        "flop_counter_rel_diff": round(cc.rel_diff, 6) if cc else None,
        "uncounted_ops": " ".join(r.op for r in p.uncounted),
    }]


def _print_profile_text(p, fmt: str) -> None:
    lines = [
        f"{p.model}   input {p.input}",
        f"  params        {p.params:,} (trainable {p.trainable_params:,})",
        f"  size          {human(p.state_dict_bytes, 'B', binary=True)} fp32 state_dict, "
        f"{human(p.file_bytes, 'B', binary=True)} on disk",
        f"  MACs          {human(p.macs)}   multiply-accumulates of conv / linear / matmul / attention / RNN gates",
        f"  FLOPs         {human(p.flops)}   = 2 x MACs",
    ]
    cc = p.cross_check
    if cc is not None:
        agree = "agrees exactly" if cc.rel_diff == 0 else f"differs by {pct(cc.rel_diff, 2)}"
        line = f"  cross-check   FlopCounterMode {human(cc.flop_counter_flops)}FLOPs: {agree} on the ops it counts"
        lines.append(line)
        for op, f in cc.missed_by_flop_counter.items():
            lines.append(f"                FlopCounterMode does not count {op} here ({human(f)}FLOPs, "
                         f"{pct(f / p.flops if p.flops else 0)} of the total)")
    unc = p.uncounted
    if unc:
        timed = any(r.time_share is not None for r in unc)
        lines.append("  uncounted ops (no MACs by definition" + ("; share of CPU forward time)" if timed else ")"))
        for r in unc:
            share = f"{pct(r.time_share):>7}" if r.time_share is not None else "      -"
            lines.append(f"    {r.op:<32} {r.calls:>5} calls  {share}")
    for n in p.notes:
        lines.append(f"  note: {n}")
    print("\n".join(lines))


def cmd_profile(args: argparse.Namespace) -> int:
    from archbench.bench.measure.sources import is_onnx_ref, parse_shape

    if is_onnx_ref(args.model):
        from archbench.bench.measure.onnx_profile import profile_onnx
        from archbench.bench.measure.sources import resolve

        src = resolve(args.model)
        prof = profile_onnx(src.onnx_path, parse_shape(args.input_shape) if args.input_shape else None)
    else:
        from archbench.bench.measure.profile import profile_module

        src = _source_from_args(args, args.model)
        inputs = src.example_inputs(batch=args.batch)
        spec = src.input_spec.with_batch(args.batch) if args.batch else src.input_spec
        try:
            prof = profile_module(src.module, inputs, name=args.model, input_desc=spec.describe(),
                                  time_ops=not args.no_timing)
        except Exception as e:
            raise UsageError(f"{args.model}: forward on input {spec.describe()} failed: "
                             f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e

    if args.by == "summary":
        if args.format == "table":
            _print_profile_text(prof, args.format)
        elif args.format == "json":
            print(json.dumps(asdict(prof) | {"uncounted": [asdict(r) for r in prof.uncounted]}, indent=2))
        else:
            print(render(_profile_summary_rows(prof), args.format))
        return 0
    if args.by == "operator":
        rows = [{"op": r.op, "calls": r.calls, "macs": r.macs, "flops": None if r.macs is None else 2 * r.macs,
                 "mac_share": None if r.macs is None or not prof.macs else r.macs / prof.macs,
                 "time_share": r.time_share} for r in prof.by_operator]
    else:
        rows = [{"module": r.module or "(model)", "type": r.type, "params": r.params, "macs": r.macs,
                 "flops": 2 * r.macs, "mac_share": r.macs / prof.macs if prof.macs else None}
                for r in prof.by_module
                if r.module.count(".") < args.max_depth or r.module == ""]
    if args.format in ("table", "md"):
        for r in rows:
            for k in ("params", "macs", "flops"):
                if k in r:
                    r[k] = human(r[k])
            for k in ("mac_share", "time_share"):
                if k in r:
                    r[k] = pct(r[k])
        print(f"{prof.model}   input {prof.input}   MACs {human(prof.macs)}   FLOPs {human(prof.flops)}")
    print(render(rows, args.format))
    return 0


# ----------------------------------------------------------------------------------------------------- run

# The default zoo of `archbench run`: one small size per family, so the whole run takes ~2 minutes on 2 cores.
DEFAULT_ZOO = ["mlp_s", "vgg_s", "resnet_s", "mobilenet_s", "vit_s", "llama_tiny", "lstm_s", "gru_s"]


def _csv_list(text: str, cast: Callable[[str], Any] = str, what: str = "value") -> list[Any]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        out = [cast(t) for t in items]
    except ValueError:
        raise UsageError(f"bad {what} list {text!r}: expected comma-separated values") from None
    if not out:
        raise UsageError(f"empty {what} list")
    return out


def spec_from_args(args: argparse.Namespace):
    from pathlib import Path

    from archbench.bench.measure.engine import RunSpec
    from archbench.bench.measure.harness import QUICK, StopRule
    from archbench.bench.measure.runtimes import RUNTIMES
    from archbench.bench.measure.sources import is_import_ref, is_onnx_ref, parse_dtype, parse_shape
    from archbench.models import get_entry

    models = args.models or DEFAULT_ZOO
    for m in models:  # fail fast, before any worker starts, on names that cannot resolve
        if is_onnx_ref(m):
            if not Path(m).is_file():
                raise UsageError(f"no such ONNX file: {m}")
        elif not is_import_ref(m):
            try:
                get_entry(m)
            except ValueError as e:
                raise UsageError(str(e)) from None
    train_mode = getattr(args, "mode", None) == "train"  # training runs torch only unless --runtime says more
    runtimes = _csv_list(args.runtime or ("torch" if train_mode else "torch,onnxruntime"), what="runtime")
    for rt in runtimes:
        if rt not in RUNTIMES:
            raise UsageError(f"unknown runtime {rt!r}; known: {', '.join(RUNTIMES)}")
    if any(is_onnx_ref(m) for m in models) and runtimes != ["onnxruntime"]:
        runtimes = [r for r in runtimes if r == "onnxruntime"] or ["onnxruntime"]
    batches = _csv_list(args.batch, int, "batch")
    if any(b <= 0 for b in batches):
        raise UsageError(f"bad --batch {args.batch!r}: batch sizes must be positive")
    precisions = _csv_list(args.precision, what="precision")
    if args.input_shape:
        parse_shape(args.input_shape)
    if args.dtype:
        parse_dtype(args.dtype)
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    rule = StopRule(
        warmup_iters=args.warmup if args.warmup is not None else QUICK.warmup_iters,
        warmup_s=QUICK.warmup_s,
        min_iters=args.min_iters if args.min_iters is not None else QUICK.min_iters,
        min_time_s=args.min_time if args.min_time is not None else QUICK.min_time_s,
        max_time_s=max(QUICK.max_time_s, 10 * (args.min_time or 0)),
    )
    from datetime import datetime

    out = Path(args.out) if args.out else Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    from archbench.bench.cli import trainopts

    mode, train = trainopts.from_args(args, models, runtimes)
    return RunSpec(
        mode=mode, train=train,
        models=models, out=out, runtimes=runtimes, precisions=precisions, batches=batches, device=args.device,
        threads=args.threads or 0, knobs=knobs_from_args(args),
        input_shape=parse_shape(args.input_shape) if args.input_shape else None, dtype=args.dtype,
        weights=args.weights, rule=rule, timeout_s=args.timeout, resume=args.resume,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from archbench.bench.measure import engine
    from archbench.bench.record import latest_per_cell, read_jsonl
    from archbench.bench.report.markdown import TABLE_COLS, table_rows, write_reports

    spec = spec_from_args(args)
    from archbench.bench.cli import budget_args

    budget = budget_args.budget_from_args(args)  # a malformed budget is exit 2 before any cell runs
    budget_args.check_precisions(args.precision)
    spec.options = budget_args.options_from_args(args)
    if (spec.out / "records.jsonl").exists() and not spec.resume:
        raise UsageError(f"{spec.out / 'records.jsonl'} exists; pass --resume to continue it or choose another --out")
    if spec.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device visible to torch here")
    n_cells = len(spec.models) * len(spec.runtimes) * len(spec.precisions) * len(spec.batches)
    print(f"archbench run: {n_cells} cells ({len(spec.models)} models x {', '.join(spec.runtimes)} x "
          f"{', '.join(spec.precisions)} x batch {','.join(map(str, spec.batches))}) on {spec.device}, "
          f"{spec.resolved_threads()} threads -> {spec.out}", file=sys.stderr)
    bar = _progress(n_cells)
    if spec.train.get("find_max_batch"):  # trials per group are not known in advance: no total, no bar
        print(f"archbench run: --find-max-batch, {spec.mode} mode: one search per model x runtime x precision, "
              f"starting at batch {min(spec.batches)}", file=sys.stderr)
        bar = lambda msg, i, n: print(f"[{i}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    def progress(rec: Any, i: int, total: int) -> None:
        mark = "ok" if rec.status == "ok" else rec.status.upper()
        what = "" if rec.mode == "infer" else f" {rec.mode}" + (f" (max batch {rec.max_batch})"
                                                               if rec.max_batch is not None else "")
        bar(f"{rec.model} {rec.runtime} {rec.precision} b{rec.batch}{what}: {mark}", i, total)

    interrupted = False
    try:
        engine.run(spec, progress=progress)
    except KeyboardInterrupt:
        interrupted = True
        print("\narchbench: interrupted; finished cells are kept (re-run with --resume)", file=sys.stderr)
    jsonl = spec.out / "records.jsonl"
    records = latest_per_cell(read_jsonl(jsonl)) if jsonl.exists() else []
    paths = write_reports(spec.out, records, command="archbench " + " ".join(sys.argv[1:]))
    print(tabulate(table_rows(records), headers=TABLE_COLS, tablefmt="simple", disable_numparse=True))
    from archbench.bench.report.markdown import runtime_winners

    for w in runtime_winners(records):
        print(f"{w['model']} b{w['batch']} {w['precision']}: {w['fastest']} is {w['speedup']:.2f}x faster than "
              f"{w['runner_up']}")
    busy = [r["other_cpu_pct"] for r in records if (r.get("other_cpu_pct") or 0) > BUSY_PCT]
    if busy:
        print(f"archbench: warning: {len(busy)} of {len(records)} cells were timed while other processes took up to "
              f"{max(busy):.0f}% of the CPUs; their latencies are inflated: re-measure on an idle machine",
              file=sys.stderr)
    print(f"wrote {jsonl}, " + ", ".join(str(p) for p in paths), file=sys.stderr)
    budget_rc = budget_args.judge_and_report(spec.out, records, budget, args) if budget and records else 0
    if interrupted:
        return 130
    if budget_rc:
        return budget_rc
    # A max-batch trial that ran out of memory is how the search works, not a failed cell.
    return 1 if any(r.get("status") == "failed" and r.get("mode") != "maxbatch-trial" for r in records) else 0


def _progress(total: int) -> Callable[[str, int, int], None]:
    """A one-line progress display on stderr (tqdm when stderr is a terminal, plain lines otherwise)."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="cell", file=sys.stderr, dynamic_ncols=True)

        def update(msg: str, i: int, n: int) -> None:
            bar.set_postfix_str(msg, refresh=False)
            bar.update(1)
            if i >= n:
                bar.close()

        return update

    def plain(msg: str, i: int, n: int) -> None:
        print(f"[{i}/{n}] {msg}", file=sys.stderr, flush=True)

    return plain


# ----------------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archbench",
        description="Which architecture is the smallest one that meets my deployment budget on this hardware?",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the model zoo", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  archbench list\n  archbench list 'resnet*' --format csv")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'vit*'")
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
    p.add_argument("--max-depth", type=int, default=2, help="module tree depth shown by --by module (default 2)")
    p.add_argument("--batch", type=int, default=None, help="batch size of the example input (default: the model's)")
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
               "  archbench run resnet_s vit_s --mode train --batch 8,32 --optimizer adamw   training steps\n"
               "  archbench run mlp_m --mode train --find-max-batch --mem-cap-mib 2048    largest batch that fits\n"
               "  archbench run resnet_s mobilenet_s --precision fp32,int8-dynamic,int8-static "
               "--budget budgets/edge.toml\n"
               "  archbench run llama_tiny --precision fp32,int8-static --calibration mypkg.data:calib "
               "--metric-hook mypkg.eval:acc \\\n      --budget \"p95_ms<=5, task_metric_drop<=1\"\n\n"
               "exit codes: 0 all cells ok or skipped (and no budget FAIL), 1 some cell failed or a budget FAIL/ERROR "
               "(INCONCLUSIVE too with --strict), 2 bad input, 130 interrupted")
    p.add_argument("models", nargs="*", help=f"zoo names, pkg.module:factory or .onnx files "
                   f"(default: {' '.join(DEFAULT_ZOO)})")
    p.add_argument("--runtime", default=None, help="comma list: torch, torch-compile, onnxruntime "
                   "(default torch,onnxruntime; --mode train: torch)")
    p.add_argument("--precision", default="fp32",
                   help="comma list: fp32, fp16, bf16, int8-dynamic, int8-static (default fp32)")
    add_cell_options(p)
    p.add_argument("--out", help="output folder (default runs/<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out: skip cells that have ok records")
    add_timing_options(p)
    add_model_options(p)
    from archbench.bench.cli import trainopts

    trainopts.add_arguments(p)
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
        ("kernels", "archbench.bench.measure.kernelbench", "microbenchmark and check the fused Triton kernels"),
        ("report", "archbench.bench.cli.report", "markdown, CSV, JSON and plots from runs' records, across machines"),
        ("compare", "archbench.bench.cli.compare", "compare two runs cell by cell, with significance tests and --fail-on"),
        ("check", "archbench.bench.cli.check", "judge recorded cells against a budget: PASS / FAIL / INCONCLUSIVE"),
        ("pick", "archbench.bench.cli.pick", "the best record that passes a budget, the Pareto front, int8/dominated flags"),
        ("sweep", "archbench.bench.cli.sweep", "measure knob variants of a model and report the smallest that passes"),
    ]
    for name, module, help_text in table:
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=getattr(mod, "EPILOG", None))
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)


def main(argv: Sequence[str] | None = None) -> int:
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
        print(f"archbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("archbench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `archbench ... | head`: the reader left; not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
