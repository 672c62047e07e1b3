"""``archbench compare BASE NEW``: per-cell changes with significance tests, and an optional CI gate.

The statistics and the gating rules live in archbench.bench.analyze.compare (see its docstring), the text in
archbench.bench.report.compare; this module only parses arguments, loads the two sides and prints.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys

from archbench.bench.cli.argtypes import count, seed

EPILOG = """examples:
  archbench compare results/base results/new
  archbench compare base/records.jsonl new/records.jsonl --fail-on "p95_ms:+10%,throughput_sps:-5%"
  archbench compare results/base results/new --md compare.md --alpha 0.01
  archbench compare old/ new/ --fail-on p50_ms:+5% --force     gate even cells whose environment differs
  archbench compare old/ new/ --format json | jq '.cells[] | select(.failed)'

metrics for --fail-on: p50_ms p90_ms p95_ms p99_ms mean_ms throughput_sps (tested on the samples), and
single-valued ones such as peak_rss_mib cuda_mem_mib size_mib top1_agree sqnr_db (`archbench check --list-metrics`)
(METRIC:+N% fails on a rise beyond N%, METRIC:-N% on a fall beyond N%; no sign = the metric's worse direction).

In the table, * = significant. With repetitions on both sides (archbench run --repetitions N, N >= 2): Welch's t
on the per-repetition values (logs) p < alpha AND the change is larger than the machine's noise floor for two runs
of that many repetitions: (1 + noise)^sqrt(1/R_base + 1/R_new) - 1, where noise is the 95% band of one worker
process's median (--noise, else the figure `archbench doctor` cached for this machine, else none). With one
repetition: Mann-Whitney U on the raw samples AND the bootstrap CI of the ratio excludes 1 (and the floor).
? = untested (single value such as peak memory, or no raw samples).

exit codes: 0 no gated regression, 1 a change beyond a --fail-on threshold that is significant (or a cell
that ran in BASE failed in NEW), 2 bad input"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", help="records .jsonl file or run folder: the reference")
    p.add_argument("new", help="records .jsonl file or run folder: the candidate")
    p.add_argument("--fail-on", metavar="SPEC", help='thresholds, e.g. "p95_ms:+10%%,throughput_sps:-5%%"')
    p.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    p.add_argument("--force", action="store_true", help="gate cells even when their environment fingerprints differ")
    p.add_argument("--format", choices=("table", "md", "csv", "json"), default="table", help="stdout format")
    p.add_argument("--md", metavar="FILE", help="also write the comparison as markdown to FILE")
    p.add_argument("--bootstrap", type=count(100), default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=seed, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--noise", type=float, default=None, metavar="PCT",
                   help="this machine's per-process noise in %% (the 95%% band of one worker process's median, as "
                        "`archbench doctor` measures it; each cell's floor scales it to the runs' repetitions); "
                        "default: the figure `archbench doctor` cached for this machine, if any; 0 to disable")


def run(args: argparse.Namespace) -> int:
    from archbench.bench.analyze.compare import compare, parse_fail_on
    from archbench.bench.analyze.merge import check_schema, merge_runs, read_runs
    from archbench.bench.errors import UsageError
    from archbench.bench.report import compare as text

    if args.bootstrap < 100:
        raise UsageError("--bootstrap must be at least 100")
    thresholds = parse_fail_on(args.fail_on)
    base_runs, new_runs = read_runs([args.base]), read_runs([args.new])
    check_schema([*base_runs, *new_runs])  # BASE and NEW must share one schema version too
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be >= 0")
    noise, source = noise_floor(args.noise)
    result = compare(merge_runs(base_runs), merge_runs(new_runs), thresholds, alpha=args.alpha, force=args.force,
                     n_boot=args.bootstrap, seed=args.seed, noise=noise)
    result.noise_source = source
    if thresholds and not any(c.status == "compared" for c in result.cells):
        raise UsageError(f"--fail-on gates nothing: no cell of {args.new} is also in {args.base} (same model, knobs, "
                         "runtime, precision, batch, device, threads); a gate that compared nothing cannot pass")
    if noise:
        r, at_r = result.floor()
        print(f"archbench compare: per-process noise {noise:.1%} ({source}): noise floor {at_r:.1%} "
              f"for {r} repetition(s) a side", file=sys.stderr)
    else:
        print(f"archbench compare: no noise floor ({source})", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(text.to_json(result), indent=1, default=str))
    elif args.format == "csv":
        rows = text.flat_rows(result)
        w = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["model"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    elif args.format == "md":
        print(text.markdown(result, args.base, args.new))
    else:
        print(text.table(result))
    if args.md:
        from archbench.bench.atomic import atomic_write

        atomic_write(args.md, text.markdown(result, args.base, args.new))
        print(f"archbench compare: wrote {args.md}", file=sys.stderr)
    for c in result.failures:
        print(f"archbench compare: FAIL {c.model} {c.runtime} {c.precision} b{c.batch}: {'; '.join(c.failures)}",
              file=sys.stderr)
    return result.exit_code


def noise_floor(pct: float | None) -> tuple[float, str]:
    """(fraction, where it came from): --noise, else this machine's `archbench doctor` cache, else 0."""
    import math

    from archbench.bench.errors import UsageError

    if pct is not None:
        if not (math.isfinite(pct) and 0 <= pct < 100):
            raise UsageError(f"--noise {pct}: a percentage in [0, 100)")
        return pct / 100, "--noise"
    from archbench.bench.machine.doctor import cache_path, load_noise

    nf = load_noise()
    if nf is None:
        return 0.0, "no `archbench doctor` figure cached for this machine: run it to set one"
    return nf.noise_pct / 100, f"archbench doctor, {nf.measured_at}, {cache_path()}"
