"""PNG plots of records: latency vs MACs and vs size (Pareto front marked), latency distributions, rooflines.

Every plot reads without colour: runtimes differ by marker shape (and box hatching), precisions by marker fill,
and points carry their model name as a direct label. matplotlib is imported inside the functions (Agg backend),
so importing this module costs nothing.

    paths = plot_all(records, Path("review/plots"), peaks=peaks)

The Pareto front marked on the latency plots is archbench.bench.analyze.select.pareto_indices, the same front ``pick``
reports, on (more MACs or bytes, less latency).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archbench.bench.atomic import atomic_path
from archbench.bench.env import fingerprint
from archbench.bench.record import Record
from archbench.bench.report.format import DPI, num

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); shape carries the meaning.
_RUNTIME_STYLE = {"torch": ("o", "#0072B2", ""), "onnxruntime": ("^", "#D55E00", "///"),
                  "torch-compile": ("s", "#009E73", "..")}
_SPARE = [("D", "#CC79A7", "xx"), ("v", "#E69F00", "\\\\"), ("P", "#56B4E9", "++"), ("X", "#000000", "--")]
# fp32 filled, int8 hollow (the two most compared), half-filled for the rest
_PRECISION_FILL = {"fp32": "full", "int8": "none", "int8-dynamic": "none", "int8-static": "bottom", "fp16": "left",
                   "bf16": "right"}
_SPARE_FILL = ["top", "bottom"]
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75}


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _runtime_style(runtime: str, seen: dict[str, tuple[str, str, str]]) -> tuple[str, str, str]:
    if runtime in _RUNTIME_STYLE:
        return _RUNTIME_STYLE[runtime]
    if runtime not in seen:
        seen[runtime] = _SPARE[len(seen) % len(_SPARE)]
    return seen[runtime]


def _fill(precision: str) -> str:
    if precision in _PRECISION_FILL:
        return _PRECISION_FILL[precision]
    if "int8" in precision:
        return "none"
    return _SPARE_FILL[sum(map(ord, precision)) % len(_SPARE_FILL)]  # stable across processes


def _ok(records: Sequence[Record], *fields: str, infer_only: bool = False) -> list[Record]:
    """ok records with every field in ``fields``; never --find-max-batch trials; only inference if asked."""
    modes = ("infer",) if infer_only else ("infer", "train")
    return [r for r in records if r.ok and (r.mode or "infer") in modes
            and all(getattr(r, f) is not None for f in fields)]


def _groups(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records per (machine label, device), in first-seen order: one panel or figure each."""
    from archbench.bench.analyze.merge import machine_labels

    labels = machine_labels(records)
    out: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        out[f"{labels[fingerprint(r)]} / {r.device}"].append(r)
    return dict(out)


def _front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """The Pareto front of the latency plots, ordered by increasing x: larger x (MACs or bytes, a proxy for
    capacity) and smaller y (latency) are better."""
    from archbench.bench.analyze.select import pareto_indices

    return sorted(pareto_indices([(-x, y) for x, y in zip(xs, ys, strict=True)]), key=lambda i: xs[i])


def _legend_handles(records: Sequence[Any], extra: Sequence[Any] = ()) -> list[Any]:
    """Marker per runtime and fill per precision of ``records`` (Records or roofline Placements)."""
    from matplotlib.lines import Line2D

    spare: dict[str, tuple[str, str, str]] = {}
    handles = []
    for rt in dict.fromkeys(r.runtime for r in records):
        marker, color, _ = _runtime_style(rt, spare)
        handles.append(Line2D([], [], linestyle="none", marker=marker, color=color, markersize=7, label=rt))
    precisions = list(dict.fromkeys(r.precision for r in records))
    if len(precisions) > 1:
        for p in precisions:
            handles.append(Line2D([], [], linestyle="none", marker="o", color="#555555", fillstyle=_fill(p),
                                  markersize=7, label=p))
    return handles + list(extra)


def _scatter_cells(ax: Any, records: Sequence[Any], x_of: Any, y_of: Any
                   ) -> tuple[dict[str, tuple[float, float]], list[tuple[float, float]]]:
    """Plot one marker per record (a Record or a roofline Placement: model, runtime, precision); join the points of
    one model with a thin line (the runtime spread).
    Returns model -> (x, y) of its lowest point (where its direct label goes), and every point plotted."""
    spare: dict[str, tuple[str, str, str]] = {}
    by_model: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in records:
        x, y = x_of(r), y_of(r)
        if x is None or y is None or x <= 0 or y <= 0:
            continue
        marker, color, _ = _runtime_style(r.runtime, spare)
        lo, hi = getattr(r, "latency_p50_lo_ms", None), getattr(r, "latency_p50_hi_ms", None)
        if lo is not None and hi is not None and y_of(r) == getattr(r, "latency_p50_ms", None):
            # The p50's 95% interval over repetitions (analyze.intervals), as a vertical bar.
            ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="none", ecolor=color, elinewidth=1.0,
                        capsize=2.5, alpha=0.8, zorder=2)
        ax.plot([x], [y], linestyle="none", marker=marker, color=color, fillstyle=_fill(r.precision),
                markersize=7, markeredgewidth=1.3, zorder=3)
        by_model[r.model].append((x, y))
    anchors = {}
    for model, pts in by_model.items():
        if len(pts) > 1:
            pts_sorted = sorted(pts, key=lambda p: p[1])
            ax.plot([p[0] for p in pts_sorted], [p[1] for p in pts_sorted], color="#999999", linewidth=0.8,
                    linestyle=":", zorder=2)
        anchors[model] = min(pts, key=lambda p: p[1])
    return anchors, [p for pts in by_model.values() for p in pts]


def _label_points(ax: Any, anchors: dict[str, tuple[float, float]], points: Sequence[tuple[float, float]] = (),
                  fontsize: float = 8) -> None:
    """Direct labels next to each anchor: of six spots around it (right, left, above, below), the first whose
    text box covers no marker in ``points``, no earlier label and stays inside the axes; else the least bad.
    Labels sit under the markers (zorder), so a marker is never hidden."""
    ax.autoscale_view()
    dpi = ax.figure.dpi
    h = fontsize * dpi / 72 * 1.3  # text box height, pixels
    marks = [tuple(ax.transData.transform(p)) for p in points]
    bbox = ax.get_window_extent()
    placed: list[tuple[float, float, float, float]] = []  # label boxes (x0, y0, x1, y1), pixels

    def cost(box: tuple[float, float, float, float]) -> int:
        x0, y0, x1, y1 = box
        hits = sum(1 for mx, my in marks if x0 - 7 < mx < x1 + 7 and y0 - 7 < my < y1 + 7)
        hits += sum(1 for q in placed if x0 < q[2] and q[0] < x1 and y0 < q[3] and q[1] < y1)
        outside = x0 < bbox.x0 or x1 > bbox.x1 or y0 < bbox.y0 or y1 > bbox.y1
        return hits + (100 if outside else 0)

    for name, (x, y) in sorted(anchors.items(), key=lambda kv: (-kv[1][1], kv[1][0])):
        px, py = ax.transData.transform((x, y))
        w = len(name) * 0.6 * fontsize * dpi / 72
        spots = [(10, 2), (10, -h - 2), (-10 - w, 2), (-10 - w, -h - 2), (-w / 2, 10), (-w / 2, -h - 10)]
        boxes = [(px + dx, py + dy, px + dx + w, py + dy + h) for dx, dy in spots]
        best = min(range(len(spots)), key=lambda i: (cost(boxes[i]), i))
        placed.append(boxes[best])
        dx, dy = spots[best]
        ax.annotate(name, (x, y), xytext=(dx * 72 / dpi, dy * 72 / dpi), textcoords="offset points",
                    fontsize=fontsize, ha="left", va="bottom", zorder=2.6, bbox=_LABEL_BOX)


def _roof_label(ax: Any, text: str, xs: Sequence[float], y_of: Any, pts_px: Any, fontsize: float = 8) -> None:
    """Write ``text`` along the curve y_of (a roof) starting at the first x of ``xs`` where it covers no point,
    above the curve if it can, else below. The text's rectangle is checked in screen space, along the curve's
    on-screen angle."""
    import numpy as np

    dpi = ax.figure.dpi
    w = len(text) * 0.55 * fontsize * dpi / 72  # rough text width in pixels
    h = fontsize * dpi / 72 * 1.4
    pts = np.asarray(pts_px, dtype=float).reshape(-1, 2)
    choice = None
    for above in (True, False):
        for x in xs:
            a = ax.transData.transform((x, y_of(x)))
            b = ax.transData.transform((x * 1.01, y_of(x * 1.01)))
            ang = math.atan2(b[1] - a[1], b[0] - a[0])
            u = np.array([math.cos(ang), math.sin(ang)])
            nrm = np.array([-u[1], u[0]])
            t = (pts - a) @ u
            n = (pts - a) @ nrm
            lo, hi = (-2.0, h + 10) if above else (-h - 10, 2.0)
            if not np.any((t > -10) & (t < w + 10) & (n > lo) & (n < hi)):
                choice = (x, above, ang)
                break
        if choice:
            break
    if choice is None:
        a = ax.transData.transform((xs[0], y_of(xs[0])))
        b = ax.transData.transform((xs[0] * 1.01, y_of(xs[0] * 1.01)))
        choice = (xs[0], True, math.atan2(b[1] - a[1], b[0] - a[0]))
    x, above, ang = choice
    off = 4 if above else -4
    ax.annotate(text, (x, y_of(x)), xytext=(-math.sin(ang) * off, math.cos(ang) * off), textcoords="offset points",
                fontsize=fontsize, rotation=math.degrees(ang), rotation_mode="anchor",
                va="bottom" if above else "top", zorder=2.5, bbox=_LABEL_BOX)


def _log_axes(ax: Any, x_eng_unit: str | None = None) -> None:
    from matplotlib.ticker import EngFormatter, FuncFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    if x_eng_unit is not None:
        ax.xaxis.set_major_formatter(EngFormatter(unit=x_eng_unit, places=0))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="major", linewidth=0.5, alpha=0.5)
    ax.grid(True, which="minor", linewidth=0.3, alpha=0.25)


def _smallest_batch(records: Sequence[Record]) -> tuple[list[Record], int | None, list[int]]:
    batches = sorted({int(r.batch or 1) for r in records})
    if not batches:
        return [], None, []
    b = batches[0]
    return [r for r in records if int(r.batch or 1) == b], b, batches


def plot_latency_vs(records: Sequence[Record], x_field: str, path: Path) -> Path | None:
    """p50 latency against ``x_field`` (``macs`` or ``size_mib``), one panel per machine and device, at the
    smallest batch measured, with the Pareto front (most MACs/bytes for the latency) marked."""
    from matplotlib.lines import Line2D

    recs, batch, batches = _smallest_batch(_ok(records, x_field, "latency_p50_ms", infer_only=True))
    if not recs:
        return None
    plt = _mpl()
    groups = _groups(recs)
    n = len(groups)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 5.2 * rows + 0.6), squeeze=False)
    what = {"macs": "MACs per forward", "size_mib": "size of the loaded artefact (MiB)"}.get(x_field, x_field)
    for ax, (title, rs) in zip(axes.flat, groups.items(), strict=False):
        xs = [float(getattr(r, x_field)) for r in rs]
        ys = [float(r.latency_p50_ms) for r in rs]
        anchors, points = _scatter_cells(ax, rs, lambda r: float(getattr(r, x_field)),
                                         lambda r: float(r.latency_p50_ms))
        front = _front(xs, ys)
        if len(front) > 1:
            ax.step([xs[i] for i in front], [ys[i] for i in front], where="pre", color="black", linestyle="--",
                    linewidth=1.0, zorder=1)
        ax.plot([xs[i] for i in front], [ys[i] for i in front], linestyle="none", marker="o", markersize=14,
                markerfacecolor="none", markeredgecolor="black", markeredgewidth=0.8, zorder=2)
        _log_axes(ax, "" if x_field == "macs" else None)
        if x_field != "macs":
            from matplotlib.ticker import FuncFormatter

            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        _label_points(ax, anchors, points)
        ax.set_xlabel(what)
        ax.set_ylabel("p50 latency (ms, log)")
        ax.set_title(title, fontsize=10)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    front_handle = [
        Line2D([], [], color="black", linestyle="--", marker="o", markerfacecolor="none", markersize=10,
               label="Pareto front"),
        Line2D([], [], color="#999999", linestyle=":", label="same model, other runtime or precision"),
    ]
    axes.flat[0].legend(handles=_legend_handles(recs, front_handle), fontsize=8, loc="upper left", framealpha=0.9)
    other = f" (other batches measured: {', '.join(map(str, batches[1:]))}; see the tables)" if len(batches) > 1 else ""
    fig.suptitle(f"p50 latency vs {what}, batch {batch}{other}", fontsize=11)
    fig.text(0.01, 0.005, "Pareto front: cells no other cell beats on both axes, taking more "
             f"{'MACs' if x_field == 'macs' else 'size'} (a proxy for capacity) at less latency as better.\n"
             "Marker shape = runtime, fill = precision; a dotted line joins one model's cells "
             "(runtimes, precisions); vertical bars: the p50's 95% interval over repetitions.",
             fontsize=7.5, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return path


def plot_distributions(records: Sequence[Record], path: Path) -> Path | None:
    """Box plots of every ok cell's raw samples (samples_ms), one row per cell, grouped by model.

    Left panel: absolute latency (log axis), where cells sit against each other. Right panel: each sample over
    its cell's median (linear axis), the cell's jitter, which a log axis spanning decades would flatten."""
    recs = [r for r in _ok(records) if r.samples_ms]
    if not recs:
        return None
    plt = _mpl()
    import numpy as np
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    from archbench.bench.analyze.merge import machine_labels

    labels_m = machine_labels(recs)
    many = len(labels_m) > 1
    # models in family order, each model's cells in the order they were measured
    recs = sorted(recs, key=lambda r: (r.family or "", r.model, int(r.batch or 1)))
    data, names, runtimes, models = [], [], [], []
    for r in recs:
        data.append(np.asarray(r.samples_ms, dtype=float))
        extra = f" b{r.batch}" + ("" if (r.mode or "infer") == "infer" else f" {r.mode}") + \
            (f" @{labels_m[fingerprint(r)]}" if many else "")
        names.append(f"{r.model}  {r.runtime} {r.precision}{extra}")
        runtimes.append(r.runtime)
        models.append(r.model)
    n = len(data)
    fig, (ax, axr) = plt.subplots(1, 2, sharey=True, figsize=(13, 1.6 + 0.32 * n), layout="constrained",
                                  gridspec_kw={"width_ratios": [3, 2]})
    pos = list(range(n, 0, -1))  # first cell at the top
    rel = [d / np.median(d) for d in data]
    spare: dict[str, tuple[str, str, str]] = {}
    for a, values in ((ax, data), (axr, rel)):
        bp = a.boxplot(values, positions=pos, orientation="horizontal", whis=(1, 99), showfliers=False,
                       widths=0.6, patch_artist=True, medianprops={"color": "black", "linewidth": 1.5})
        for box, rt in zip(bp["boxes"], runtimes, strict=True):
            _, color, hatch = _runtime_style(rt, spare)
            box.set_facecolor(color + "55")
            box.set_hatch(hatch)
            box.set_edgecolor("black")
        # shade alternate models so that a model's cells read as one group
        start, shade = 0, False
        for i in range(1, n + 1):
            if i == n or models[i] != models[start]:
                if shade:
                    a.axhspan(pos[i - 1] - 0.5, pos[start] + 0.5, color="#000000", alpha=0.06, zorder=0)
                shade, start = not shade, i
        a.grid(True, axis="x", which="both", linewidth=0.4, alpha=0.4)
    for p, d in zip(pos, data, strict=True):
        ax.annotate(f"{num(float(np.median(d)))} ms (n={d.size})", (float(np.percentile(d, 99)), p), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(pos, names, fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 4)  # room for the median labels right of the whiskers
    ax.set_xlabel("latency of one forward (ms, log scale)")
    ax.set_title("where each cell sits", fontsize=9)
    # The jitter axis fits most cells (the 80th percentile of their p1/p99 over median), not the single worst,
    # so that a steady cell's box is not squashed to a line by one spiky cell; cells cut off get a marker.
    p99s = [float(np.percentile(x, 99)) for x in rel]
    p1s = [float(np.percentile(x, 1)) for x in rel]
    top = min(4.0, max(1.1, float(np.percentile(p99s, 80)) * 1.05))
    bottom = max(0.0, min(0.9, float(np.percentile(p1s, 20)) * 0.95))
    axr.set_xlim(bottom, top)
    axr.axvline(1.0, color="black", linewidth=0.6)
    for p, d, hi_r in zip(pos, data, p99s, strict=True):
        cv = float(d.std(ddof=1) / d.mean()) if d.size > 1 else 0.0
        axr.annotate(f"CV {cv:.0%}" + (f" (p99 {num(hi_r)}x ▸)" if hi_r > top else ""), (1.0, p),
                     xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points", va="center",
                     ha="left", fontsize=7)
    axr.set_xlabel(f"latency / the cell's median (linear, axis ends at {top:.2g}x)")
    axr.set_title("jitter within each cell", fontsize=9)
    hs = []
    for rt in dict.fromkeys(runtimes):
        _, color, hatch = _runtime_style(rt, spare)
        hs.append(Patch(facecolor=color + "55", edgecolor="black", hatch=hatch, label=rt))
    fig.legend(handles=hs, fontsize=8, loc="outside upper right", ncol=len(hs), frameon=False)
    fig.suptitle("Latency distributions: box = p25-p75, bold line = median, whiskers = p1-p99 (outliers beyond "
                 "not drawn)", fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return path


BYTES_CAPTION = ("Bytes per forward = weights (loaded artefact size) + input + output tensors, each moved once; "
                 "intermediate activations not counted.\nAbove the bandwidth roof: weights stay in cache between "
                 "calls. Above the compute roof: the runtime's kernels beat torch.mm's, or the peak was measured "
                 "at a busy moment.")


def plot_roofline(placements: Sequence[Any], peaks: Any | None, title: str, path: Path) -> Path | None:
    """One device's roofline: measured roofs (if ``peaks``) and each cell at (FLOP/byte, achieved GFLOP/s)."""
    pts = [p for p in placements if p.bytes > 0 and p.achieved_flops_per_s > 0]
    if not pts:
        return None
    plt = _mpl()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8.5, 5.8))
    anchors, points = _scatter_cells(ax, pts, lambda p: p.intensity, lambda p: p.achieved_flops_per_s / 1e9)
    _log_axes(ax)  # before any transform below: label angles are measured on the log axes
    ais = [p.intensity for p in pts]
    ys = [p.achieved_flops_per_s / 1e9 for p in pts]
    lo_x = min(ais) / 3
    hi_x = max(ais) * 3
    extra = []
    if peaks is not None:
        ridge = peaks.ridge
        lo_x, hi_x = min(lo_x, ridge / 10), max(hi_x, ridge * 10)
        bw, peak = peaks.bytes_per_s / 1e9, peaks.flops_per_s / 1e9
        ax.plot([lo_x, ridge, hi_x], [lo_x * bw, peak, peak], color="black", linewidth=1.6, zorder=1)
        ax.axvline(ridge, color="black", linestyle=":", linewidth=0.8)
        y_lo = min(min(ys), lo_x * bw) / 2
        ax.set_ylim(y_lo, max(max(ys), peak) * 3)
        ax.set_xlim(lo_x, hi_x)
        ax.annotate(f"ridge {num(ridge)} FLOP/B", (ridge, y_lo), xytext=(3, 3), textcoords="offset points",
                    fontsize=8)
        # roof labels go where they cover no point
        pts_px = ax.transData.transform(list(zip(ais, ys, strict=True)))
        _roof_label(ax, f"fp32 matmul peak {num(peak)} GFLOP/s", [ridge * (hi_x / ridge) ** f for f in
                    (0.03, 0.15, 0.3, 0.45)], lambda x: peak, pts_px)
        _roof_label(ax, f"copy bandwidth {num(bw)} GB/s", [lo_x * (ridge / lo_x) ** f for f in
                    (0.05, 0.2, 0.35, 0.5)], lambda x: x * bw, pts_px)
        extra.append(Line2D([], [], color="black", linewidth=1.6, label="measured roof"))
    else:
        title += " (no measured peaks: run `archbench report` on this machine)"
    ax.set_xlim(lo_x, hi_x)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    _label_points(ax, anchors, points)
    ax.set_xlabel("arithmetic intensity (FLOP per byte, log)")
    ax.set_ylabel("achieved GFLOP/s = FLOPs / p50 (log)")
    ax.set_title(f"Roofline: {title}", fontsize=10)
    ax.legend(handles=_legend_handles(pts, extra), fontsize=8, loc="upper left", framealpha=0.9)
    fig.text(0.01, 0.005, BYTES_CAPTION, fontsize=7, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI)
    plt.close(fig)
    return path


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "device"


def plot_all(records: Sequence[Record], out: Path, placements: Sequence[Any] = (),
             peaks: Sequence[Any] = ()) -> list[Path]:
    """Every plot into folder ``out``: latency_vs_macs.png, latency_vs_size.png, latency_distributions.png,
    roofline_<machine>_<device>.png per machine and device (when ``placements`` are given), and tpot_vs_context.png
    and kv_cache_vs_context.png when generate records hold several prompt lengths (report.generate)."""
    from archbench.bench.analyze.merge import machine_labels
    from archbench.bench.analyze.roofline import peaks_for

    out.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_latency_vs(records, "macs", out / "latency_vs_macs.png"),
        plot_latency_vs(records, "size_mib", out / "latency_vs_size.png"),
        plot_distributions(records, out / "latency_distributions.png"),
    ]
    if placements:
        labels = machine_labels(records)
        first: dict[tuple[str, str], Record] = {}
        for r in records:
            first.setdefault((fingerprint(r), r.device), r)
        by: dict[tuple, list[Any]] = defaultdict(list)
        for p in placements:
            by[(p.machine, p.device)].append(p)
        for (machine, device), pts in by.items():
            rec = first.get((machine, device))
            label = f"{labels.get(machine, machine)} / {device}"
            pk = peaks_for(rec, peaks) if rec is not None else None
            paths.append(plot_roofline(pts, pk, label, out / f"roofline_{_slug(label)}.png"))
    return [p for p in paths if p is not None]
