"""``archbench plan``: how many executors (replicas) serve a QPS within a latency SLA, predicted from the
single-stream records of a run (archbench.bench.analyze.capacity: a discrete-event simulation of the server's queue
over the measured service times, Poisson arrivals). Prints one row per cell x batching configuration."""

from __future__ import annotations

import argparse
import json
import os

from archbench.bench.cli.argtypes import count, count_list, positive_list, seconds_list
from archbench.bench.errors import UsageError

EPILOG = """examples:
  archbench run mlp_s resnet_s --runtime onnxruntime --batch 1,8 --threads 1 --out runs/ss
  archbench plan runs/ss --qps 200 --sla "p99_ms<=20"
  archbench plan runs/ss --qps 500,2000 --sla "p99_ms<=5" --max-batch 1,8 --max-queue-delay-ms 0,1
  archbench plan runs/ss/records.jsonl --qps 300 --sla "p90_ms<=3" --format json

Each executor is a replica running the cell as it was measured (its --threads intra-op threads, alone on its
CPUs): on one machine, executors x threads beyond its CPUs share cores and run slower than predicted. Batch sizes
the server may form need single-stream records at those batch sizes (--batch 1,...,B; between measured sizes the
service time is interpolated). results/serving-validation compares predictions with measured server runs.

exit codes: 0 every cell has an answer, 1 some cell has none (the SLA is below its fastest request, or no count
up to --max-executors meets it), 2 bad input"""

SLA_QUANTILES = {0.5: "p50_ms", 0.9: "p90_ms", 0.99: "p99_ms"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("records", nargs="+", help="records.jsonl files or run folders with single-stream records")
    p.add_argument("--qps", type=positive_list, required=True, metavar="Q[,Q...]", help="target requests/s")
    p.add_argument("--sla", required=True, metavar="EXPR", help="one latency term: p50_ms, p90_ms, p99_ms or "
                   "mean_ms <= X, e.g. 'p99_ms<=20'")
    p.add_argument("--max-batch", type=count_list(1), default=[1], metavar="B[,B...]",
                   help="dynamic batching configurations to plan for (default 1)")
    p.add_argument("--max-queue-delay-ms", type=seconds_list, default=[0.0], metavar="MS[,MS...]",
                   help="dynamic batching queue delays (default 0)")
    p.add_argument("--max-executors", type=count(1, 4096), default=64, metavar="N",
                   help="the most executors (replicas) to consider (default 64)")
    p.add_argument("--requests", type=count(1000, 10**7), default=40_000, metavar="N",
                   help="simulated requests per prediction (default 40000)")
    p.add_argument("--format", choices=("table", "json"), default="table")


def _sla(text: str) -> tuple[float | None, float]:
    from archbench.bench.analyze.budgets import parse_expression

    terms = parse_expression(text).terms
    t = terms[0]
    if len(terms) != 1 or t.op not in ("<=", "<") or (t.metric.quantile not in SLA_QUANTILES
                                                      and t.metric.name != "mean_ms"):
        raise UsageError(f"--sla {text!r}: plan predicts one term, p50_ms, p90_ms, p99_ms or mean_ms <= X")
    return t.metric.quantile, t.limit


def run(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from archbench.bench.analyze.capacity import Config, executors_needed
    from archbench.bench.analyze.serving import service_groups
    from archbench.bench.cli.budget_args import load_records
    from archbench.bench.report.format import num

    quantile, limit = _sla(args.sla)
    groups = service_groups(load_records(args.records))
    if not groups:
        raise UsageError(f"no single-stream records with raw samples in {', '.join(args.records)} (archbench run "
                         "writes them; read records.jsonl, not the CSV)")
    rows, out, missing = [], [], 0
    cpus = os.cpu_count() or 1
    for g in groups:
        for b in args.max_batch:
            if b > g.times.max_batch:
                rows.append([g.label, f"max_batch={b}", "-", "-", "-", "-", "-",
                             f"measured up to batch {g.times.max_batch}: add --batch ...,{b} to the run"])
                missing += 1
                continue
            for d in (args.max_queue_delay_ms if b > 1 else [0.0]):
                base = Config(1, b, d)
                for q in args.qps:
                    plan = executors_needed(g.times, q, limit, quantile, base, args.max_executors, args.requests)
                    p = plan.prediction
                    cpu_note = "" if p is None or plan.executors * g.threads <= cpus else \
                        f"{plan.executors * g.threads} CPUs: more than this machine's {cpus}"
                    rows.append([g.label, f"max_batch={b} delay={d:g}ms", num(q),
                                 num(q / max(p.utilization, 1e-12) / plan.executors) if p else "-",
                                 str(plan.executors) if plan.executors else "none",
                                 num(p.p50_ms) if p else "-", num(p.latency(quantile)) if p else "-",
                                 plan.reason or cpu_note])
                    missing += plan.executors is None
                    out.append({"cell": g.label, "threads": g.threads, "max_batch": b, "queue_delay_ms": d,
                                "qps": q, "sla": args.sla, "executors": plan.executors, "reason": plan.reason,
                                "prediction": None if p is None else {
                                    "p50_ms": p.p50_ms, "p90_ms": p.p90_ms, "p99_ms": p.p99_ms, "mean_ms": p.mean_ms,
                                    "utilization": p.utilization, "mean_batch": p.mean_batch}})
    if args.format == "json":
        print(json.dumps(out, indent=1))
    else:
        stat = SLA_QUANTILES.get(quantile, "mean_ms") if quantile is not None else "mean_ms"
        print(f"plan: executors (replicas) for each QPS at {args.sla}, predicted by a queue simulation over each "
              "cell's single-stream service times (archbench.bench.analyze.capacity)")
        print(tabulate(rows, headers=["cell", "batching", "QPS", "capacity per executor", "executors",
                                      "predicted p50 ms", f"predicted {stat}", "note"],
                       tablefmt="simple", disable_numparse=True))
    return 1 if missing else 0
