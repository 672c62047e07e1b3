"""Reports from records: report.md (for people: PRs, wikis, design reviews), CSV and JSON (for machines), and the
end-of-run table. The only place record numbers become display strings.

    write_reports(out, records, command)                       # what `archbench run` writes at the end
    write_reports(out, records, command, peaks=..., placements=..., layers=..., plots=[...],
                  csv_name="report.csv", json_name="report.json")   # what `archbench report` writes

The markdown has: an environment header (one line set per machine), conventions, computed **findings** (MACs
that fail to predict latency, int8/fp16/bf16 slower than fp32, the fastest runtime per model and by how much, unstable
cells, cells timed on a busy machine, cells far below their roofline, budget verdicts), one table per model
family, a cross-machine table when records come from several machines, the roofline placement and per-layer
memory/compute bounds when measured peaks are given, and links to the plots.

Columns that only some records carry (fidelity metrics such as ``top1_agree``, ``cosine``, ``sqnr_db``; budget
``verdict``) appear only when at least one record has them; a record without them shows "-".
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tabulate import tabulate

from archbench.bench.analyze.stats import CV_WARN
from archbench.bench.env import fingerprint
from archbench.bench.measure.harness import BUSY_PCT
from archbench.bench.record import CSV_FIELDS, write_csv
from archbench.bench.report.format import human

TABLE_COLS = ("model", "runtime", "precision", "batch", "status", "p50 ms", "p95 ms", "CV", "samples/s",
              "MACs", "size MiB", "peak RSS MiB")

# Findings thresholds (see the "Findings" section of the report, which states them too).
MACS_RATIO = 0.5  # a model with fewer than half the MACs of another ...
LATENCY_RATIO = 0.8  # ... that still takes more than 80% of its latency: MACs failed to predict latency
ROOF_SHARE = 0.10  # achieved FLOP/s below 10% of the attainable roof: overhead-bound, not FLOP- or byte-bound
MAX_ITEMS = 8  # list at most this many items per finding, then "and N more"


def num(x: Any) -> str:
    """A number for people: 3 significant digits, thousands separators above 1000, '-' for None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) < 0.001:
        return f"{x:.2g}"
    return f"{x:.3g}"


def _f(x: Any, digits: int = 3) -> str:  # kept for callers of the earlier API
    return num(x)


def _mode(r: dict[str, Any]) -> str:
    return str(r.get("mode") or "infer")


def reportable(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records a report shows: all but the memory-only trials of --find-max-batch (their OOMs are the search
    working, not failures; the cell's own record carries max_batch)."""
    return [r for r in records if _mode(r) != "maxbatch-trial"]


def _ok(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in reportable(records) if r.get("status") == "ok" and r.get("latency_p50_ms")]


def _cv_cell(r: dict[str, Any]) -> str:
    cv = r.get("latency_cv")
    if cv is None:
        return "-"
    return f"{cv:.0%}" + (" !" if cv > CV_WARN else "")


def table_rows(records: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Rows for TABLE_COLS (the compact table `archbench run` prints)."""
    rows = []
    for r in records:
        ok = r.get("status") == "ok"
        rows.append([
            r["model"], r["runtime"], r["precision"], str(r["batch"]),
            r["status"] + ("" if ok else f": {str(r.get('error') or '')[:60]}"),
            num(r.get("latency_p50_ms")), num(r.get("latency_p95_ms")), _cv_cell(r),
            num(r.get("throughput_sps")), human(r.get("macs")), num(r.get("size_mib")), num(r.get("peak_rss_mib")),
        ])
    return rows


def runtime_winners(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (machine, model, knobs, precision, batch, device): the runtime with the lowest p50, how much faster it
    is than the runner-up (speedup = runner-up p50 / best p50), and the Mann-Whitney p-value of the difference."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in _ok(records):
        cells[(fingerprint(r), r["model"], r.get("knobs") or "", r["precision"], r["batch"], r["device"],
               _mode(r))].append(r)
    out = []
    for (machine, model, _knobs, precision, batch, device, mode), rs in cells.items():
        if len({r["runtime"] for r in rs}) < 2:
            continue
        rs = sorted(rs, key=lambda r: r["latency_p50_ms"])
        best, second = rs[0], rs[1]
        p_value = None
        if len(best.get("samples_ms") or []) > 1 and len(second.get("samples_ms") or []) > 1:
            from archbench.bench.analyze.compare import mann_whitney_u

            p_value = mann_whitney_u(second["samples_ms"], best["samples_ms"]).p_value
        out.append({
            "model": model, "precision": precision, "batch": batch, "device": device, "machine": machine,
            "mode": mode, "fastest": best["runtime"], "p50_ms": best["latency_p50_ms"],
            "runner_up": second["runtime"], "runner_up_p50_ms": second["latency_p50_ms"],
            "speedup": second["latency_p50_ms"] / best["latency_p50_ms"],
            "p_value": p_value,  # Mann-Whitney U of the two runtimes' samples; None without raw samples
        })
    return out


# ----------------------------------------------------------------------------------------------------- findings


@dataclass
class Finding:
    kind: str  # macs_mispredict | slower_than_fp32 | runtime_winner | unstable | busy | overhead_bound |
    #            memory_bound | budget | failed | machines
    text: str  # one markdown paragraph/bullet
    items: list[str] = field(default_factory=list)  # sub-bullets
    data: list[dict[str, Any]] = field(default_factory=list)  # the numbers behind it, for report.json
    section: str = ""  # when set, the items go under this heading after the findings, not as sub-bullets


def _cell(r: dict[str, Any]) -> str:
    return f"{r['runtime']} {r['precision']} b{r['batch']}" + ("" if _mode(r) == "infer" else f" {_mode(r)}")


def _capped(items: list[str]) -> list[str]:
    return items if len(items) <= MAX_ITEMS else items[:MAX_ITEMS] + [f"... and {len(items) - MAX_ITEMS} more"]


def macs_mispredictions(records: Sequence[dict[str, Any]], macs_ratio: float = MACS_RATIO,
                        latency_ratio: float = LATENCY_RATIO) -> list[dict[str, Any]]:
    """Pairs (a, b) measured alike (same machine, runtime, precision, batch, device) where a has fewer than
    ``macs_ratio`` x b's MACs but more than ``latency_ratio`` x its p50 latency. For each a, only the pair
    whose surprise (latency ratio / MACs ratio) is largest; most surprising first."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in _ok(records):
        if r.get("macs"):
            groups[(fingerprint(r), r["runtime"], r["precision"], r["batch"], r["device"], _mode(r))].append(r)
    best: dict[tuple, dict[str, Any]] = {}
    for key, rs in groups.items():
        for a in rs:
            for b in rs:
                if a is b:
                    continue
                mr = a["macs"] / b["macs"]
                lr = a["latency_p50_ms"] / b["latency_p50_ms"]
                if mr < macs_ratio and lr > latency_ratio:
                    k = (*key, a["model"], a.get("knobs") or "")
                    item = {"a": a, "b": b, "macs_ratio": mr, "latency_ratio": lr, "surprise": lr / mr}
                    if k not in best or item["surprise"] > best[k]["surprise"]:
                        best[k] = item
    return sorted(best.values(), key=lambda d: -d["surprise"])


def precision_slowdowns(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reduced-precision cells (int8, fp16, bf16) slower (p50) than the fp32 cell of the same model, runtime,
    batch, device and machine."""
    from archbench.bench.analyze.select import REDUCED

    fp32: dict[tuple, dict[str, Any]] = {}
    for r in _ok(records):
        if r["precision"] == "fp32":
            fp32[(fingerprint(r), r["model"], r.get("knobs") or "", r["runtime"], r["batch"], r["device"],
                  _mode(r))] = r
    out = []
    for r in _ok(records):
        if r["precision"] not in REDUCED:
            continue
        base = fp32.get((fingerprint(r), r["model"], r.get("knobs") or "", r["runtime"], r["batch"], r["device"],
                         _mode(r)))
        if base and r["latency_p50_ms"] > base["latency_p50_ms"]:
            p_value = None
            if len(r.get("samples_ms") or []) > 1 and len(base.get("samples_ms") or []) > 1:
                from archbench.bench.analyze.compare import mann_whitney_u

                p_value = mann_whitney_u(base["samples_ms"], r["samples_ms"]).p_value
            out.append({"variant": r, "fp32": base, "slowdown": r["latency_p50_ms"] / base["latency_p50_ms"],
                        "p_value": p_value})
    return sorted(out, key=lambda d: -d["slowdown"])


def _verdict_of(r: dict[str, Any]) -> tuple[str | None, str]:
    """(pass | fail | other text | None, reason) from whichever verdict fields the record carries."""
    v = next((r[k] for k in VERDICT_FIELDS if r.get(k) not in (None, "")), None)
    reason = next((r[k] for k in REASON_FIELDS if r.get(k)), "")
    if isinstance(reason, (list, tuple)):
        reason = "; ".join(map(str, reason))
    if v is None:
        return None, str(reason)
    s = str(v).strip().lower()
    if s in ("pass", "passed", "ok", "true", "met", "yes"):
        return "pass", str(reason)
    if s in ("fail", "failed", "false", "violated", "no"):
        return "fail", str(reason)
    return s, str(reason)


def findings(records: Sequence[dict[str, Any]], placements: Sequence[Any] = ()) -> list[Finding]:
    """What the data says, computed; each Finding carries its markdown and the numbers behind it."""
    from archbench.bench.analyze.merge import machine_labels

    labels = machine_labels(records) if records else {}
    many = len(labels) > 1

    def where(r: dict[str, Any]) -> str:
        return f" on {labels[fingerprint(r)]}" if many else ""

    out: list[Finding] = []
    ok = _ok(records)

    mis = macs_mispredictions(records)
    if mis:
        items = []
        for d in mis:
            a, b, lr = d["a"], d["b"], d["latency_ratio"]
            speed = f"{lr:.1f}x **slower**" if lr >= 1 else f"only {1 / lr:.2f}x faster"
            noisy = " (noisy: CV > 10%)" if any(x.get("stable") is False for x in (a, b)) else ""
            items.append(f"**{a['model']}** has {d['macs_ratio']:.2g}x the MACs of **{b['model']}** but is {speed} "
                         f"({_cell(a)}{where(a)}: {num(a['latency_p50_ms'])} ms vs {num(b['latency_p50_ms'])} ms)"
                         f"{noisy}")
        out.append(Finding(
            "macs_mispredict",
            f"**MACs fail to predict latency** in {len(mis)} case(s): fewer than {MACS_RATIO:g}x the MACs, yet more "
            f"than {LATENCY_RATIO:g}x the p50 latency of a model measured alike (memory traffic, depthwise or "
            "recurrent ops, or per-op dispatch cost dominate):", _capped(items),
            [{"model": d["a"]["model"], "vs": d["b"]["model"], "runtime": d["a"]["runtime"],
              "precision": d["a"]["precision"], "batch": d["a"]["batch"], "macs_ratio": d["macs_ratio"],
              "latency_ratio": d["latency_ratio"]} for d in mis]))

    slow = precision_slowdowns(records)
    if slow:
        out.append(Finding(
            "slower_than_fp32", f"**Reduced precision slower than fp32** in {len(slow)} cell(s) (int8: quantized "
            "kernels missing or quantize/dequantize overhead; fp16/bf16: few native half-precision kernels on this "
            "hardware, casts around the rest):",
            _capped([f"**{d['variant']['model']}** {d['variant']['precision']} ({d['variant']['runtime']} "
                     f"b{d['variant']['batch']}{where(d['variant'])}): {d['slowdown']:.2f}x slower, "
                     f"{num(d['variant']['latency_p50_ms'])} ms vs {num(d['fp32']['latency_p50_ms'])} ms fp32"
                     + (f" (within noise: Mann-Whitney p = {d['p_value']:.2g})"
                        if d["p_value"] is not None and d["p_value"] >= 0.05 else "") for d in slow]),
            [{"model": d["variant"]["model"], "runtime": d["variant"]["runtime"], "batch": d["variant"]["batch"],
              "precision": d["variant"]["precision"], "slowdown": d["slowdown"], "p_value": d["p_value"]}
             for d in slow]))

    wins = runtime_winners(records)
    if wins:
        tally: dict[str, int] = defaultdict(int)
        for w in wins:
            tally[w["fastest"]] += 1
        lead = ", ".join(f"{rt} in {n}" for rt, n in sorted(tally.items(), key=lambda kv: -kv[1]))
        out.append(Finding(
            "runtime_winner", f"**Fastest runtime** (lowest p50) per model: {lead} of {len(wins)} comparison(s).",
            ([f"**{w['model']}** ({w['precision']} b{w['batch']} {w['device']}"
                     f"{' on ' + labels.get(w['machine'], '') if many else ''}): **{w['fastest']}**, "
                     f"{w['speedup']:.3g}x faster than {w['runner_up']} ({num(w['p50_ms'])} vs "
                     f"{num(w['runner_up_p50_ms'])} ms)"
                     + (f" (not significant: Mann-Whitney p = {w['p_value']:.2g})"
                        if w["p_value"] is not None and w["p_value"] >= 0.05 else "")
                     for w in sorted(wins, key=lambda w: -w["speedup"])]),
            [{k: v for k, v in w.items() if k != "machine"} | {"machine": labels.get(w["machine"], "")}
             for w in wins], section="Fastest runtime per model"))

    unstable = sorted((r for r in ok if (r.get("latency_cv") or 0) > CV_WARN), key=lambda r: -r["latency_cv"])
    if unstable:
        out.append(Finding(
            "unstable", f"**Unstable cells**: {len(unstable)} of {len(ok)} have CV > {CV_WARN:.0%}; their "
            "percentiles move between runs (close other programs, pin threads, or raise --min-time), and "
            "`archbench compare` needs more samples to call their changes significant:",
            _capped([f"{r['model']} {_cell(r)}{where(r)}: CV {r['latency_cv']:.0%}" for r in unstable]),
            [{"model": r["model"], "runtime": r["runtime"], "precision": r["precision"], "batch": r["batch"],
              "cv": r["latency_cv"]} for r in unstable]))

    busy = sorted((r for r in ok if (r.get("other_cpu_pct") or 0) > BUSY_PCT), key=lambda r: -r["other_cpu_pct"])
    if busy:
        out.append(Finding(
            "busy", f"**Timed on a busy machine**: {len(busy)} of {len(ok)} cells shared the CPUs with other "
            f"processes while being timed (more than {BUSY_PCT:.0f}% of all CPUs' time went elsewhere, steal "
            "included); their latencies are inflated by an amount this run cannot know. Re-measure them on an idle "
            "machine:",
            _capped([f"{r['model']} {_cell(r)}{where(r)}: {r['other_cpu_pct']:.0f}% other CPU" for r in busy]),
            [{"model": r["model"], "runtime": r["runtime"], "precision": r["precision"], "batch": r["batch"],
              "other_cpu_pct": r["other_cpu_pct"]} for r in busy]))

    if placements:
        low = sorted((p for p in placements if p.of_roof is not None and p.of_roof < ROOF_SHARE),
                     key=lambda p: p.of_roof)
        if low:
            out.append(Finding(
                "overhead_bound", f"**Far below the roofline** (< {ROOF_SHARE:.0%} of the attainable FLOP/s at "
                "their arithmetic intensity): neither FLOPs nor bytes explain their latency; per-op dispatch, "
                "small kernels or threading overhead do:",
                _capped([f"{p.model} {p.runtime} {p.precision} b{p.batch}"
                         f"{' on ' + labels.get(p.machine, '?') if many else ''}: "
                         f"{p.achieved_flops_per_s / 1e9:.3g} GFLOP/s, {p.of_roof:.1%} of the "
                         f"{p.roof_flops_per_s / 1e9:.3g} attainable" for p in low]),
                [{"model": p.model, "runtime": p.runtime, "precision": p.precision, "batch": p.batch,
                  "of_roof": p.of_roof} for p in low]))
        mem = [p for p in placements if p.bound == "memory"]
        if mem:
            names = ", ".join(dict.fromkeys(p.model for p in mem))
            out.append(Finding(
                "memory_bound", f"**Memory-bound** (arithmetic intensity below the ridge point) as whole models: "
                f"{names}. More bandwidth or smaller weights (fp16, int8) help them; more FLOP/s does not.",
                [], [{"model": p.model, "runtime": p.runtime, "intensity": p.intensity} for p in mem]))

    verdicts = [(r, *_verdict_of(r)) for r in records]
    judged = [(r, v, why) for r, v, why in verdicts if v is not None]
    if judged:
        failing = [(r, why) for r, v, why in judged if v == "fail"]
        passing = sum(1 for _, v, _ in judged if v == "pass")
        unsure = sum(1 for _, v, _ in judged if v == "inconclusive")
        out.append(Finding(
            "budget", f"**Budget**: {passing} of {len(judged)} judged cell(s) pass"
            + (f", {unsure} inconclusive (more samples would decide)" if unsure else "")
            + (f"; {len(failing)} fail:" if failing else "."),
            _capped([f"{r['model']} {_cell(r)}{where(r)}: {why or 'fail'}" for r, why in failing]),
            [{"model": r["model"], "runtime": r["runtime"], "precision": r["precision"], "batch": r["batch"],
              "verdict": v, "reason": why} for r, v, why in judged]))

    bad = [r for r in reportable(records) if r.get("status") != "ok"]
    if bad:
        out.append(Finding("failed", f"**{len(bad)} cell(s) did not run** (see the end of the report).", [],
                           [{"model": r["model"], "runtime": r.get("runtime"), "status": r.get("status"),
                             "error": r.get("error")} for r in bad]))

    if many:
        out += _machine_findings(records, labels)
    return out


def _machine_findings(records: Sequence[dict[str, Any]], labels: dict[str, str]) -> list[Finding]:
    """Geometric-mean p50 ratio of each machine/device against the first, over the cells both measured."""
    from archbench.bench.analyze.merge import cross_machine_rows

    headers, rows = cross_machine_rows(records)
    if len(headers) < 2:
        return []
    items, data = [], []
    for j in range(1, len(headers)):
        ratios = [row[4 + j] / row[4] for row in rows if row[4] and row[4 + j]]
        if not ratios:
            continue
        g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        rel = f"{1 / g:.2f}x faster" if g < 1 else f"{g:.2f}x slower"
        items.append(f"**{headers[j]}** is {rel} than **{headers[0]}** (geometric mean of p50 ratios over "
                     f"{len(ratios)} shared cell(s))")
        data.append({"group": headers[j], "reference": headers[0], "geomean_p50_ratio": g, "cells": len(ratios)})
    return [Finding("machines", "**Across machines**:", items, data)] if items else []


# ----------------------------------------------------------------------------------------------------- tables

# Optional columns: (record field, header, formatter). Shown only when some record has a value.
VERDICT_FIELDS = ("verdict", "budget_verdict")
REASON_FIELDS = ("verdict_reason", "verdict_reasons", "budget_reason", "reasons")
def _fixed(digits: int) -> Any:
    return lambda x: f"{x:.{digits}f}" if isinstance(x, (int, float)) else str(x)


OPTIONAL_COLS: tuple[tuple[str, str, Any], ...] = (
    ("cuda_max_allocated_mib", "CUDA peak MiB", num),
    ("train_peak_mem_mib", "train peak MiB", num),
    ("activation_mib_per_sample", "act. MiB/sample", num),
    ("max_batch", "max batch", num),
    ("time_to_train_s", "time to train s", num),
    ("top1_agree", "top-1 agree", lambda x: f"{100 * x:.1f}%" if isinstance(x, (int, float)) else str(x)),
    ("cosine", "cosine", _fixed(5)),
    ("sqnr_db", "SQNR dB", _fixed(1)),
    ("max_abs_err", "max abs err", lambda x: f"{x:.2g}" if isinstance(x, (int, float)) else str(x)),
    ("task_metric", "task metric", num),
)


def _verdict_cell(r: dict[str, Any]) -> str:
    v, why = _verdict_of(r)
    if v is None:
        return "-"
    if v == "pass":
        return "✓ pass"
    if v == "fail":
        return "✗ **FAIL**" + (f": {why}" if why else "")
    if v == "inconclusive":
        return "? inconclusive" + (f": {why}" if why else "")
    return v + (f": {why}" if why else "")


def family_tables(records: Sequence[dict[str, Any]]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """family -> (headers, rows) of its ok cells, models in first-seen order; optional columns only when present."""
    from archbench.bench.analyze.merge import machine_labels

    ok = [r for r in reportable(records) if r.get("status") == "ok"]
    labels = machine_labels(records) if records else {}
    many = len(labels) > 1
    modes = len({_mode(r) for r in ok}) > 1 or any(_mode(r) != "infer" for r in ok)
    optional = [(f, h, fmt) for f, h, fmt in OPTIONAL_COLS if any(r.get(f) is not None for r in ok)]
    has_verdict = any(_verdict_of(r)[0] is not None for r in ok)
    headers = ["model", *(["mode"] if modes else []), "runtime", "precision", "batch",
               *(["machine"] if many else []), "params", "MACs",
               "size MiB", "p50 ms", "p95 ms", "CV", "samples/s", "peak RSS MiB", *[h for _, h, _ in optional],
               *(["budget"] if has_verdict else [])]
    order: dict[str, int] = {}
    for r in ok:
        order.setdefault(r["model"], len(order))
    by_family: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in sorted(ok, key=lambda r: order[r["model"]]):  # stable: runtimes stay in measured order
        by_family[str(r.get("family") or "other")].append(r)
    out = {}
    for fam, rs in by_family.items():
        rows = []
        for r in rs:
            model = r["model"] + (f" {r['knobs']}" if r.get("knobs") not in (None, "", "{}") else "")
            rows.append([
                model, *([_mode(r)] if modes else []), r["runtime"], r["precision"], str(r["batch"]),
                *([labels[fingerprint(r)]] if many else []),
                human(r.get("params")), human(r.get("macs")), num(r.get("size_mib")),
                num(r.get("latency_p50_ms")), num(r.get("latency_p95_ms")), _cv_cell(r),
                num(r.get("throughput_sps")), num(r.get("peak_rss_mib")),
                *[("-" if r.get(f) is None else fmt(r[f])) for f, _, fmt in optional],
                *([_verdict_cell(r)] if has_verdict else []),
            ])
        out[fam] = (headers, rows)
    return out


# Columns of text; every other column holds numbers and is right-aligned.
_TEXT_COLS = {"model", "mode", "runtime", "precision", "machine", "budget", "module", "type", "bound",
              "lowest intensity (FLOP/B)", "bytes/forward"}


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    align = ["left" if h in _TEXT_COLS else "right" for h in headers]
    return tabulate(rows, headers=list(headers), tablefmt="github", disable_numparse=True, colalign=align)


# ----------------------------------------------------------------------------------------------------- sections


def environment_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines describing where the records were measured: bullets for one machine, a table for several."""
    if not records:
        return []
    from archbench.bench.analyze.merge import machines

    ms = machines(records)
    if len(ms) == 1:
        r = records[0]
        gpu = f"{r.get('gpu_name')} (driver {r.get('gpu_driver')})" if r.get("gpu_name") else "none"
        runs = ", ".join(ms[0].run_ids) or "-"
        return [
            f"- machine: {r.get('hostname') or '?'}: {r.get('cpu_model')} ({r.get('cpu_count')} logical CPUs), "
            f"GPU: {gpu}, {r.get('os')}",
            f"- threads: {r.get('threads')} (torch intra-op and ONNX Runtime intra-op alike; inter-op 1)",
            f"- versions: archbench {r.get('archbench_version')} ({r.get('git_commit') or 'no git'}), "
            f"python {r.get('python_version')}, torch {r.get('torch_version')}, onnxruntime "
            f"{r.get('onnxruntime_version')}, onnx {r.get('onnx_version')}, triton {r.get('triton_version') or '-'}",
            f"- run: {runs}, first record {r.get('timestamp')}",
        ]
    rows = [[m.label, f"{m.cpu_model} ({m.cpu_count} CPUs)", m.gpu_name or "-", str(m.threads), m.torch_version,
             m.onnxruntime_version or "-", m.os, ", ".join(m.run_ids) or "-", str(m.n_records)] for m in ms]
    return [f"Records from {len(ms)} machines (a machine = one environment fingerprint: CPU, GPU, threads, "
            "torch and onnxruntime versions; only cells measured alike are compared directly):", "",
            tabulate(rows, headers=["machine", "CPU", "GPU", "threads", "torch", "onnxruntime", "OS", "runs",
                                    "records"], tablefmt="github", disable_numparse=True)]


CONVENTIONS = (
    "Latency of one forward at the given batch, milliseconds; percentiles by linear interpolation (numpy "
    "`linear`); samples/s = batch / mean latency; `!` marks CV (std / mean) > 10%. MACs = multiply-accumulates of "
    "one forward at that batch (conv, linear, matmul, attention, RNN gates), FLOPs = 2 x MACs. size = the "
    "artefact the runtime loads (state_dict or .onnx). Peak RSS = the measuring process's resident memory. "
    "Mode train: latency = one training step (forward, backward, optimizer), samples/s = batch / mean step."
)


def _findings_md(fs: Sequence[Finding]) -> list[str]:
    lines = []
    for f in fs:
        lines.append(f"- {f.text}" + (f" Details: *{f.section}* below." if f.section else ""))
        lines += [] if f.section else [f"  - {i}" for i in f.items]
    for f in fs:
        if f.section:
            lines += ["", f"## {f.section}", "", *[f"- {i}" for i in f.items]]
    return lines


def _cross_machine_md(records: Sequence[dict[str, Any]]) -> list[str]:
    from archbench.bench.analyze.merge import cross_machine_rows

    headers, rows = cross_machine_rows(records, "latency_p50_ms")
    if len(headers) < 2:
        return []
    table = [[*map(str, row[:4]), *[num(v) for v in row[4:-1]],
              "-" if row[-1] is None else f"{row[-1]:.2f}x"] for row in rows]
    return ["## Across machines", "",
            "p50 latency (ms) of each cell on each machine and device; last column = slowest / fastest.", "",
            _md_table(["model", "runtime", "precision", "batch", *[f"{h} p50 ms" for h in headers],
                       "slowest / fastest"], table), ""]


def _roofline_md(records: Sequence[dict[str, Any]], peaks: Sequence[Any], placements: Sequence[Any]) -> list[str]:
    from archbench.bench.analyze.merge import machine_labels

    labels = machine_labels(records)
    many = len(labels) > 1
    lines = ["## Roofline", ""]
    if peaks:
        lines += ["Peaks measured on the machine itself (`archbench.bench.report.roofline.measure_peaks`): FLOP/s = 2 n^3 / t of the "
                  "best n x n fp32 `torch.mm`; bytes/s = 2 N / t of the best copy of an N-byte tensor (read + "
                  "write), far larger than the caches; ridge = peak FLOP/s / peak bytes/s.", ""]
        lines.append(tabulate(
            [[p.hostname, p.device, str(p.threads), f"{p.flops_per_s / 1e9:.3g}", f"{p.bytes_per_s / 1e9:.3g}",
              f"{p.ridge:.3g}", f"n={p.matmul_n}, {p.copy_mib:g} MiB", p.measured_at] for p in peaks],
            headers=["host", "device", "threads", "peak GFLOP/s", "peak GB/s", "ridge FLOP/B", "sizes", "measured"],
            tablefmt="github", disable_numparse=True))
        lines.append("")
    else:
        lines += ["No measured peaks for these records' machines (`archbench report` measures them when run on "
                  "the machine that produced the records, unless --no-measure), so cells are placed without "
                  "roofs.", ""]
    lines += ["Each cell at achieved FLOP/s = FLOPs / p50 and arithmetic intensity = FLOPs / bytes. **Bytes per "
              "forward is an estimate**: weights (the loaded artefact's size) + input tensor + output tensors, "
              "each moved once; intermediate activations are not counted, so the true intensity is lower. "
              "bound = memory when the intensity is below the ridge point. % of roof = achieved / attainable at "
              "that intensity; above 100% means the weights stayed in cache (bandwidth side) or the runtime's "
              "kernels beat `torch.mm` (compute side).", ""]
    rows = []
    for p in placements:
        rows.append([p.model, p.runtime, p.precision, str(p.batch), *([labels.get(p.machine, "?")] if many else []),
                     f"{p.achieved_flops_per_s / 1e9:.3g}", f"{p.intensity:.3g}",
                     human(p.bytes, "B", binary=True) + ("" if p.output_bytes is not None else " (no outputs)"),
                     p.bound, "-" if p.of_roof is None else f"{p.of_roof:.1%}"])
    lines.append(_md_table(["model", "runtime", "precision", "batch", *(["machine"] if many else []),
                            "GFLOP/s", "FLOP/B", "bytes/forward", "bound", "% of roof"], rows))
    lines.append("")
    return lines


def _layers_md(layers: dict[str, list[Any]], ridge_by_model: dict[str, float]) -> list[str]:
    if not layers:
        return []
    lines = ["## Memory-bound layers", "",
             "Per module with MACs of its own (children excluded), batch 1, fp32: intensity = 2 x own MACs / (own "
             "weights + input + output activation bytes), against the ridge point of the measured peaks. A "
             "memory-bound layer waits on bytes, not FLOPs: fusing it with its neighbours or shrinking its weights "
             "helps, more FLOP/s does not.", ""]
    summary = []
    for model, rows in layers.items():
        mem = [lb for lb in rows if lb.bound == "memory"]
        total = sum(lb.macs for lb in rows) or 1
        low = sorted(rows, key=lambda lb: lb.intensity)[:3]
        summary.append([model, f"{ridge_by_model.get(model, float('nan')):.3g}", str(len(rows)), str(len(mem)),
                        f"{sum(lb.macs for lb in mem) / total:.1%}",
                        ", ".join(f"{lb.module} ({lb.intensity:.2g})" for lb in low)])
    lines.append(_md_table(["model", "ridge FLOP/B", "layers with MACs", "memory-bound",
                            "MACs in memory-bound layers", "lowest intensity (FLOP/B)"], summary))
    lines.append("")
    for model, rows in layers.items():
        lines += [f"<details><summary>{model}: every layer</summary>", ""]
        lines.append(_md_table(
            ["module", "type", "MACs", "weights", "activations", "FLOP/B", "bound"],
            [[lb.module, lb.type, human(lb.macs), human(lb.weight_bytes, "B", binary=True),
              human(lb.activation_bytes, "B", binary=True), f"{lb.intensity:.3g}",
              "**memory**" if lb.bound == "memory" else "compute"] for lb in rows]))
        lines += ["", "</details>", ""]
    return lines


def markdown(records: Sequence[dict[str, Any]], command: str = "", *, peaks: Sequence[Any] = (),
             placements: Sequence[Any] | None = None, layers: dict[str, list[Any]] | None = None,
             layer_ridges: dict[str, float] | None = None, plots: Sequence[str] = (),
             sources: Sequence[str] = (), budget: str = "") -> str:
    """The report in markdown (GitHub flavour). ``plots`` are paths relative to the report's folder; ``budget``
    says what the records' verdicts were judged against."""
    lines = ["# archbench report", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if sources:
        lines += ["Records: " + ", ".join(f"`{s}`" for s in sources), ""]
    lines += ["## Environment", "", *environment_lines(records), ""]
    lines += ["## How to read this", "", CONVENTIONS, ""]
    fs = findings(records, placements or ())
    if fs:
        lines += ["## Findings", ""]
        lines += [f"Budget verdicts judged against {budget}.", ""] if budget else []
        lines += [*_findings_md(fs), ""]
    tables = family_tables(records)
    if tables:
        lines += ["## Results by family", ""]
        for fam, (headers, rows) in tables.items():
            lines += [f"### {fam}", "", _md_table(headers, rows), ""]
    lines += _cross_machine_md(records)
    if placements:
        lines += _roofline_md(records, peaks, placements)
    if layers:
        lines += _layers_md(layers, layer_ridges or {})
    from archbench.bench.report.train import training_md

    lines += training_md(records)  # --mode train records: step time, memory split, max-batch trials
    if plots:
        lines += ["## Plots", ""]
        for p in plots:
            lines += [f"![{Path(p).stem.replace('_', ' ')}]({p})", ""]
    bad = [r for r in reportable(records) if r.get("status") != "ok"]
    if bad:
        lines += ["## Cells that did not run", ""]
        for r in bad:
            lines.append(f"- {r['model']} / {r.get('runtime')} / {r.get('precision')} / batch {r.get('batch')}: "
                         f"**{r.get('status')}**: {r.get('error', '')}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- JSON, files


def _public(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k != "samples_ms" and not k.startswith("_")}


def _finite(x: Any) -> Any:
    """JSON has no inf/nan: such floats become the strings 'inf', '-inf', 'nan' (e.g. SQNR of an exact match)."""
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def report_json(records: Sequence[dict[str, Any]], command: str = "", *, peaks: Sequence[Any] = (),
                placements: Sequence[Any] | None = None, layers: dict[str, list[Any]] | None = None) -> dict[str, Any]:
    """Everything the markdown says, as data (records without raw samples; units in the key names)."""
    from archbench.bench.analyze.merge import machines

    return _finite({
        "command": command,
        "schema_version": records[0].get("schema_version") if records else None,
        "csv_fields": CSV_FIELDS,
        "machines": [asdict(m) for m in machines(records)] if records else [],
        "peaks": [asdict(p) | {"ridge_flop_per_byte": p.ridge} for p in peaks],
        "findings": [asdict(f) for f in findings(records, placements or ())],
        "roofline": [asdict(p) | {"bytes": p.bytes, "intensity_flop_per_byte": p.intensity, "of_roof": p.of_roof}
                     for p in placements or ()],
        "layers": {m: [asdict(lb) for lb in rows] for m, rows in (layers or {}).items()},
        "records": [_public(r) for r in records],
    })


def write_reports(out: Path, records: Sequence[dict[str, Any]], command: str = "", *, peaks: Sequence[Any] = (),
                  placements: Sequence[Any] | None = None, layers: dict[str, list[Any]] | None = None,
                  layer_ridges: dict[str, float] | None = None, plots: Sequence[Path] = (),
                  csv_name: str = "records.csv", md_name: str = "report.md", json_name: str | None = None,
                  sources: Sequence[str] = (), budget: str = "") -> list[Path]:
    """Write the CSV (record.CSV_FIELDS columns, in that order), the markdown and optionally the JSON into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / csv_name, out / md_name
    write_csv(csv_path, records)
    rel = [str(Path(p).resolve().relative_to(out.resolve())) if Path(p).resolve().is_relative_to(out.resolve())
           else str(p) for p in plots]
    md_path.write_text(markdown(records, command, peaks=peaks, placements=placements, layers=layers,
                                layer_ridges=layer_ridges, plots=rel, sources=sources, budget=budget),
                       encoding="utf-8")
    paths = [csv_path, md_path]
    if json_name:
        js = out / json_name
        js.write_text(json.dumps(report_json(records, command, peaks=peaks, placements=placements, layers=layers),
                                 indent=1, default=str) + "\n", encoding="utf-8")
        paths.append(js)
    return paths
