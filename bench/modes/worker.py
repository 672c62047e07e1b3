"""The measuring process. The engine starts it with measure.dispatch.BOOT (never with the current directory first
on sys.path), writes ``Job``s (archbench.bench.cell) on its stdin and reads events from its stdout
(measure.protocol): usually one job; a round's timing-only repetitions of one runtime, several
(measure.dispatch.Pool); the artifacts jobs of a run, all of them (measure.dispatch.build_all).

Every job goes to the mode that owns its cells (archbench.bench.modes: ``run_job``, or ``build_artifacts`` for a job
of kind ``artifacts``). A cell that raises becomes a failed record and the next goes on; a crash, OOM kill or
timeout is turned into a failed record by the engine (measure.dispatch).
"""

from __future__ import annotations

import os
import sys

from archbench.bench.cell import Job
from archbench.bench.measure.protocol import Emitter


def run_job(job: Job, emit: Emitter) -> None:
    """One job, by the mode that owns its cells."""
    from archbench.bench.modes import mode_of

    mode = mode_of(job.head.mode)
    if job.kind == "artifacts":
        mode.build_artifacts(job, emit)
    else:
        mode.run_job(job, emit)


def main() -> None:
    """Jobs from stdin, one JSON line each, run in order until stdin closes; ``done`` after each. A worker started
    with ``PRELOAD_ENV`` (measure.dispatch.Pool) first imports and sizes that runtime and says ``ready``, so its
    start-up is over before the round it serves times anything."""
    import gc

    from archbench.bench.measure.protocol import PRELOAD_ENV

    # Keep the protocol on the original stdout; send everything else (prints, C-level output) to stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    emit = Emitter(proto)
    if os.environ.get(PRELOAD_ENV):
        from archbench.bench.measure.runtimes import get_runtime

        runtime, device, threads = os.environ.pop(PRELOAD_ENV).split(",")
        get_runtime(runtime)(int(threads), device)  # raises (the pool then runs its jobs one worker each)
        emit("ready")
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        job = Job.from_json(line)
        if job.log:  # this job's output goes to its own log
            fd = os.open(job.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, 2)
            os.dup2(fd, 1)
            os.close(fd)
        run_job(job, emit)
        gc.collect()  # before "done": the next job (in another worker, maybe) must not time this one's clean-up
        emit("done")
