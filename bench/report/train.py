"""The training section of report.md (records of ``archbench run --mode train``): step time, samples/s, the
memory split, time to train, and the trials of a ``--find-max-batch`` search. Formatting only; called by
``archbench.bench.report.markdown.markdown``. Does not import archbench.bench.measure.train (which imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

MODE_TRAIN, MODE_TRIAL = "train", "maxbatch-trial"  # archbench.bench.measure.train.MODE_TRAIN / MODE_TRIAL

TRAIN_COLS = ["model", "runtime", "precision", "optimizer", "batch", "status", "step p50 ms", "samples/s",
              "peak MiB", "baseline", "params", "grads", "opt state", "activations", "act/sample",
              "time to train h", "max batch"]

NOTE = ("One training step = zero_grad, forward, loss on random targets, backward, optimizer step; in the result "
        "tables above, the latency columns of train rows are step times and samples/s = batch / mean step time. "
        "Memory in MiB: peak (CPU: the worker's peak resident memory; CUDA: max allocated) = baseline (interpreter "
        "and libraries before the model was built) + params + grads + optimizer state (these three exact, from "
        "tensor sizes) + activations (the rest: an **estimate** that also holds workspace and allocator slack). "
        "Time to train = train_samples / samples per second: steady-state steps only (no data loading, "
        "evaluation, checkpointing or compile time).")


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.0f}" if abs(x) >= 10 ** digits else f"{x:.{digits}g}"
    return str(x)


def training_md(records: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of the training section; empty when no record is a training one."""
    train = [r for r in records if r.get("mode") == MODE_TRAIN]
    trials = [r for r in records if r.get("mode") == MODE_TRIAL]
    if not train and not trials:
        return []
    lines = ["## Training", "", NOTE, ""]
    if train:
        rows = [[r["model"], r["runtime"], r["precision"], r.get("optimizer") or "-", str(r["batch"]),
                 r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')[:60]}",
                 _f(r.get("latency_p50_ms")), _f(r.get("throughput_sps")), _f(r.get("train_peak_mem_mib")),
                 _f(r.get("train_mem_baseline_mib")), _f(r.get("param_mib")), _f(r.get("grad_mib")),
                 _f(r.get("optimizer_state_mib")), _f(r.get("activation_mib")),
                 _f(r.get("activation_mib_per_sample")),
                 "-" if r.get("time_to_train_s") is None else f"{r['time_to_train_s'] / 3600:.3g}",
                 _f(r.get("max_batch"))] for r in train]
        lines += [tabulate(rows, headers=TRAIN_COLS, tablefmt="github", disable_numparse=True), ""]
        samples = {r.get("train_samples") for r in train if r.get("train_samples")}
        if samples:
            lines += [f"Time to train is for {', '.join(f'{s:,}' for s in sorted(samples))} samples.", ""]
    if trials:
        lines += ["### Max-batch search trials", "",
                  "Doubling from the smallest --batch, then bisection; each trial is its own worker process running "
                  "a few training steps with the memory cap, so running out of memory ends only that trial.", ""]
        rows = [[r["model"], r["runtime"], r["precision"], str(r["batch"]), _f(r.get("train_peak_mem_mib")),
                 _f(r.get("mem_cap_mib")), "fits" if r.get("status") == "ok" else r.get("error", "")]
                for r in trials]
        lines += [tabulate(rows, headers=["model", "runtime", "precision", "batch", "peak MiB", "cap MiB", "result"],
                           tablefmt="github", disable_numparse=True), ""]
    return lines
