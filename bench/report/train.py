"""The training section of report.md (records of ``archbench run --mode train``): step time, samples/s, the
memory split, time to train, and the trials of a ``--find-max-batch`` search. Formatting only; called by
``archbench.bench.report.markdown.markdown``. Does not import archbench.bench.measure.train_step (which imports torch)."""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import tabulate

from archbench.bench.record import Record
from archbench.bench.report.format import num

MODE_TRAIN, MODE_TRIAL = "train", "maxbatch-trial"  # archbench.bench.measure.train_step.MODE_TRAIN / MODE_TRIAL

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


def training_md(records: Sequence[Record]) -> list[str]:
    """Markdown lines of the training section; empty when no record is a training one."""
    train = [r for r in records if r.mode == MODE_TRAIN]
    trials = [r for r in records if r.mode == MODE_TRIAL]
    if not train and not trials:
        return []
    lines = ["## Training", "", NOTE, ""]
    if train:
        rows = [[r.model, r.runtime, r.precision, r.optimizer or "-", str(r.batch),
                 r.status if r.ok else f"{r.status}: {(r.error or '')[:60]}",
                 num(r.latency_p50_ms), num(r.throughput_sps), num(r.train_peak_mem_mib),
                 num(r.train_mem_baseline_mib), num(r.param_mib), num(r.grad_mib),
                 num(r.optimizer_state_mib), num(r.activation_mib), num(r.activation_mib_per_sample),
                 "-" if r.time_to_train_s is None else num(r.time_to_train_s / 3600), num(r.max_batch)]
                for r in train]
        lines += [tabulate(rows, headers=TRAIN_COLS, tablefmt="github", disable_numparse=True), ""]
        samples = {r.train_samples for r in train if r.train_samples}
        if samples:
            lines += [f"Time to train is for {', '.join(f'{s:,}' for s in sorted(samples))} samples.", ""]
    if trials:
        lines += ["### Max-batch search trials", "",
                  "Doubling from the smallest --batch, then bisection; each trial is its own worker process running "
                  "a few training steps with the memory cap, so running out of memory ends only that trial.", ""]
        rows = [[r.model, r.runtime, r.precision, str(r.batch), num(r.train_peak_mem_mib), num(r.mem_cap_mib),
                 "fits" if r.ok else r.error] for r in trials]
        lines += [tabulate(rows, headers=["model", "runtime", "precision", "batch", "peak MiB", "cap MiB", "result"],
                           tablefmt="github", disable_numparse=True), ""]
    return lines
