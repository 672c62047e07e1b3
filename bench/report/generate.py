"""The generation section of report.md and of ``archbench run``'s summary (records of ``--mode generate``): TTFT,
TPOT p50/p95 with their intervals, tokens/s, KV-cache memory and decode bandwidth; and, when the records hold
several prompt lengths of one cell, plots of TPOT and KV-cache memory against the context length.

Renders archbench.bench.analyze.generation's rows and series; formatting only (``peaks`` give the machine's copy
bandwidth, archbench.bench.machine.peaks, matched to each record by report.roofline.peaks_for).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from archbench.bench.analyze.generation import GenerationRow, context_series, generation_rows
from archbench.bench.cell import knobs_text
from archbench.bench.record import Record
from archbench.bench.report.format import DPI, ci, num, pct

COLS = ["model", "runtime", "precision", "batch", "prompt", "new", "status", "TTFT ms [95% CI]",
        "TPOT p50 ms [95% CI]", "TPOT p95 ms", "tokens/s", "e2e ms", "KV MiB", "KV RSS growth MiB",
        "decode GB/s", "tokens = fp32"]


NOTE = ("A generation = a prefill over a fixed random prompt from an empty KV cache and its argmax (the first new "
        "token), then one decode step per further token, greedy. **TTFT** = prefill + argmax. **TPOT** = one "
        "decode step + argmax, over the tokens after the first (the first is TTFT's); in the result tables above "
        "the latency columns of generate rows are TPOT and samples/s is **tokens/s** = batch / mean decode step. "
        "p50s are geometric means of each repetition's median (one worker process each), with a 95% t interval "
        "over repetitions; TPOT p95 likewise. e2e = one whole generation. **KV MiB** is analytic: 2 x layers x "
        "kv_heads x head_dim x (prompt + new) x batch x bytes per element; **KV RSS growth** is measured: the "
        "worker's peak resident memory during one generation minus its resident memory right before it (cache, "
        "logits, activations and allocator slack; ~0 when the allocator reuses freed memory). **decode GB/s** = "
        "bytes a decode step must read (weights less the embedding table, + the KV cache at the mean context) / "
        "TPOT p50; in brackets its share of this machine's measured copy bandwidth (when measured). tokens = fp32: "
        "share of the generated tokens equal to fp32 PyTorch eager's from the same prompt.")


def _gbps(row: GenerationRow) -> str:
    if row.decode_gbps is None:
        return "-"
    share = row.of_copy
    return num(row.decode_gbps) + ("" if share is None else f" ({share:.0%} of {num(row.copy_gbps)})")


def _cells(row: GenerationRow) -> list[str]:
    knobs = knobs_text(row.knobs)
    status = row.status if row.status == "ok" else f"{row.status}: {row.error[:60]}..."
    return [row.model + knobs, row.runtime, row.precision, str(row.batch), num(row.prompt_len), num(row.new_tokens),
            status, ci(row.ttft_ms, row.ttft_lo_ms, row.ttft_hi_ms), ci(row.tpot_ms, row.tpot_lo_ms, row.tpot_hi_ms),
            num(row.tpot_p95_ms), num(row.tokens_per_s), num(row.e2e_ms), num(row.kv_cache_mib),
            num(row.kv_rss_growth_mib), _gbps(row), pct(row.top1_agree)]


def _copy_gbps(peaks: Sequence[Any]) -> Any:
    if not peaks:
        return None
    from archbench.bench.analyze.roofline import peaks_for

    def of(r: Record) -> float | None:
        p = peaks_for(r, peaks)
        return None if p is None else p.bytes_per_s / 1e9

    return of


def generation_table(records: Sequence[Record], peaks: Sequence[Any] = (), fmt: str = "simple") -> str:
    """The generation table (``COLS``) in a tabulate format; "" when no record is a generate one."""
    rows = generation_rows(records, _copy_gbps(peaks))
    if not rows:
        return ""
    return tabulate([_cells(r) for r in rows], headers=COLS, tablefmt=fmt, disable_numparse=True)


def generation_md(records: Sequence[Record], peaks: Sequence[Any] = ()) -> list[str]:
    """Markdown lines of the generation section; empty when no record is a generate one."""
    table = generation_table(records, peaks, "github")
    if not table:
        return []
    lines = ["## Generation", "", NOTE, "", table, ""]
    series = context_series(records)
    if series:
        lines += ["TPOT and KV cache against the context (prompt + new tokens), per cell measured at several prompt "
                  "lengths:", ""]
        rows = [[s.label, str(p.prompt_len), str(p.context), ci(p.tpot_ms, p.tpot_lo_ms, p.tpot_hi_ms),
                 num(p.ttft_ms), num(p.kv_cache_mib), num(p.kv_rss_growth_mib)] for s in series for p in s.points]
        lines += [tabulate(rows, headers=["cell", "prompt", "context", "TPOT p50 ms [95% CI]", "TTFT ms", "KV MiB",
                                          "KV RSS growth MiB"], tablefmt="github", disable_numparse=True), ""]
    return lines


def plot_context(records: Sequence[Record], out: Path) -> list[Path]:
    """tpot_vs_context.png and kv_cache_vs_context.png into ``out`` when some cell has several prompt lengths."""
    series = context_series(records)
    if not series:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from archbench.bench.atomic import atomic_path

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, title, ylabel in (("tpot_vs_context", "TPOT (one decode step) against context", "TPOT p50 ms"),
                                ("kv_cache_vs_context", "KV cache against context", "MiB")):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        drawn: set[tuple] = set()  # the analytic KV cache of a model is the same on every runtime: once
        for i, s in enumerate(series):
            xs = [p.context for p in s.points]
            marker = "osD^vP"[i % 6]
            if name == "tpot_vs_context":
                ys = [p.tpot_ms for p in s.points]
                err = [[y - (p.tpot_lo_ms or y) for y, p in zip(ys, s.points, strict=True)],
                       [(p.tpot_hi_ms or y) - y for y, p in zip(ys, s.points, strict=True)]]
                ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=3, label=s.label)
            else:
                ys = [p.kv_cache_mib for p in s.points]
                if (s.model, tuple(xs), tuple(ys)) not in drawn:
                    drawn.add((s.model, tuple(xs), tuple(ys)))
                    ax.plot(xs, ys, marker=marker, linewidth=2.5, label=f"{s.model} (analytic)")
                grow = [(x, p.kv_rss_growth_mib) for x, p in zip(xs, s.points, strict=True)
                        if p.kv_rss_growth_mib is not None]
                if grow:
                    ax.plot(*zip(*grow, strict=True), marker=marker, linestyle=":", fillstyle="none",
                            label=f"{s.label} (RSS growth)")
        ax.set_xlabel("context = prompt + new tokens")
        ax.set_ylabel(ylabel)
        ax.set_title(title + (" (bars: 95% interval over repetitions)" if name == "tpot_vs_context" else ""),
                     fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI)
        plt.close(fig)
        paths.append(path)
    return paths
