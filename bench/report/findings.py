"""The "Findings" of report.md in words: each archbench.bench.analyze.findings result (and the budget verdicts) as a
markdown paragraph with sub-bullets, and the numbers behind it for report.json. Computes nothing but tallies.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from archbench.bench.analyze import findings as fa
from archbench.bench.analyze.budgets import Verdicts, verdict_of
from archbench.bench.analyze.generation import is_generation
from archbench.bench.analyze.stats import BUSY_PCT, CV_WARN
from archbench.bench.cell import knobs_text
from archbench.bench.env import fingerprint
from archbench.bench.record import Record
from archbench.bench.report.format import num

MAX_ITEMS = 8  # list at most this many items per finding, then "and N more"


@dataclass
class Finding:
    kind: str  # macs_mispredict | slower_than_fp32 | runtime_winner | unstable | busy | overhead_bound |
    #            memory_bound | serving_winner | baseline | budget | failed | machines
    text: str  # one markdown paragraph/bullet
    items: list[str] = field(default_factory=list)  # sub-bullets
    data: list[dict[str, Any]] = field(default_factory=list)  # the numbers behind it, for report.json
    section: str = ""  # when set, the items go under this heading after the findings, not as sub-bullets


def cell_text(r: Record) -> str:
    """'onnxruntime int8-dynamic b1' (and the mode when it is not inference)."""
    mode = r.mode or "infer"
    return f"{r.runtime} {r.precision} b{r.batch}" + ("" if mode == "infer" else f" {mode}")


def _capped(items: list[str]) -> list[str]:
    return items if len(items) <= MAX_ITEMS else items[:MAX_ITEMS] + [f"... and {len(items) - MAX_ITEMS} more"]


def verdict_word(r: Record, verdicts: Verdicts) -> tuple[str | None, str]:
    """(pass | fail | inconclusive | other lower-case verdict | None, reason) of the verdict reported beside ``r``."""
    v = verdict_of(r, verdicts)
    if v is None or not v.verdict:
        return None, ""
    s = str(v.verdict).strip().lower()
    if s in ("pass", "passed", "ok", "true", "met", "yes"):
        return "pass", v.reason
    if s in ("fail", "failed", "false", "violated", "no"):
        return "fail", v.reason
    return s, v.reason


def _macs(mis: list[fa.MacsMisprediction], where: Any) -> Finding:
    items = []
    for d in mis:
        a, b, lr = d.a, d.b, d.latency_ratio
        speed = f"{lr:.1f}x **slower**" if lr >= 1 else f"only {1 / lr:.2f}x faster"
        noisy = " (noisy: CV > 10%)" if any(x.stable is False for x in (a, b)) else ""
        items.append(f"**{a.model}** has {d.macs_ratio:.2g}x the MACs of **{b.model}** but is {speed} "
                     f"({cell_text(a)}{where(a)}: {num(a.latency_p50_ms)} ms vs {num(b.latency_p50_ms)} ms){noisy}")
    return Finding(
        "macs_mispredict",
        f"**MACs fail to predict latency** in {len(mis)} case(s): fewer than {fa.MACS_RATIO:g}x the MACs, yet more "
        f"than {fa.LATENCY_RATIO:g}x the p50 latency of a model measured alike (memory traffic, depthwise or "
        "recurrent ops, or per-op dispatch cost dominate):", _capped(items),
        [{"model": d.a.model, "vs": d.b.model, "runtime": d.a.runtime, "precision": d.a.precision,
          "batch": d.a.batch, "macs_ratio": d.macs_ratio, "latency_ratio": d.latency_ratio} for d in mis])


def _slowdowns(slow: list[fa.PrecisionSlowdown], where: Any) -> Finding:
    return Finding(
        "slower_than_fp32", f"**Reduced precision slower than fp32** in {len(slow)} cell(s) (int8: quantized "
        "kernels missing or quantize/dequantize overhead; fp16/bf16: few native half-precision kernels on this "
        "hardware, casts around the rest):",
        _capped([f"**{d.variant.model}** {d.variant.precision} ({d.variant.runtime} b{d.variant.batch}"
                 f"{where(d.variant)}): {d.slowdown:.2f}x slower"
                 + (f" (95% CI {d.slowdown_lo:.2f}-{d.slowdown_hi:.2f}x)" if d.slowdown_lo is not None else "")
                 + f", {num(d.variant.latency_p50_ms)} ms vs {num(d.fp32.latency_p50_ms)} ms fp32"
                 + (" (within noise: the interval includes 1x)" if d.slowdown_lo is not None and d.slowdown_lo <= 1
                    else f" (within noise: Mann-Whitney p = {d.p_value:.2g})"
                    if d.slowdown_lo is None and d.p_value is not None and d.p_value >= 0.05 else "")
                 for d in slow]),
        [{"model": d.variant.model, "runtime": d.variant.runtime, "batch": d.variant.batch,
          "precision": d.variant.precision, "slowdown": d.slowdown, "p_value": d.p_value} for d in slow])


def _winners(wins: list[fa.RuntimeWinner], labels: dict[str, str], many: bool) -> Finding:
    tally: dict[str, int] = defaultdict(int)
    for w in wins:
        tally[w.fastest] += 1
    lead = ", ".join(f"{rt} in {n}" for rt, n in sorted(tally.items(), key=lambda kv: -kv[1]))
    return Finding(
        "runtime_winner", f"**Fastest runtime** (lowest p50) per model: {lead} of {len(wins)} comparison(s).",
        [f"**{w.model}** ({w.precision} b{w.batch} {w.device}{' on ' + labels.get(w.machine, '') if many else ''}): "
         f"**{w.fastest}**, {_times(w)} faster than {w.runner_up} ({num(w.p50_ms)} vs "
         f"{num(w.runner_up_p50_ms)} ms)"
         + (" (not significant: the interval includes 1x)" if w.significant is False else
            f" (not significant: Mann-Whitney p = {w.p_value:.2g})"
            if w.significant is None and w.p_value is not None and w.p_value >= 0.05 else "")
         for w in sorted(wins, key=lambda w: -w.speedup)],
        [asdict(w) | {"machine": labels.get(w.machine, "")} for w in wins], section="Fastest runtime per model")


def _roofline(placements: Sequence[Any], labels: dict[str, str], many: bool) -> list[Finding]:
    out = []
    low = fa.far_below_roof(placements)
    if low:
        out.append(Finding(
            "overhead_bound", f"**Far below the roofline** (< {fa.ROOF_SHARE:.0%} of the attainable FLOP/s at "
            "their arithmetic intensity): neither FLOPs nor bytes explain their latency; per-op dispatch, "
            "small kernels or threading overhead do:",
            _capped([f"{p.model} {p.runtime} {p.precision} b{p.batch}"
                     f"{' on ' + labels.get(p.machine, '?') if many else ''}: "
                     f"{num(p.achieved_flops_per_s / 1e9)} GFLOP/s, {p.of_roof:.1%} of the "
                     f"{num(p.roof_flops_per_s / 1e9)} attainable" for p in low]),
            [{"model": p.model, "runtime": p.runtime, "precision": p.precision, "batch": p.batch,
              "of_roof": p.of_roof} for p in low]))
    mem = fa.memory_bound(placements)
    if mem:
        names = ", ".join(dict.fromkeys(p.model for p in mem))
        out.append(Finding(
            "memory_bound", f"**Memory-bound** (arithmetic intensity below the ridge point) as whole models: "
            f"{names}. More bandwidth or smaller weights (fp16, int8) help them; more FLOP/s does not.",
            [], [{"model": p.model, "runtime": p.runtime, "intensity": p.intensity} for p in mem]))
    return out


def _serving_winners(records: Sequence[Record]) -> list[Finding]:
    from archbench.bench.analyze.serving import winner_changes

    changes = winner_changes(records)
    if not changes:
        return []
    return [Finding(
        "serving_winner", f"**Batching or concurrency changes the winner** in {len(changes)} comparison(s): the "
        "runtime with the lowest single-stream (batch 1) p50 is not the one that serves the most:",
        _capped([f"**{c.model}** {c.precision}: single-stream {c.single_stream} ("
                 + ", ".join(f"{rt} {num(v)} ms" for rt, v in sorted(c.single_stream_p50_ms.items()))
                 + f"), but {c.scenario}: {c.winner} ("
                 + ", ".join(f"{rt} {num(v)} {c.metric}" for rt, v in sorted(c.values.items())) + ")"
                 for c in changes]),
        [{"model": c.model, "precision": c.precision, "single_stream": c.single_stream, "scenario": c.scenario,
          "winner": c.winner, "metric": c.metric, "values": c.values} for c in changes])]


def _budget(records: Sequence[Record], verdicts: Verdicts, where: Any) -> list[Finding]:
    judged = [(r, *verdict_word(r, verdicts)) for r in records]
    judged = [(r, v, why) for r, v, why in judged if v is not None]
    if not judged:
        return []
    failing = [(r, why) for r, v, why in judged if v == "fail"]
    passing = sum(1 for _, v, _ in judged if v == "pass")
    unsure = sum(1 for _, v, _ in judged if v == "inconclusive")
    return [Finding(
        "budget", f"**Budget**: {passing} of {len(judged)} judged cell(s) pass"
        + (f", {unsure} inconclusive (more samples would decide)" if unsure else "")
        + (f"; {len(failing)} fail:" if failing else "."),
        _capped([f"{r.model} {cell_text(r)}{where(r)}: {why or 'fail'}" for r, why in failing]),
        [{"model": r.model, "runtime": r.runtime, "precision": r.precision, "batch": r.batch, "verdict": v,
          "reason": why} for r, v, why in judged])]


def findings(records: Sequence[Record], placements: Sequence[Any] = (), verdicts: Verdicts | None = None
             ) -> list[Finding]:
    """What the data says (archbench.bench.analyze.findings), each Finding with its markdown and its numbers.
    ``verdicts``: budget verdicts beside the records (keyed by archbench.bench.analyze.merge.machine_cell_key)."""
    from archbench.bench.analyze.merge import machine_labels

    labels = machine_labels(records) if records else {}
    many = len(labels) > 1

    def where(r: Record) -> str:
        return f" on {labels[fingerprint(r)]}" if many else ""

    out: list[Finding] = []
    ok = fa.timed(records)
    mis = fa.macs_mispredictions(records)
    if mis:
        out.append(_macs(mis, where))
    slow = fa.precision_slowdowns(records)
    if slow:
        out.append(_slowdowns(slow, where))
    wins = fa.runtime_winners(records)
    if wins:
        out.append(_winners(wins, labels, many))
    out += _serving_winners(records)
    vs = fa.baseline_ratios(records)
    if vs:
        out.append(Finding(
            "baseline", f"**Against the baseline {vs[0].baseline}** (p50 ratio, each repetition against the "
            "baseline's of the same round, 95% interval; above 1x is slower):",
            _capped(baseline_lines(records)), [asdict(v) for v in vs]))
    unstable = fa.unstable_cells(records)
    if unstable:
        out.append(Finding(
            "unstable", f"**Unstable cells**: {len(unstable)} of {len(ok)} have CV > {CV_WARN:.0%}; their "
            "percentiles move between runs (close other programs, pin threads, or raise --min-time), and "
            "`archbench compare` needs more samples to call their changes significant:",
            _capped([f"{r.model} {cell_text(r)}{where(r)}: CV {r.latency_cv:.0%}" for r in unstable]),
            [{"model": r.model, "runtime": r.runtime, "precision": r.precision, "batch": r.batch,
              "cv": r.latency_cv} for r in unstable]))
    busy = fa.busy_cells(records)
    if busy:
        out.append(Finding(
            "busy", f"**Timed on a busy machine**: {len(busy)} of {len(ok)} cells shared the CPUs with other "
            f"processes while being timed (more than {BUSY_PCT:.0f}% of all CPUs' time went elsewhere, steal "
            "included); their latencies are inflated by an amount this run cannot know. Re-measure them on an idle "
            "machine:",
            _capped([f"{r.model} {cell_text(r)}{where(r)}: {r.other_cpu_pct:.0f}% other CPU" for r in busy]),
            [{"model": r.model, "runtime": r.runtime, "precision": r.precision, "batch": r.batch,
              "other_cpu_pct": r.other_cpu_pct} for r in busy]))
    out += _roofline(placements, labels, many)
    out += _budget(records, verdicts or {}, where)
    bad = fa.failed_cells(records)
    if bad:
        out.append(Finding("failed", f"**{len(bad)} cell(s) did not run** (see the end of the report).", [],
                           [{"model": r.model, "runtime": r.runtime, "status": r.status, "error": r.error}
                            for r in bad]))
    ratios = fa.machine_ratios(records) if many else []
    if ratios:
        out.append(Finding("machines", "**Across machines**:", [
            f"**{m.group}** is {_relative(m.geomean_p50_ratio)} than **{m.reference}** (geometric mean of p50 ratios "
            f"over {m.cells} shared cell(s))" for m in ratios], [asdict(m) for m in ratios]))
    return out


def _relative(ratio: float) -> str:
    """A latency ratio in words: 0.5 -> '2.00x faster', 1.5 -> '1.50x slower'."""
    return f"{1 / ratio:.2f}x faster" if ratio < 1 else f"{ratio:.2f}x slower"


def findings_md(fs: Sequence[Finding]) -> list[str]:
    """Markdown lines: one bullet per finding with its items as sub-bullets; sectioned findings after them."""
    lines = []
    for f in fs:
        lines.append(f"- {f.text}" + (f" Details: *{f.section}* below." if f.section else ""))
        lines += [] if f.section else [f"  - {i}" for i in f.items]
    for f in fs:
        if f.section:
            lines += ["", f"## {f.section}", "", *[f"- {i}" for i in f.items]]
    return lines


def winner_lines(records: Sequence[Record]) -> list[str]:
    """One line per runtime comparison (archbench.bench.analyze.findings.runtime_winners), for the end of
    ``archbench run``: 'mlp_s b1 fp32: onnxruntime is 2.10x faster than torch'."""
    return [f"{w.model}{knobs_text(w.knobs)} b{w.batch} {w.precision}{' decode' if is_generation(w) else ''}: "
            f"{w.fastest} is {_times(w)} faster than {w.runner_up}"
            + ("" if w.significant is not False else " - not significant: the interval includes 1x")
            for w in fa.runtime_winners(records)]


def baseline_lines(records: Sequence[Record]) -> list[str]:
    """One line per cell compared with the run's --baseline (archbench.bench.analyze.findings.baseline_ratios):
    'v2:build torch fp32 b1: 1.24x the p50 of v1:build (95% CI 1.15-1.33x, 5 paired repetitions): slower'."""
    lines = []
    for v in fa.baseline_ratios(records):
        iv = (f"95% CI {v.lo:.2f}-{v.hi:.2f}x, {v.pairs} paired repetitions" if v.lo is not None and v.hi is not None
              else "one repetition: no interval")
        verdict = {True: "slower" if v.ratio > 1 else "faster", False: "no significant difference (the interval "
                   "includes 1x)", None: "untested"}[v.significant]
        lines.append(f"{v.model} {v.runtime} {v.precision} b{v.batch}{' decode' if is_generation(v) else ''}: "
                     f"{v.ratio:.2f}x the p50 of {v.baseline} ({iv}): {verdict}")
    return lines




def _times(w: fa.RuntimeWinner) -> str:
    """'3.18x (95% CI 3.02-3.35x)' with an interval, '3.18x' without."""
    if w.speedup_lo is None or w.speedup_hi is None:
        return f"{w.speedup:.2f}x"
    return f"{w.speedup:.2f}x (95% CI {w.speedup_lo:.2f}-{w.speedup_hi:.2f}x, {w.pairs} paired repetitions)"
