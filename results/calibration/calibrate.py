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
   and 25% planted slowdown in the second run: how often compare flags the p50 change (0% = false positives).

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--trials", type=int, default=8)
    args = ap.parse_args()
    args.out = args.out.resolve()
    from archbench.bench.measure.doctor import load_noise

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
        "false_positives": false_positives(runs, noise),
        "speedup_reproducibility": speedup_reproducibility(runs),
        "power": power(args.out, args.trials, noise),
        "calibration_wall_s": round(time.monotonic() - t0, 1),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
