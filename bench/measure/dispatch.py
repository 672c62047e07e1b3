"""Worker processes: start one per job, enforce the per-cell timeout, turn crashes into failed records.

    run_job(job, out, timeout_s, on_record)   # every cell of the job gets exactly one record, whatever happens
    build_all(jobs, out, timeout_s)           # the artifacts jobs, in one worker; a failure is reported by the cells
    Pool(out, timeout_s)                      # long-lived workers for a round's timing-only repetitions
    Local(out, timeout_s)                     # the engine's Dispatcher on this machine (measure.cluster.dispatcher: on Ray)

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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from archbench.bench.cell import Cell, Job
from archbench.bench.measure.protocol import PRELOAD_ENV, new_record
from archbench.bench.record import Record

OnRecord = Callable[[Record], None]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "model"


# How the engine starts a worker (archbench.bench.modes.worker): the interpreter's path without the current directory
# ('' with -c), so a user's numpy.py, onnxruntime.py or models/ in the directory archbench runs from cannot shadow
# what the worker imports. The user's own factory modules are still found there: measure.hooks.import_callable
# appends the cwd *last*.
BOOT = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
        "from archbench.bench.modes.worker import main; main()")


def worker_command() -> list[str]:
    return [sys.executable, "-c", BOOT]


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


def _spawn(log_path: Path, header: str, stdout: int | None = subprocess.PIPE,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(header.encode())
        log.flush()
        return subprocess.Popen(worker_command(), stdin=subprocess.PIPE, stdout=stdout, stderr=log,
                                start_new_session=True,  # its own process group: Ctrl-C reaches only the parent
                                env=None if env is None else {**os.environ, **env})


def _header(job: Job) -> str:
    return f"\n=== worker: {job.kind} {job.head.label()} batches {[c.batch for c in job.cells]} ===\n"


def start(job: Job, log_path: Path, stdout: int | None = subprocess.PIPE) -> subprocess.Popen:
    """A worker for ``job`` alone: the job is written to its stdin, which is then closed."""
    proc = _spawn(log_path, _header(job), stdout)
    assert proc.stdin is not None
    proc.stdin.write(job.to_json().encode())
    proc.stdin.close()
    return proc


def log_path(out: Path, cell: Cell, what: str = "") -> Path:
    return out / "logs" / f"{slug(cell.source)}_{what or f'{cell.runtime}_{cell.precision}'}.log"


EOF_, TIMEOUT = "eof", "timeout"


class _Events:
    """A worker's stdout read as JSON events, one per line (measure.protocol); polls at least once a second."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        self.proc, self.buf = proc, b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(proc.stdout, selectors.EVENT_READ)

    def next(self, deadline: float) -> dict | str:
        """The next event, or ``EOF_`` (the worker closed its stdout: it exited) or ``TIMEOUT`` (past deadline)."""
        assert self.proc.stdout is not None
        while True:
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(msg, dict):
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                return TIMEOUT
            if not self.sel.select(timeout=min(left, 1.0)):
                continue
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return EOF_
            self.buf += chunk

    def close(self) -> None:
        """Stop the worker (its whole process group) if it still runs, and reap it."""
        self.sel.close()
        if self.proc.poll() is None:
            kill(self.proc)
        self.proc.wait()
        for fh in (self.proc.stdin, self.proc.stdout):
            if fh is not None:
                try:
                    fh.close()
                except OSError:  # a stdin pipe whose reader died
                    pass


@dataclass
class _Outcome:
    remaining: list[Cell]  # cells of the job with no record yet
    current: Cell  # the cell the worker was on when it stopped
    started: bool  # did the worker get past building the model and preparing the runtime?
    reason: str  # why it stopped early ("" when it did not)


def _drive(events: _Events, cells: tuple[Cell, ...], timeout_s: float, on_record: OnRecord,
           until_done: bool) -> _Outcome:
    """Hand the job's records to ``on_record`` as they come, until the worker exits (or, ``until_done``, says the
    job is done), or a cell runs past ``timeout_s`` (each cell's clock starts when the worker starts it)."""
    out = _Outcome(list(cells), cells[0], False, "")
    deadline = time.monotonic() + timeout_s
    while True:
        msg = events.next(deadline)
        if msg == TIMEOUT:
            out.reason = f"timed out after {timeout_s:g} s"
            return out
        if msg == EOF_ or not isinstance(msg, dict):
            return out
        if msg.get("event") == "start":
            out.started = True
            out.current = next((c for c in out.remaining if c.batch == int(msg["batch"])), out.current)
            deadline = time.monotonic() + timeout_s
        elif msg.get("event") == "record":
            out.started = True
            rec = Record.from_dict(msg["record"])
            out.remaining = [c for c in out.remaining if c.batch != rec.batch]
            on_record(rec)
            if out.remaining:
                out.current = out.remaining[0]
            deadline = time.monotonic() + timeout_s
        elif msg.get("event") == "done" and until_done:
            return out


def _account(out: _Outcome, proc: subprocess.Popen, log: Path, run_id: str, on_record: OnRecord) -> list[Cell]:
    """After a worker was lost: the cells that failed with it get failed records; returns those left to retry.
    A worker lost while preparing (build, session) would be lost again for every cell: fail them all with the
    reason. Lost while measuring a cell: fail that cell, retry the rest."""
    reason = out.reason or describe_exit(proc.returncode, _tail(log))
    lost = [out.current] if out.started and out.current in out.remaining else list(out.remaining)
    where = "" if out.started else " while preparing the model"
    for c in lost:
        on_record(failed_record(c, f"{reason}{where} (log: {log})", run_id))
    return [c for c in out.remaining if c not in lost]


def run_job(job: Job, out: Path, timeout_s: float, on_record: OnRecord) -> None:
    """Run one job's cells, restarting the worker after a crash or timeout, until every cell has a record."""
    remaining = list(job.cells)
    log = log_path(out, job.head)
    while remaining:
        proc = start(replace(job, cells=tuple(remaining)), log)
        events = _Events(proc)
        try:
            got = _drive(events, tuple(remaining), timeout_s, on_record, until_done=False)
        finally:
            events.close()
        remaining = _account(got, proc, log, job.run_id, on_record) if got.remaining else []


def build_artifacts(job: Job, out: Path, timeout_s: float) -> None:
    """Run one artifacts worker to the end (or the timeout). Best effort: when it fails, the measuring workers that
    need its files fail while preparing and say where the log is."""
    build_all([job], out, timeout_s)


def build_all(jobs: list[Job], out: Path, timeout_s: float) -> None:
    """Every artifacts job in one worker process, one after another (torch and the ONNX exporter are imported and
    warmed once: on the dev VM that saved ~3 s per model), each with ``timeout_s`` and its own log. A job that
    crashes the worker or times out is given up (its measuring workers fail while preparing, naming its log); a
    fresh worker carries on with the jobs after it."""
    todo = list(jobs)
    while todo:
        proc = _spawn(log_path(out, todo[0].head, "artifacts"), "")
        events = _Events(proc)
        assert proc.stdin is not None
        try:
            for job in todo:
                path = log_path(out, job.head, "artifacts")
                with open(path, "ab") as fh:
                    fh.write(_header(job).encode())
                proc.stdin.write((replace(job, log=str(path)).to_json() + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass  # the worker died at once: whatever it finished is below, the rest is retried
        try:
            while todo:
                msg = events.next(time.monotonic() + timeout_s)
                if not isinstance(msg, dict):
                    todo.pop(0)  # lost or timed out on this one: give it up, go on with the others
                    break
                if msg.get("event") == "done":
                    todo.pop(0)
        finally:
            events.close()


def poolable(job: Job) -> bool:
    """A job a long-lived worker may run after other jobs (``Pool``): a timing-only repetition (repetition > 0:
    memory, cold start and fidelity are measured in repetition 0's fresh process) of plain inference on a runtime
    whose per-process state does not carry over between models (``RuntimeBase.shares_process``)."""
    from archbench.bench.measure.runtimes import get_runtime

    head = job.head
    if job.kind != "measure" or job.repetition < 1 or head.mode != "infer" or head.scenario:
        return False
    try:
        return bool(get_runtime(head.runtime).shares_process)
    except (ValueError, ImportError):
        return False


class Pool:
    """Long-lived workers for one round's timing-only repetitions: one per (runtime, device, threads), started
    together before the round times anything (a torch worker's ~2 s of start-up is paid once per round, not once
    per model), then fed one job at a time in the round's order, so a model's runtimes still run back to back.
    Each job still has its own log and per-cell timeout; once a worker is lost, the rest of that job and the
    round's later jobs of its kind run in one-job workers (``run_job``), as without the pool."""

    def __init__(self, out: Path, timeout_s: float) -> None:
        self.out, self.timeout_s = out, timeout_s
        self.workers: dict[tuple, _Events] = {}

    @staticmethod
    def key(job: Job) -> tuple:
        return (job.head.runtime, job.head.device, job.head.threads)

    def start(self, jobs: list[Job]) -> None:
        """Start a worker for every kind of job in ``jobs`` and wait until each has imported its runtime (a worker
        that cannot is dropped: its jobs run in one-job workers, which report why)."""
        for job in jobs:
            k = self.key(job)
            if k not in self.workers:
                env = {PRELOAD_ENV: ",".join(map(str, k))}
                proc = _spawn(self.out / "logs" / f"pool_{slug(k[0])}.log", f"\n=== pool worker: {k} ===\n", env=env)
                self.workers[k] = _Events(proc)
        deadline = time.monotonic() + self.timeout_s
        for k, events in list(self.workers.items()):
            msg = events.next(deadline)
            if not (isinstance(msg, dict) and msg.get("event") == "ready"):
                events.close()
                del self.workers[k]

    def run(self, job: Job, on_record: OnRecord) -> None:
        events = self.workers.get(self.key(job))
        if events is None:
            run_job(job, self.out, self.timeout_s, on_record)
            return
        log = log_path(self.out, job.head)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as fh:
            fh.write(_header(job).encode())
        assert events.proc.stdin is not None
        try:
            events.proc.stdin.write((replace(job, log=str(log)).to_json() + "\n").encode())
            events.proc.stdin.flush()
        except OSError:  # it died since it said ready: nothing of this job ran
            self._drop(job)
            run_job(job, self.out, self.timeout_s, on_record)
            return
        got = _drive(events, job.cells, self.timeout_s, on_record, until_done=True)
        if not got.remaining and not got.reason:
            return
        self._drop(job)
        rest = _account(got, events.proc, log, job.run_id, on_record) if got.remaining else []
        if rest:
            run_job(replace(job, cells=tuple(rest)), self.out, self.timeout_s, on_record)

    def _drop(self, job: Job) -> None:
        events = self.workers.pop(self.key(job), None)
        if events is not None:
            events.close()

    def close(self, graceful: bool = True) -> None:
        """End every worker. ``graceful``: close its stdin (an idle worker exits at once) and give it a moment;
        otherwise (Ctrl-C, an error) kill it straight away."""
        for events in self.workers.values():
            if graceful:
                try:
                    if events.proc.stdin is not None:
                        events.proc.stdin.close()
                    events.proc.wait(timeout=5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            events.close()
        self.workers.clear()


class Dispatcher(Protocol):
    """Where the engine's jobs run: worker processes on this machine (``Local``) or Ray tasks, one node each
    (measure.cluster.dispatcher). Both run the same worker with the same JSON protocol; only where differs."""

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
        build_all(jobs, self.out, self.timeout_s)

    def run_round(self, jobs: list[Job], on_record: OnRecord) -> None:
        pool = Pool(self.out, self.timeout_s)
        pooled = [poolable(j) for j in jobs]
        try:
            pool.start([j for j, p in zip(jobs, pooled, strict=True) if p])
            for job, p in zip(jobs, pooled, strict=True):
                if p:
                    pool.run(job, on_record)
                else:
                    run_job(job, self.out, self.timeout_s, on_record)
        except BaseException:
            pool.close(graceful=False)  # Ctrl-C, SIGTERM: no worker outlives the run, and no waiting for one
            raise
        pool.close()
