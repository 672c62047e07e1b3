"""Command-line pieces shared by ``run --budget``, ``check``, ``pick`` and ``sweep``: options, loading, verdicts.

The commands stay thin: parse into a Budget (archbench.bench.analyze.budgets) and worker options, call the engine or read records,
judge, and hand the numbers to archbench.bench.report.verdicts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archbench.bench.cli.argtypes import count
from archbench.bench.errors import UsageError

if TYPE_CHECKING:
    from archbench.bench.record import Record

BUDGET_HELP = ("budget: 'p95_ms<=20, size_mib<=30, top1_agree>=0.99', or budgets/edge.toml[:PROFILE] "
               "(metrics: `archbench check --list-metrics`)")


def add_budget_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    g = p.add_argument_group("budget")
    g.add_argument("--budget", required=required, metavar="EXPR|FILE.toml[:PROFILE]", help=BUDGET_HELP)
    g.add_argument("--profile", help="profile of a budget file with several")
    g.add_argument("--confidence", type=float, default=None,
                   help="one-sided confidence of percentile bounds (default: the profile's, else 0.95)")
    g.add_argument("--strict", action="store_true", help="exit 1 on INCONCLUSIVE too (default: only FAIL/ERROR)")


def budget_from_args(args: argparse.Namespace) -> Any:
    from archbench.bench.analyze.budgets import parse_budget

    if not getattr(args, "budget", None):
        if getattr(args, "profile", None):
            raise UsageError("--profile needs --budget FILE.toml")
        return None
    return parse_budget(args.budget, args.profile, args.confidence)


def add_variant_arguments(p: argparse.ArgumentParser) -> None:
    """Options of int8 variants and fidelity (passed to the workers; they do not identify a cell)."""
    g = p.add_argument_group("quantization and fidelity")
    g.add_argument("--calibration", metavar="PKG.MOD:FN",
                   help="int8-static calibration data: fn(ctx) -> iterable of {input name: array} (archbench.bench.measure.hooks)")
    g.add_argument("--calib-batches", type=count(1), default=None, help="int8-static calibration batches (default 16)")
    g.add_argument("--calib-batch-size", type=count(1), default=None, help="samples per calibration batch (default 8)")
    g.add_argument("--fidelity-samples", type=count(0), default=None,
                   help="compare at least this many samples with the fp32 PyTorch model (default 64)")
    g.add_argument("--metric-hook", metavar="PKG.MOD:FN",
                   help="task metric: fn(predict, ctx) -> float, higher is better; recorded as task_metric "
                        "(archbench.bench.measure.hooks)")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Worker options (RunSpec.options); hooks are imported here first, so a bad one is exit 2, not N failed cells."""
    from archbench.bench.measure.hooks import load_hook

    opts: dict[str, Any] = {}
    for name, flag in (("calib_batches", "--calib-batches"), ("calib_batch_size", "--calib-batch-size"),
                       ("fidelity_samples", "--fidelity-samples")):
        v = getattr(args, name, None)
        if v is not None:
            if v < (0 if name == "fidelity_samples" else 1):
                raise UsageError(f"{flag} {v}: must be >= {0 if name == 'fidelity_samples' else 1}")
            opts[name] = v
    for name, flag in (("calibration", "--calibration"), ("metric_hook", "--metric-hook")):
        v = getattr(args, name, None)
        if v:
            load_hook(v, flag)
            opts[name] = v
    return opts


def check_precisions(text: str) -> None:
    from archbench.bench.measure.quantize import PRECISIONS

    for p in (t.strip() for t in text.split(",")):
        if p and p not in PRECISIONS:
            raise UsageError(f"unknown precision {p!r}; known: {', '.join(PRECISIONS)}")


def load_records(paths: Sequence[str]) -> list[Record]:
    """Latest record per cell from records.jsonl files (or run folders holding one), as Records."""
    from archbench.bench.analyze.merge import check_schema, read_run
    from archbench.bench.record import latest_per_cell

    runs = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            path = path / "records.jsonl"
        if path.suffix == ".csv":
            raise UsageError(f"{p}: give records.jsonl; the CSV has no raw samples to judge percentiles by")
        if not path.is_file():
            raise UsageError(f"no such records file: {path}")
        runs.append(read_run(path))
    check_schema(runs)  # the one schema check of every command: newer or mixed versions are refused
    rows: list[Record] = [r for run in runs for r in run.records]
    # --find-max-batch trials are memory probes, not cells to judge.
    rows = [r for r in rows if r.mode != "maxbatch-trial"]
    if not rows:
        raise UsageError(f"no records in {', '.join(paths)}")
    return latest_per_cell(rows)


def print_verdicts(budget: Any, verdicts: Sequence[Any], fmt: str = "table", file: Any = None) -> None:
    from archbench.bench.report import verdicts as vr

    out = file or sys.stdout
    if fmt == "json":
        print(json.dumps(vr.verdicts_json(budget, verdicts), indent=2), file=out)
        return
    print(vr.budget_header(budget), file=out)
    print(vr.verdict_table(budget, verdicts, "github" if fmt == "md" else "simple"), file=out)
    why = vr.reasons(verdicts)
    if why:
        print("why not PASS:", file=out)
        for w in why:
            print(f"  {w}", file=out)
    print(f"summary: {vr.summary_line(verdicts)}", file=out)


def judge_and_report(out: Path | None, records: Sequence[Record], budget: Any, args: argparse.Namespace,
                     objective: str | None = None) -> int:
    """After a run or sweep: print verdicts, the pick and flags; append them to out/report.md; write
    out/verdicts.json. Returns the budget's exit code (1 on FAIL/ERROR, and INCONCLUSIVE with --strict)."""
    from archbench.bench.analyze import select
    from archbench.bench.analyze.budgets import exit_code, judge
    from archbench.bench.report import verdicts as vr

    records = [r for r in records if r.mode != "maxbatch-trial"]
    verdicts = judge(records, budget)
    print_verdicts(budget, verdicts)
    p = select.pick(verdicts, objective or select.DEFAULT_OBJECTIVE, records)
    for line in vr.pick_lines(p, records):
        print(line)
    flags = select.slower_than_fp32(records, budget.confidence) + select.dominated(records, budget.confidence)
    for line in vr.flag_lines(flags):
        print(line)
    if out is not None:
        axes = select.DEFAULT_PARETO
        fronts = select.pareto_front(records, axes)
        md = out / "report.md"
        section = vr.markdown_section(budget, verdicts, p, fronts, axes, flags, records)
        from archbench.bench.atomic import atomic_write

        before = md.read_text(encoding="utf-8", errors="replace") if md.exists() else ""
        atomic_write(md, before + "\n" + section + "\n")
        atomic_write(out / "verdicts.json", json.dumps(vr.verdicts_json(budget, verdicts), indent=2) + "\n")
        print(f"verdicts appended to {md}; {out / 'verdicts.json'}", file=sys.stderr)
    return exit_code(verdicts, getattr(args, "strict", False))
