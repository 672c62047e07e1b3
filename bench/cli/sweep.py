"""``archbench sweep``: build variants of a zoo model over its knobs, measure them all, and report the smallest one
that passes the budget (plus dominated variants and int8 variants slower than their fp32 parent)."""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import replace
from typing import Any

from archbench.bench.errors import UsageError

EPILOG = """examples:
  archbench sweep resnet_s --width 0.25,0.5,1 --depth 1,2 --resolution 64,128 --budget budgets/edge.toml
  archbench sweep llama_tiny --width 0.5,1 --seq-len 64,128 --precision fp32,int8-dynamic \\
      --runtime onnxruntime --budget "p95_ms<=5, top1_agree>=0.9" --out runs/llama-sweep
  archbench sweep mobilenet_s --knob width=0.5,0.75,1.0 --budget budgets/examples.toml:phone --objective p95_ms
  archbench sweep resnet_s --width 0.25,0.5 --budget budgets/edge.toml --out runs/s --resume
  archbench sweep llama_s --mode generate --seq-len 128,512 --new-tokens 64 --budget "ttft_ms<=200, tpot_ms<=20"

Every combination of the knob lists (cartesian product) is one variant; each runs through the same engine as
`archbench run` (isolated workers, one records.jsonl), so --resume continues an interrupted sweep.

exit codes: 0 nothing failed the budget, 1 a FAIL/ERROR (or INCONCLUSIVE with --strict), 2 bad input, 130 interrupted"""

# Knob flags of a sweep take comma lists; the type casts each value.
SWEEP_KNOBS: dict[str, type] = {"width": float, "depth": int, "resolution": int, "seq_len": int}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from archbench.bench.analyze.select import DEFAULT_OBJECTIVE
    from archbench.bench.cli.budget_args import add_budget_arguments, add_variant_arguments
    from archbench.bench.cli.main import add_cell_options, add_cluster_options, add_timing_options

    p.add_argument("model", help="zoo name (or pkg.module:factory taking the knobs as keywords)")
    g = p.add_argument_group("knobs (comma lists; every combination is a variant)")
    for name, typ in SWEEP_KNOBS.items():
        g.add_argument("--" + name.replace("_", "-"), dest="sweep_" + name, metavar=f"{typ.__name__.upper()},...")
    g.add_argument("--knob", action="append", default=[], metavar="K=V1,V2", help="any builder keyword, repeatable")
    p.add_argument("--runtime", default="torch,onnxruntime", help="comma list: torch, torch-compile, onnxruntime")
    p.add_argument("--precision", default="fp32", help="comma list: fp32, fp16, bf16, int8-dynamic, int8-static")
    add_cell_options(p)
    p.add_argument("--out", help="output folder (default runs/sweep-<timestamp>)")
    p.add_argument("--resume", action="store_true", help="continue a sweep in --out")
    add_timing_options(p)
    add_cluster_options(p)
    p.add_argument("--objective", default=DEFAULT_OBJECTIVE, help=f"what the pick optimizes (default {DEFAULT_OBJECTIVE})")
    add_budget_arguments(p, required=True)
    add_variant_arguments(p)
    from archbench.bench.cli import genopts

    genopts.add_sweep_arguments(p)  # --mode generate: a context sweep is --seq-len


def knob_lists(args: argparse.Namespace) -> dict[str, list[Any]]:
    from archbench.bench.measure.sources import parse_knob_value

    lists: dict[str, list[Any]] = {}
    for name, typ in SWEEP_KNOBS.items():
        text = getattr(args, "sweep_" + name, None)
        if text:
            try:
                lists[name] = [typ(t.strip()) for t in text.split(",") if t.strip()]
            except ValueError:
                raise UsageError(f"bad --{name.replace('_', '-')} {text!r}: expected comma-separated "
                                 f"{typ.__name__} values") from None
    for kv in args.knob:
        k, sep, v = kv.partition("=")
        if not sep or not k.strip() or not v.strip():
            raise UsageError(f"bad --knob {kv!r}: expected NAME=V1,V2,...")
        lists[k.strip().replace("-", "_")] = [parse_knob_value(t.strip()) for t in v.split(",") if t.strip()]
    if not lists:
        raise UsageError("sweep needs at least one knob list, e.g. --width 0.5,1 or --knob depth=1,2")
    return lists


def run(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from archbench.bench.analyze import select
    from archbench.bench.cli.budget_args import (
        budget_from_args,
        check_precisions,
        judge_and_report,
        options_from_args,
    )
    from archbench.bench.cli.main import KNOB_FLAGS, _progress, spec_from_args
    from archbench.bench.measure import engine
    from archbench.bench.measure.sources import is_import_ref, is_onnx_ref
    from archbench.bench.record import latest_per_cell, read_records
    from archbench.bench.report.markdown import write_reports
    from archbench.models import get_entry

    budget = budget_from_args(args)
    select.objective(args.objective)
    check_precisions(args.precision)
    lists = knob_lists(args)
    if is_onnx_ref(args.model):
        raise UsageError("sweep builds variants from knobs; an .onnx file has none")
    if not is_import_ref(args.model):
        try:
            known = get_entry(args.model).knobs
        except ValueError as e:
            raise UsageError(str(e)) from None
        bad = sorted(set(lists) - set(known))
        if bad:
            raise UsageError(f"model {args.model!r} has no knob {', '.join(bad)}; its knobs: {', '.join(known)}")
    combos = select.variants(lists)

    # The run command's spec builder does the validation (runtimes, batches, threads...); knobs come per variant.
    base_args = copy.copy(args)
    base_args.models = [args.model]
    base_args.knob = []
    for name in KNOB_FLAGS:
        setattr(base_args, "knob_" + name, None)
    base_args.input_shape = base_args.dtype = base_args.weights = None
    if not args.out:
        base_args.out = str(Path("runs") / datetime.now().strftime("sweep-%Y%m%d-%H%M%S"))
    base = spec_from_args(base_args)
    base = replace(base, options=replace(base.options, **options_from_args(args)))
    jsonl = base.out / "records.jsonl"
    if jsonl.exists() and not base.resume:
        raise UsageError(f"{jsonl} exists; pass --resume to continue it or choose another --out")
    per_variant = len(base.runtimes) * len(base.precisions) * len(base.batches)
    total = per_variant * len(combos)
    print(f"archbench sweep: {len(combos)} variants of {args.model} x {per_variant} cells = {total} cells "
          f"({', '.join(base.runtimes)} x {', '.join(base.precisions)} x batch {','.join(map(str, base.batches))})"
          f" -> {base.out}", file=sys.stderr)
    bar = _progress(total)
    done = 0

    def progress(rec: Any, i: int, n: int) -> None:
        nonlocal done
        done += 1
        mark = "ok" if rec.status == "ok" else rec.status.upper()
        bar(f"{rec.model} {rec.knobs} {rec.runtime} {rec.precision} b{rec.batch}: {mark}", done, total)

    interrupted = False
    try:
        if base.cluster is not None and not base.variants:
            # On a cluster, one run of every variant: each round's jobs (variants x runtimes x precisions) go to
            # the nodes at once, instead of one variant's few jobs at a time.
            engine.run(replace(base, variants={args.model: [dict(k) for k in combos]}), progress=progress)
        else:
            for i, knobs in enumerate(combos):
                # one records.jsonl for the whole sweep
                engine.run(replace(base, knobs=dict(knobs), resume=base.resume or i > 0), progress=progress)
    except KeyboardInterrupt:
        interrupted = True
        print("\narchbench: interrupted; finished cells are kept (re-run with --resume)", file=sys.stderr)
    records = latest_per_cell(read_records(jsonl)) if jsonl.exists() else []
    write_reports(base.out, records, command="archbench " + " ".join(sys.argv[1:]))
    rc = judge_and_report(base.out, records, budget, args, args.objective)
    return 130 if interrupted else rc
