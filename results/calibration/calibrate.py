"""Calibration of archbench's stated confidence on this machine: run it, read README.md beside it for the results.

    python results/calibration/calibrate.py --out results/calibration [--runs 5] [--trials 8]

1. ``--runs`` back-to-back default runs of unchanged code (``archbench run --out RUN``), then
   - coverage: the share of (cell, run i, run j != i) where run j's p50 lies in run i's 95% interval;
   - the median interval half-width relative to p50;
   - compare false positives: cells whose p50 change ``archbench compare`` calls significant between consecutive
     runs (with and without the noise floor ``archbench doctor`` cached, when there is one);
   - speedup reproducibility: per model, the share of runs whose ONNX Runtime vs torch speedup point estimate lies
     in every other run's interval.
2. Power: ``--trials`` pairs of runs of planted:model (a model whose work grows by a set fraction) with 0%, 10%
   and 25% planted slowdown in the second run: how often compare flags the p50 change (0% = false positives),
   with the cached noise floor and without; and ``--trials`` single runs of planted:unchanged and planted:model
   with ``--baseline planted:unchanged``: how often the paired in-run ratio's interval excludes 1x.

Everything is measured by this repository's code; summary.json holds every number the README quotes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHBENCH = [sys.executable, "-c", "from archbench.bench.cli.main import main; import sys; sys.exit(main())"]


def archbench(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ARCHBENCH, *args], capture_output=True, text=True, env=env, cwd=cwd)


def records(run: Path) -> list:
    from archbench.bench.record import read_records

    return [r for r in read_records(run / "records.jsonl") if r.ok]


def default_runs(out: Path, n: int) -> list[Path]:
    runs = []
    for i in range(n):
        run = out / f"run{i}"
        if not (run / "records.jsonl").exists():
            t = time.monotonic()
            p = archbench("run", "--out", str(run))
            (run / "wall_s.txt").write_text(f"{time.monotonic() - t:.1f}\n")
            if p.returncode not in (0, 1):
                raise SystemExit(f"run {i} failed: {p.stderr[-2000:]}")
        runs.append(run)
    return runs


def coverage(runs: list[Path], quiet_only: bool = False) -> dict:
    """``quiet_only``: leave out pairs where either cell carries archbench's busy-machine flag (other processes took
    more than 10% of the CPUs while it was timed), the rule a user would apply to those cells too."""
    from archbench.bench.measure.harness import BUSY_PCT

    recs = [{r.key(): r for r in records(run)} for run in runs]
    hits = total = 0
    widths = []
    for i, j in itertools.permutations(range(len(runs)), 2):
        for k, ri in recs[i].items():
            rj = recs[j].get(k)
            if rj is None or ri.latency_p50_lo_ms is None:
                continue
            if quiet_only and max(ri.other_cpu_pct or 0, rj.other_cpu_pct or 0) > BUSY_PCT:
                continue
            total += 1
            hits += ri.latency_p50_lo_ms <= rj.latency_p50_ms <= ri.latency_p50_hi_ms
    for rs in recs:
        widths += [r.p50_rel_ci for r in rs.values() if r.p50_rel_ci is not None]
    widths.sort()
    return {"pairs": total, "covered": hits, "coverage": hits / total if total else None,
            "median_rel_halfwidth": widths[len(widths) // 2] if widths else None,
            "max_rel_halfwidth": widths[-1] if widths else None}


def ideal_coverage(reps: int, runs: int) -> dict:
    """What the coverage checks would read if every interval were exactly right and runs differed only as
    repetitions within a run do (no run-level shift): x_r ~ N(mu, s^2), the interval mean +/- t(R-1) sd / sqrt(R).

    - another run's estimate lies in this run's interval with P(|T(R-1)| <= t(R-1) / sqrt 2): both estimates carry
      sampling error, so even an exact 95% interval of the long-run value covers a re-run's estimate less often
      (88% at R = 5, 91% at R = 3, 83% as R grows);
    - the mean of the other ``runs - 1`` runs' estimates lies in it with P(|T(R-1)| <= t / sqrt(1 + 1/(runs-1)))."""
    import math

    from archbench.bench.analyze.intervals import t_cdf, t_quantile

    t = t_quantile(reps - 1)

    def inside(c: float) -> float:
        return 2 * t_cdf(c, reps - 1) - 1

    return {"repetitions": reps, "another_run": inside(t / math.sqrt(2)),
            "other_runs_pooled": inside(t / math.sqrt(1 + 1 / (runs - 1)))}


def coverage_of_pooled(runs: list[Path]) -> dict:
    """The share of (cell, run i) where the geometric mean of the other runs' p50s lies in run i's interval: closer
    to "does the interval hold the long-run value" than one other run's estimate is."""
    import math

    recs = [{r.key(): r for r in records(run)} for run in runs]
    hits = total = 0
    for i, ri_all in enumerate(recs):
        for k, ri in ri_all.items():
            others = [recs[j][k].latency_p50_ms for j in range(len(recs)) if j != i and k in recs[j]]
            if not others or ri.latency_p50_lo_ms is None:
                continue
            pooled = math.exp(sum(math.log(v) for v in others) / len(others))
            total += 1
            hits += ri.latency_p50_lo_ms <= pooled <= ri.latency_p50_hi_ms
    return {"pairs": total, "covered": hits, "coverage": hits / total if total else None}


def variance_components(runs: list[Path]) -> dict:
    """Per cell, on logs of the per-repetition p50s: the spread between repetitions of one run (s_within, what the
    intervals are built from) and between whole runs beyond what s_within explains,
    s_run^2 = var(run means) - mean(s_within^2) / R  (floored at 0): the run-level shift no interval built inside one
    run can see. Medians over cells, as fractions (log sd ~ relative sd)."""
    import statistics

    import numpy as np

    recs = [{r.key(): r for r in records(run)} for run in runs]
    within, between, run_level, per_cell = [], [], [], {}
    for k in recs[0]:
        reps = [np.log(recs[i][k].rep_p50_ms) for i in range(len(recs)) if k in recs[i] and len(recs[i][k].rep_p50_ms) > 1]
        if len(reps) < 3:
            continue
        sw2 = statistics.fmean(float(x.var(ddof=1)) for x in reps)
        r = statistics.fmean(len(x) for x in reps)
        means = [float(x.mean()) for x in reps]
        vb = statistics.variance(means)
        sr2 = max(0.0, vb - sw2 / r)
        within.append(sw2 ** 0.5)
        between.append(vb ** 0.5)
        run_level.append(sr2 ** 0.5)
        per_cell[f"{k[0]} {k[2]}"] = {"s_within": round(sw2 ** 0.5, 4), "sd_run_means": round(vb ** 0.5, 4),
                                      "s_run": round(sr2 ** 0.5, 4)}
    med = statistics.median
    return {"cells": len(within), "median_s_within": med(within), "median_sd_of_run_means": med(between),
            "median_s_run": med(run_level), "cells_with_run_level_shift": sum(v > 0 for v in run_level),
            "per_cell": per_cell}


def repetitions_for(halfwidth: float, s_within: float) -> int:
    """The fewest repetitions R whose t(R-1) s / sqrt(R) is within ``halfwidth`` (a fraction)."""
    import math

    from archbench.bench.analyze.intervals import t_quantile

    r = 2
    while t_quantile(r - 1) * s_within / math.sqrt(r) > halfwidth and r < 10_000:
        r += 1
    return r


def false_positives(runs: list[Path], noise: float) -> dict:
    from archbench.bench.analyze.compare import compare

    out = {}
    for floor, label in ((0.0, "no_noise_floor"), (noise, "noise_floor")):
        flagged = cells = 0
        for a, b in zip(runs, runs[1:], strict=False):
            res = compare(records(a), records(b), noise=floor)
            for c in res.cells:
                ch = c.changes.get("p50_ms")
                if ch is None:
                    continue
                cells += 1
                flagged += bool(ch.significant)
        out[label] = {"noise": floor, "cells": cells, "flagged": flagged, "rate": flagged / cells if cells else None}
    return out


def speedup_reproducibility(runs: list[Path]) -> dict:
    from archbench.bench.analyze.findings import runtime_winners

    per_model: dict[str, list] = {}
    for run in runs:
        for w in runtime_winners(records(run)):
            per_model.setdefault(w.model, []).append(w)
    ok = total = 0
    detail = {}
    for model, ws in per_model.items():
        # Orient every run as the same pair (onnxruntime vs torch): speedup of the first run's winner.
        ref = (ws[0].fastest, ws[0].runner_up)
        vals = []
        for w in ws:
            s, lo, hi = w.speedup, w.speedup_lo, w.speedup_hi
            if (w.fastest, w.runner_up) != ref:
                s, lo, hi = 1 / s, (1 / hi if hi else None), (1 / lo if lo else None)
            vals.append((s, lo, hi))
        for i, (s, _, _) in enumerate(vals):
            total += 1
            inside = all(lo is not None and lo <= s <= hi for j, (_, lo, hi) in enumerate(vals) if j != i)
            ok += inside
        detail[model] = {"pair": f"{ref[0]} vs {ref[1]}", "speedups": [round(v[0], 3) for v in vals],
                         "intervals": [[round(v[1], 3) if v[1] else None, round(v[2], 3) if v[2] else None]
                                       for v in vals]}
    return {"runs_in_every_other_interval": ok, "of": total, "share": ok / total if total else None,
            "per_model": detail}


def power(out: Path, trials: int, noise: float) -> dict:
    from archbench.bench.analyze.compare import compare

    result = {}
    for level in (0.0, 0.10, 0.25):
        flagged = []
        for t in range(trials):
            pair = []
            for side, extra in (("base", 0.0), ("new", level)):
                run = out / "power" / f"{int(level * 100)}pct_trial{t}_{side}"
                if not (run / "records.jsonl").exists():
                    env = {**os.environ, "ARCHBENCH_PLANTED_SLOWDOWN": str(extra)}
                    p = archbench("run", "planted:model", "--runtime", "torch", "--out", str(run), env=env, cwd=HERE)
                    if p.returncode not in (0, 1):
                        raise SystemExit(f"power run failed: {p.stderr[-2000:]}")
                pair.append(records(run))
            res = compare(pair[0], pair[1], noise=noise)
            ch = res.cells[0].changes["p50_ms"]
            flagged.append({"change": ch.change, "significant": bool(ch.significant)})
        result[f"{int(level * 100)}%"] = {"trials": trials, "flagged": sum(f["significant"] for f in flagged),
                                         "rate": sum(f["significant"] for f in flagged) / trials,
                                         "changes": [round(f["change"], 4) for f in flagged]}
    return result


def paired_power(out: Path, trials: int, reps: int | None = None, levels: tuple[float, ...] = (0.0, 0.10, 0.25)) -> dict:
    """The same planted slowdowns measured the way archbench recommends for an A/B question: both models in one run
    (``--baseline``), so each repetition of the slowed model is paired with the baseline's of the same round.
    Flagged: the paired p50 ratio's 95% interval excludes 1x (at 0%: a false positive)."""
    from archbench.bench.analyze.findings import baseline_ratios

    result = {}
    for level in levels:
        got = []
        for t in range(trials):
            run = out / "paired" / f"{int(level * 100)}pct_trial{t}{f'_r{reps}' if reps else ''}"
            if not (run / "records.jsonl").exists():
                env = {**os.environ, "ARCHBENCH_PLANTED_SLOWDOWN": str(level)}
                more = ["--repetitions", str(reps)] if reps else []
                p = archbench("run", "planted:unchanged", "planted:model", "--baseline", "planted:unchanged",
                              "--runtime", "torch", *more, "--out", str(run), env=env, cwd=HERE)
                if p.returncode not in (0, 1):
                    raise SystemExit(f"paired power run failed: {p.stderr[-2000:]}")
            (v,) = baseline_ratios(records(run))
            got.append({"ratio": round(v.ratio, 4), "lo": round(v.lo, 4), "hi": round(v.hi, 4),
                        "flagged": bool(v.significant)})
        result[f"{int(level * 100)}%"] = {"trials": trials, "flagged": sum(g["flagged"] for g in got),
                                         "rate": sum(g["flagged"] for g in got) / trials,
                                         "covers_planted": sum(g["lo"] <= 1 + level <= g["hi"] for g in got),
                                         "ratios": got}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--trials", type=int, default=8)
    args = ap.parse_args()
    args.out = args.out.resolve()
    from archbench.bench.machine.doctor import load_noise

    nf = load_noise()
    noise = nf.noise_pct / 100 if nf is not None else 0.0
    t0 = time.monotonic()
    runs = default_runs(args.out, args.runs)
    summary = {
        "machine": records(runs[0])[0].cpu_model, "cpus": records(runs[0])[0].cpu_count,
        "git_commit": records(runs[0])[0].git_commit,
        "default_run_wall_s": [float((r / "wall_s.txt").read_text()) for r in runs if (r / "wall_s.txt").exists()],
        "doctor_noise": noise,
        "coverage": coverage(runs),
        "coverage_quiet_cells": coverage(runs, quiet_only=True),
        "coverage_of_other_runs_pooled": coverage_of_pooled(runs),
        "coverage_if_intervals_were_exact": ideal_coverage(records(runs[0])[0].repetitions, len(runs)),
        "variance_components": (vc := variance_components(runs)),
        "repetitions_for_5pct_halfwidth": repetitions_for(0.05, vc["median_s_within"]),
        "false_positives": false_positives(runs, noise),
        "speedup_reproducibility": speedup_reproducibility(runs),
        "power": power(args.out, args.trials, noise),
        "power_without_noise_floor": power(args.out, args.trials, 0.0),
        "power_paired_in_one_run": paired_power(args.out, args.trials),
        "power_paired_in_one_run_10_repetitions": paired_power(args.out, args.trials, 10, (0.0, 0.25)),
        "calibration_wall_s": round(time.monotonic() - t0, 1),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
