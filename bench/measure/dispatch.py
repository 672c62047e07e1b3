"""Worker processes: start one per job, enforce the per-cell timeout, turn crashes into failed records.

    run_job(job, out, timeout_s, on_record)   # every cell of the job gets exactly one record, whatever happens
    build_artifacts(job, out, timeout_s)      # the artifacts worker; its failure is reported by the cells after it
    Local(out, timeout_s)                     # the engine's Dispatcher on this machine (measure.cluster: on Ray)

A worker runs in its own process group (so Ctrl-C reaches only the parent, which kills the group). A worker that
crashes, is killed (e.g. by the OOM killer) or times out yields a failed record for the cell it was on, and a fresh
worker carries on with the job's remaining cells; one lost while preparing fails them all with the reason.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from archbench.bench.cell import Cell, Job
from archbench.bench.measure.protocol import new_record
from archbench.bench.record import Record

OnRecord = Callable[[Record], None]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "model"


def failed_record(cell: Cell, error: str, run_id: str) -> Record:
    return new_record(cell, run_id, status="failed", error=error)


def describe_exit(code: int | None, log_tail: str) -> str:
    if code is not None and code < 0:
        sig = -code
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        why = " (out of memory? the kernel's OOM killer sends SIGKILL)" if sig == signal.SIGKILL else ""
        return f"worker killed by {name}{why}"
    last = [ln for ln in log_tail.strip().splitlines() if ln.strip()]
    return f"worker exited with code {code}" + (f": {last[-1][:300]}" if last else "")


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - n))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's whole process group (it may have started helpers of its own)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def start(job: Job, log_path: Path, stdout: int | None = subprocess.PIPE) -> subprocess.Popen:
    from archbench.bench.measure.worker import worker_command

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== worker: {job.kind} {job.head.label()} batches {[c.batch for c in job.cells]} ===\n"
                  .encode())
        log.flush()
        proc = subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=stdout, stderr=log,
                                start_new_session=True)  # its own process group: Ctrl-C reaches only the parent
    assert proc.stdin is not None
    proc.stdin.write(job.to_json().encode())
    proc.stdin.close()
    return proc


def log_path(out: Path, cell: Cell, what: str = "") -> Path:
    return out / "logs" / f"{slug(cell.source)}_{what or f'{cell.runtime}_{cell.precision}'}.log"


def run_job(job: Job, out: Path, timeout_s: float, on_record: OnRecord) -> None:
    """Run one job's cells, restarting the worker after a crash or timeout, until every cell has a record."""
    remaining = list(job.cells)
    log = log_path(out, job.head)
    while remaining:
        proc = start(replace(job, cells=tuple(remaining)), log)
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current = remaining[0]
        started = False  # did the worker get past building the model and preparing the runtime?
        deadline = time.monotonic() + timeout_s
        buf = b""
        reason = ""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = f"timed out after {timeout_s:g} s"
                    break
                if not sel.select(timeout=min(left, 1.0)):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break  # worker exited (or closed its stdout)
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        msg = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if msg.get("event") == "start":
                        started = True
                        current = next((c for c in remaining if c.batch == int(msg["batch"])), current)
                        deadline = time.monotonic() + timeout_s
                    elif msg.get("event") == "record":
                        started = True
                        rec = Record.from_dict(msg["record"])
                        remaining = [c for c in remaining if c.batch != rec.batch]
                        on_record(rec)
                        if remaining:
                            current = remaining[0]
                        deadline = time.monotonic() + timeout_s
        finally:
            sel.close()
            if proc.poll() is None:
                kill(proc)
            proc.wait()
            proc.stdout.close()
        if remaining:
            reason = reason or describe_exit(proc.returncode, _tail(log))
            # A worker lost while preparing (build, session) would be lost again for every cell: fail them all
            # with the reason. Lost while measuring a cell: fail that cell, retry the rest.
            lost = [current] if started and current in remaining else list(remaining)
            where = "" if started else " while preparing the model"
            for c in lost:
                remaining.remove(c)
                on_record(failed_record(c, f"{reason}{where} (log: {log})", job.run_id))


def build_artifacts(job: Job, out: Path, timeout_s: float) -> None:
    """Run the artifacts worker to the end (or the timeout). Best effort: when it fails, the measuring workers that
    need its files fail while preparing and say where the log is."""
    proc = start(job, log_path(out, job.head, "artifacts"), stdout=subprocess.DEVNULL)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill(proc)
        proc.wait()
    finally:
        if proc.poll() is None:
            kill(proc)
            proc.wait()


class Dispatcher(Protocol):
    """Where the engine's jobs run: worker processes on this machine (``Local``) or Ray tasks, one node each
    (measure.cluster). Both run the same worker with the same JSON protocol; only where differs."""

    def artifacts(self, jobs: list[Job]) -> None:
        """Make each job's artefact folder available to the measuring jobs of its source (before any of them)."""

    def run_round(self, jobs: list[Job], on_record: OnRecord) -> None:
        """Run one round's jobs (in this order where they run one after another); every cell of every job gets
        its record through ``on_record`` as it finishes."""


@dataclass
class Local:
    """Every job in a worker process of this machine, one after another, in the order given."""

    out: Path
    timeout_s: float

    def artifacts(self, jobs: list[Job]) -> None:
        for job in jobs:
            build_artifacts(job, self.out, self.timeout_s)

    def run_round(self, jobs: list[Job], on_record: OnRecord) -> None:
        for job in jobs:
            run_job(job, self.out, self.timeout_s, on_record)
