"""``archbench pick``: the best record that passes a budget, the Pareto front, and what to be wary of."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  archbench pick results/quant-sample/records.jsonl --budget budgets/edge.toml       smallest size_mib that passes
  archbench pick runs/x --budget "p95_ms<=20, top1_agree>=0.99" --objective throughput_sps
  archbench pick runs/x --objective p50_ms --pareto p95_ms,size_mib,top1_agree       no budget: best of all ok cells

The objective's direction is the metric's: sizes, latencies and errors are minimized; throughput_sps, top1_agree,
cosine, sqnr_db and task_metric maximized. Only PASS records are picked (INCONCLUSIVE ones are listed apart).
Also printed: the Pareto front per batch size, variants bigger *and* slower than another (dominated), and int8
variants slower than their fp32 parent (int8 is not faster on every CPU).

exit codes: 0 a record was picked, 1 none passes, 2 bad input"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from archbench.bench.analyze.select import DEFAULT_OBJECTIVE, DEFAULT_PARETO
    from archbench.bench.cli.budget_args import add_budget_arguments

    p.add_argument("records", nargs="+", help="records.jsonl files or run folders")
    add_budget_arguments(p)
    p.add_argument("--objective", default=DEFAULT_OBJECTIVE, help=f"metric to optimize (default {DEFAULT_OBJECTIVE})")
    p.add_argument("--pareto", default=",".join(DEFAULT_PARETO),
                   help=f"axes of the Pareto front (default {','.join(DEFAULT_PARETO)})")
    p.add_argument("--across-models", action="store_true",
                   help="Pareto front and dominance across models (default: within each model's variants)")
    p.add_argument("--format", choices=("table", "md", "json"), default="table")


def run(args: argparse.Namespace) -> int:
    import json

    from archbench.bench.analyze import select
    from archbench.bench.analyze.budgets import (
        ERROR,
        PASS,
        SKIPPED,
        Budget,
        RecordVerdict,
        judge,
        record_label,
    )
    from archbench.bench.analyze.metrics import metric
    from archbench.bench.cli.budget_args import budget_from_args, load_records, print_verdicts
    from archbench.bench.report import verdicts as vr

    budget = budget_from_args(args)
    records = load_records(args.records)
    select.objective(args.objective)  # unknown names: exit 2 before anything prints
    axes = [a.strip() for a in args.pareto.split(",") if a.strip()]
    for a in axes:
        metric(a)
    if budget is not None:
        verdicts = judge(records, budget)
        confidence = budget.confidence
    else:  # no budget: every ok record is a candidate
        verdicts = [RecordVerdict(r, {"ok": PASS, "skipped": SKIPPED}.get(r.status, ERROR)) for r in records]
        confidence = 0.95
    p = select.pick(verdicts, args.objective, records)
    fronts = select.pareto_front(records, axes, args.across_models)
    flags = select.slower_than_fp32(records, confidence) + select.dominated(records, confidence, args.across_models)
    if args.format == "json":
        print(json.dumps({
            "objective": p.objective.name, "direction": p.objective.better,
            "pick": p.best.label if p.best else None,
            "ranked": [v.label for v in p.ranked],
            "inconclusive": [v.label for v in p.inconclusive],
            "pareto": [[record_label(r) for r in f] for f in fronts],
            "flags": [{"kind": f.kind, "cell": record_label(f.record), "other": record_label(f.other),
                       "latency_ratio": f.ratio, "beyond_noise": f.beyond_noise} for f in flags],
        }, indent=2))
        return 0 if p.best else 1
    if args.format == "md":
        b = budget or Budget((), source="(no budget)")
        print(vr.markdown_section(b, verdicts, p, fronts, axes, flags, records))
        return 0 if p.best else 1
    if budget is not None:
        print_verdicts(budget, verdicts)
        print()
    for line in vr.pick_lines(p, records):
        print(line)
    for line in vr.pareto_lines(fronts, axes, records):
        print(line)
    for line in vr.flag_lines(flags):
        print(line)
    return 0 if p.best else 1
