"""``archbench report``: markdown, CSV, JSON and PNG plots from one or more runs' records, across machines.

Run on the machine that produced the records, it measures that machine's peak FLOP/s and bytes/s once
(archbench.bench.machine.peaks.measure_peaks, about a second) and caches them in the run folder's peaks.json; records from other
machines use the peaks.json cached in their own run folders, or go without roofs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archbench.bench.analyze.merge import RunFile
    from archbench.bench.record import Record

EPILOG = """examples:
  archbench report runs/x/records.jsonl --out review/       report.md, report.csv, report.json, plots/*.png
  archbench report results/laptop results/h100 --out cmp/   one comparison across machines
  archbench report runs/x                                   markdown to stdout (no plots without --out)
  archbench report runs/x --format json --no-measure        machine-readable, measures nothing
  archbench report runs/x --out runs/x --no-layers          regenerate a run's report in place, faster
  archbench report runs/x --budget "p95_ms<=20,size_mib<=30" --out review/   with budget verdicts

A folder argument means its records.jsonl (or every *.jsonl in it). Records with different schema_version are
never mixed (exit 2). Budget verdicts come from --budget, else from a verdicts.json next to the records
(written by `archbench run --budget`).

exit codes: 0 ok, 2 bad input"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="RECORDS", help="records .jsonl files or run folders")
    p.add_argument("--out", metavar="DIR", help="write report.md, report.csv, report.json and plots/ here "
                   "(default: print the report to stdout)")
    p.add_argument("--format", choices=("md", "json", "csv"), default="md", help="stdout format without --out")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-measure", action="store_true",
                   help="do not measure this machine's peaks (cached peaks.json files are still read)")
    p.add_argument("--no-layers", action="store_true",
                   help="skip the per-layer memory/compute-bound tables (they build each zoo model once)")
    p.add_argument("--peaks", action="append", default=[], metavar="FILE", help="extra peaks.json to read")
    p.add_argument("--budget", metavar="SPEC", help='judge every cell against a budget: "p95_ms<=20,size_mib<=30" '
                   "or budgets/edge.toml[:PROFILE] (see `archbench check --help`)")


def _verdicts(runs: Sequence[RunFile], records: list[Record], budget: str | None) -> tuple[dict[tuple, Any], str]:
    """The records' budget verdicts (archbench.bench.analyze.budgets.CellVerdict per machine_cell_key), and what they
    were judged against ('' if nothing): --budget, else the verdicts.json beside each run's records."""
    from archbench.bench.analyze.budgets import CellVerdict, judge, parse_budget, verdicts_from_json
    from archbench.bench.analyze.merge import machine_cell_key
    from archbench.bench.report.verdicts import reasons

    if budget:
        out = {}
        for v in judge(records, parse_budget(budget)):
            prefix = v.label + ": "
            why = "; ".join(ln.removeprefix(prefix) for ln in reasons([v]))
            out[machine_cell_key(v.record)] = CellVerdict(v.verdict, why)
        return out, f"`{budget}`"
    out, found = {}, []
    for folder in dict.fromkeys(run.path.parent for run in runs):
        path = folder / "verdicts.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found.append(str(path))
        out |= verdicts_from_json(data, [r for run in runs if run.path.parent == folder for r in run.records])
    return out, ", ".join(f"`{f}`" for f in found)


def _gather_peaks(runs: Sequence[RunFile], args: argparse.Namespace) -> list[Any]:
    from archbench.bench.analyze.roofline import (
        PEAKS_FILE,
        is_this_machine,
        load_peaks,
        save_peaks,
    )

    folders = list(dict.fromkeys(run.path.parent for run in runs))
    from archbench.bench.machine.peaks import measure_peaks

    files = [f / PEAKS_FILE for f in folders] + [Path(p) for p in args.peaks]
    if args.out:
        files.append(Path(args.out) / PEAKS_FILE)
    peaks = [p for f in files for p in load_peaks(f)]
    if args.no_measure:
        return _unique(peaks)
    need: dict[tuple[str, int], set[Path]] = {}
    for run in runs:
        for r in run.records:
            if not r.ok or not is_this_machine(r):
                continue
            dev, thr = r.device, int(r.threads or 0)
            if not any(p.device == dev and p.threads == thr and p.hostname == r.hostname
                       and p.cpu_model == r.cpu_model for p in peaks):
                need.setdefault((dev, thr), set()).add(run.path.parent)
    for (dev, thr), dirs in need.items():
        if dev == "cuda":
            import torch

            if not torch.cuda.is_available():
                continue
        print(f"archbench report: measuring this machine's peaks ({dev}, {thr} threads) ...", file=sys.stderr)
        pk = measure_peaks(dev, thr)
        peaks.append(pk)
        targets = sorted(dirs) + ([Path(args.out)] if args.out else [])
        for d in targets:
            try:
                d.mkdir(parents=True, exist_ok=True)
                save_peaks(d / PEAKS_FILE, [pk])
            except OSError as e:
                print(f"archbench report: could not cache peaks in {d}: {e}", file=sys.stderr)
    return _unique(peaks)


def _unique(peaks: list[Any]) -> list[Any]:
    out: dict[tuple, Any] = {}
    for p in peaks:
        out[(p.hostname, p.cpu_model, p.gpu_name, p.device, p.threads)] = p
    return list(out.values())


def _layers(records: list[Record], peaks: list[Any]) -> tuple[dict[str, list[Any]], dict[str, float]]:
    """Layer bounds of every zoo model among the records, against the ridge of the first machine that measured it."""
    from archbench.bench.analyze.roofline import peaks_for
    from archbench.bench.measure.profile import zoo_layer_bounds

    layers: dict[str, list[Any]] = {}
    ridges: dict[str, float] = {}
    seen: set[tuple[str, str]] = set()
    for r in records:
        key = (r.model, r.knobs or "")
        if not r.ok or key in seen:
            continue
        pk = peaks_for(r, peaks)
        if pk is None:
            continue
        seen.add(key)
        label = key[0] + (f" {key[1]}" if key[1] not in ("", "{}") else "")
        try:
            rows = zoo_layer_bounds(key[0], key[1], pk.ridge)
        except Exception as e:  # an optional section: the report goes on without this model's layers
            print(f"archbench report: layer bounds of {label} skipped: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        if rows:
            layers[label] = rows
            ridges[label] = pk.ridge
    return layers, ridges


def run(args: argparse.Namespace) -> int:
    from archbench.bench import modes
    from archbench.bench.analyze.merge import load_runs, merge_runs
    from archbench.bench.analyze.roofline import place
    from archbench.bench.report.markdown import markdown, report_json, write_reports

    runs = load_runs(args.inputs)
    records = merge_runs(runs)
    sources = [str(run.path) for run in runs if run.records]
    verdicts, budget = _verdicts(runs, records, args.budget)
    peaks = _gather_peaks(runs, args)
    from archbench.bench.measure.profile import output_bytes

    placements = place(records, peaks, outputs=output_bytes)
    layers, ridges = ({}, {}) if args.no_layers or not peaks else _layers(records, peaks)
    argv = [*args.inputs, *(["--out", args.out] if args.out else [])]
    if "report" in sys.argv[1:3]:  # the command as typed, when run from the console script
        argv = sys.argv[sys.argv.index("report", 1) + 1:]
    command = "archbench report " + " ".join(argv)
    if not args.out:
        if args.format == "json":
            print(json.dumps(report_json(records, command, peaks=peaks, placements=placements, layers=layers,
                                         verdicts=verdicts), indent=1, default=str))
        elif args.format == "csv":
            import csv

            from archbench.bench.record import CSV_FIELDS

            w = csv.DictWriter(sys.stdout, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
            w.writeheader()
            w.writerows(r.to_dict() for r in records)
        else:
            print(markdown(records, command, peaks=peaks, placements=placements, layers=layers,
                           layer_ridges=ridges, sources=sources, budget=budget, verdicts=verdicts,
                           sections=modes.report_sections(records, peaks)))
        return 0
    out = Path(args.out)
    plots: list[Path] = []
    if not args.no_plots:
        from archbench.bench.report.plots import plot_all

        plots = plot_all(records, out / "plots", placements, peaks) + modes.plots(records, out / "plots")
    paths = write_reports(out, records, command, peaks=peaks, placements=placements, layers=layers,
                          layer_ridges=ridges, plots=plots, csv_name="report.csv", json_name="report.json",
                          sources=sources, budget=budget, verdicts=verdicts,
                          sections=modes.report_sections(records, peaks))
    print(f"archbench report: {len(records)} records from {len(sources)} file(s) -> "
          + ", ".join(str(p) for p in [*paths, *plots]), file=sys.stderr)
    return 0
