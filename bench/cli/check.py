"""``archbench check``: judge recorded cells against a budget (PASS / FAIL / INCONCLUSIVE / ERROR / SKIPPED)."""

from __future__ import annotations

import argparse

from archbench.bench.errors import UsageError

EPILOG = """examples:
  archbench check results/quant-sample/records.jsonl --budget "p95_ms<=20, size_mib<=30, top1_agree>=0.99"
  archbench check results/quant-sample --budget budgets/edge.toml            a file with one profile
  archbench check runs/x --budget budgets/examples.toml:phone --strict           fail CI on INCONCLUSIVE too
  archbench check runs/x --budget "p99_ms<=5" --confidence 0.99 --format json
  archbench check --list-metrics

Percentile terms (p50_ms ... p99_ms, any pNN_ms) are judged from the raw samples with distribution-free
order-statistic bounds: PASS when the upper bound meets the budget, FAIL when the lower bound misses it,
INCONCLUSIVE otherwise, with how many samples would decide. Other metrics are compared as recorded.

exit codes: 0 nothing failed, 1 a FAIL or ERROR (or INCONCLUSIVE with --strict), 2 bad input"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from archbench.bench.cli.budget_args import add_budget_arguments

    p.add_argument("records", nargs="*", help="records.jsonl files or run folders (latest record per cell)")
    add_budget_arguments(p)
    p.add_argument("--format", choices=("table", "md", "json"), default="table")
    p.add_argument("--list-metrics", action="store_true", help="list budget metrics and exit")


def list_metrics() -> None:
    """The metric registry (archbench.bench.analyze.metrics) as a table: the names budgets, pick and compare take."""
    from tabulate import tabulate

    from archbench.bench.analyze.metrics import METRICS, aliases_of, gateable

    rows = []
    for m in METRICS.values():
        field = m.field or (f"{m.samples} (p{100 * m.quantile:g})" if m.quantile is not None else "(derived)")
        rows.append([m.name, m.unit or "-", field, m.better, "yes" if gateable(m) else "-", m.doc,
                     " ".join(aliases_of(m.name))])
    rows.append(["pNN_ms", "ms", "samples_ms", "lower", "-", "any latency percentile, e.g. p75_ms, p99.9_ms", ""])
    print(tabulate(rows, headers=["metric", "unit", "record field", "better", "--fail-on", "meaning", "aliases"],
                   tablefmt="simple"))


def run(args: argparse.Namespace) -> int:
    from archbench.bench.analyze.budgets import exit_code, judge
    from archbench.bench.cli.budget_args import budget_from_args, load_records, print_verdicts

    if args.list_metrics:
        list_metrics()
        return 0
    budget = budget_from_args(args)
    if budget is None:
        raise UsageError("check needs --budget (an expression or a TOML file)")
    if not args.records:
        raise UsageError("check needs a records.jsonl file or run folder")
    records = load_records(args.records)
    verdicts = judge(records, budget)
    print_verdicts(budget, verdicts, args.format)
    return exit_code(verdicts, args.strict)
