"""``archbench run --mode train --find-max-batch``: the largest batch whose training step fits in memory.

Per group (model x runtime x precision): double the batch from the smallest ``--batch`` until a trial runs out of
memory (or ``--max-batch-limit`` is reached), then bisect between the last batch that fit and the first that did
not. Each trial is one worker process (``mode="maxbatch-trial"``: build, ``MEM_STEPS`` training steps, peak memory
checked against the cap; no timing), so an out-of-memory error, or the kernel's OOM killer, ends only that trial.
Every trial is a record (``mode="maxbatch-trial"``; failed ones carry an error starting ``out of memory``), so the
search can be audited. The answer is then measured like any training cell (timed, memory split) and recorded with
``mode="train"``, ``max_batch`` and ``mem_cap_mib`` set; that run does not judge the cap again (the trials decided;
RSS differs by some MiB between processes, so an answer at the edge could flip), but says so in ``warning`` when
its peak came out above the cap.

What "fits" means: CUDA: no allocator out-of-memory error (under ``--mem-cap-mib`` via
``torch.cuda.set_per_process_memory_fraction`` when given); CPU: the worker's peak RSS stays at or under
``--mem-cap-mib`` (default: ``DEFAULT_CAP_FRACTION`` of the machine's available memory when the search starts, so a
search cannot push a shared machine into swap or the OOM killer). The search assumes memory grows with the batch;
a failure that is not out of memory (an exception, a timeout) stops the search for that group with a failed record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from archbench.bench.analyze.search import Bracket, SearchState, drive
from archbench.bench.cell import Cell, Job
from archbench.bench.measure.dispatch import failed_record, run_job
from archbench.bench.record import Record, append_jsonl, read_records

DEFAULT_LIMIT = 65536
DEFAULT_CAP_FRACTION = 0.8


class SearchAborted(Exception):
    """A trial failed for a reason other than memory: the search cannot tell where the limit is."""


def find_max_batch(fits: Callable[[int], bool], start: int = 1, limit: int = DEFAULT_LIMIT) -> SearchState:
    """Largest b in [start, limit] with fits(b), assuming fits is monotone (true up to some b, false after):
    analyze.search's walk on whole numbers (doubling from ``start``, then bisection to one apart).
    Trials: about 2 log2(answer / start). ``fits`` may raise SearchAborted to stop."""
    if start < 1 or limit < start:
        raise ValueError(f"need 1 <= start <= limit, got start={start}, limit={limit}")
    s = drive(Bracket(start=start, limit=limit, integer=True, up_steps=64), lambda b: fits(int(b)))
    return replace(s, best=int(s.best), first_failure=None if s.first_failure is None else int(s.first_failure),
                   trials=tuple((int(b), ok) for b, ok in s.trials))


def is_oom(rec: Record) -> bool:
    """A failed trial that ran out of memory: our cap, a CUDA OOM, or the kernel's OOM killer (SIGKILL)."""
    err = rec.error.lower()
    return rec.status == "failed" and (err.startswith("out of memory") or "killed by sigkill" in err)


def default_cap_mib() -> float | None:
    from archbench.bench.measure.harness import available_mib

    avail = available_mib()
    return None if avail is None else round(DEFAULT_CAP_FRACTION * avail)


def done_groups(spec: Any) -> set[tuple]:
    """Groups of an earlier run in spec.out whose search finished (an ok train record with max_batch)."""
    path = spec.out / "records.jsonl"
    if not spec.resume or not path.exists():
        return set()
    return {_group_key(r.model, r.runtime, r.precision) for r in read_records(path)
            if r.ok and r.mode == "train" and r.max_batch is not None}


def _group_key(model: str, runtime: str, precision: str) -> tuple:
    return (model, runtime, precision)


def run_search(spec: Any, progress: Callable[[Record, int, int], None] | None = None) -> list[Record]:
    """``--find-max-batch``: the search for every model x runtime x precision of ``spec``; returns its records."""
    from archbench.bench.measure.engine import new_run_id

    spec.out.mkdir(parents=True, exist_ok=True)
    jsonl = spec.out / "records.jsonl"
    if jsonl.exists() and not spec.resume:
        raise FileExistsError(f"{jsonl} exists; pass --resume to continue that run or choose another --out")
    records: list[Record] = []

    def on_record(rec: Record) -> None:
        append_jsonl(jsonl, rec)
        records.append(rec)
        if progress:
            progress(rec, len(records), 0)

    search_groups(spec, new_run_id(), on_record)
    return records


def search_groups(spec: Any, run_id: str, on_record: Callable[[Record], None]) -> None:
    """Run the search for every model x runtime x precision of ``spec``."""
    o = spec.options
    cap = o.train.mem_cap_mib
    cap_note = ""
    if cap is None and spec.device == "cpu":
        cap = default_cap_mib()
        cap_note = f"--mem-cap-mib defaulted to {DEFAULT_CAP_FRACTION:.0%} of available memory ({cap} MiB)"
    trial_opts = replace(o, train=replace(o.train, mem_cap_mib=cap))
    # The answer is decided by the trials; the final cell measures it (timed, memory split) without judging the
    # cap again: RSS wobbles by some MiB from process to process, and an answer at the edge would flip.
    final_opts = replace(o, train=replace(o.train, mem_cap_mib=None))
    start, limit = min(spec.batches), int(o.train.max_batch_limit or DEFAULT_LIMIT)
    done = done_groups(spec)
    for m in spec.models:
        workdir = str(spec.workdir(m))
        for rt in spec.runtimes:
            for p in spec.precisions:
                if _group_key(m, rt, p) in done:
                    continue

                def cell(b: int, mode: str, opts: Any, m: str = m, rt: str = rt, p: str = p) -> Cell:
                    return replace(spec.cell(m, rt, p, b, mode=mode), options=opts)

                def fits(b: int, workdir: str = workdir) -> bool:
                    got: list[Record] = []
                    job = Job(cells=(cell(b, "maxbatch-trial", trial_opts),), workdir=workdir, run_id=run_id,
                              rule=spec.rule)
                    run_job(job, spec.out, spec.timeout_s, got.append)
                    rec = got[-1]
                    rec.mem_cap_mib = cap
                    if rec.status == "failed" and is_oom(rec) and not rec.error.startswith("out of memory"):
                        rec.error = f"out of memory ({rec.error})"
                    on_record(rec)
                    if rec.status == "ok":
                        return True
                    if is_oom(rec):
                        return False
                    raise SearchAborted(f"trial at batch {b} {rec.status}: {rec.error}")

                first = cell(start, "train", final_opts)
                try:
                    s = find_max_batch(fits, start, limit)
                except SearchAborted as e:
                    rec = failed_record(first, f"max-batch search stopped: {e}", run_id)
                    rec.mem_cap_mib = cap
                    on_record(rec)
                    continue
                tried = ", ".join(f"{b}{'' if ok else ' OOM'}" for b, ok in s.trials)
                notes = [n for n in (cap_note, f"max-batch search trials: {tried}") if n]
                if s.hit_limit:
                    notes.append(f"every trial fit: the search stopped at --max-batch-limit {limit}")
                if s.best == 0:
                    rec = failed_record(first, f"out of memory: no batch fits; batch {start} does not "
                                        f"(cap {cap} MiB)", run_id)
                    rec.max_batch, rec.mem_cap_mib, rec.warning = 0, cap, "; ".join(notes)
                    on_record(rec)
                    continue

                def final(rec: Record, best: int = s.best, notes: list[str] = notes) -> None:
                    rec.max_batch, rec.mem_cap_mib = best, cap
                    if cap is not None and rec.train_peak_mem_mib and rec.train_peak_mem_mib > cap:
                        notes = [*notes, f"this measuring run peaked at {rec.train_peak_mem_mib:.0f} MiB, above the "
                                 f"cap its trial stayed under: the answer sits within run-to-run memory noise"]
                    rec.warning = "; ".join([*notes, rec.warning]).strip("; ")
                    on_record(rec)

                run_job(Job(cells=(cell(s.best, "train", final_opts),), workdir=workdir, run_id=run_id,
                            rule=spec.rule), spec.out, spec.timeout_s, final)
