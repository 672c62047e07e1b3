"""The sweep: a RunSpec becomes cells, cells run in worker processes, records land on disk as they come.

    spec = RunSpec(models=["resnet_s"], runtimes=["torch", "onnxruntime"], batches=[1, 8], out=Path("runs/x"))
    records = run(spec)

Cells that share model, runtime, precision and device form a group measured by one worker process
(``python -m archbench.bench.measure.worker``). The parent enforces a per-cell timeout; a worker that crashes, is killed (e.g. by
the OOM killer) or times out yields a failed record for the cell it was on, and a fresh worker carries on with the
group's remaining cells. Every record is appended to ``records.jsonl`` and fsync'ed the moment it arrives.
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
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from archbench.bench.env import environment
from archbench.bench.measure.harness import QUICK, StopRule
from archbench.bench.record import Record, append_jsonl, cell_key, read_jsonl

DEFAULT_TIMEOUT_S = 300.0


@dataclass
class RunSpec:
    models: list[str]
    out: Path
    runtimes: list[str] = field(default_factory=lambda: ["torch", "onnxruntime"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    batches: list[int] = field(default_factory=lambda: [1])
    device: str = "cpu"
    threads: int = 0  # 0: os.cpu_count()
    knobs: dict[str, Any] = field(default_factory=dict)
    input_shape: tuple[int, ...] | None = None
    dtype: str | None = None
    weights: str | None = None
    rule: StopRule = QUICK
    timeout_s: float = DEFAULT_TIMEOUT_S  # per cell, from the moment the worker starts it (or starts up)
    resume: bool = False
    input_sets: int = 4
    # Worker options that do not identify a cell: fidelity_samples, calibration, calib_batches, metric_hook...
    # (see archbench.bench.measure.worker's docstring).
    options: dict[str, Any] = field(default_factory=dict)
    # "infer" (forward only) or "train" (archbench.bench.measure.train: one training step per call). Part of the cell's identity.
    mode: str = "infer"
    # mode train: optimizer, train_samples, mem_cap_mib, find_max_batch, max_batch_limit (archbench.bench.measure.train, archbench.bench.measure.maxbatch)
    train: dict[str, Any] = field(default_factory=dict)

    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass(frozen=True)
class Group:
    model: str
    runtime: str
    precision: str
    batches: tuple[int, ...]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "model"


def plan(spec: RunSpec, done: set[tuple] | None = None) -> list[Group]:
    """Groups of cells still to run, in the order given (models, then runtimes, then precisions)."""
    done = done or set()
    knobs = json.dumps(spec.knobs, sort_keys=True)
    threads = spec.resolved_threads()
    groups = []
    for m in spec.models:
        for rt in spec.runtimes:
            for p in spec.precisions:
                todo = tuple(b for b in spec.batches
                             if (m, knobs, rt, p, b, spec.device, threads, spec.mode) not in done)
                if todo:
                    groups.append(Group(m, rt, p, todo))
    return groups


def done_cells(path: Path) -> set[tuple]:
    """Cells with an ok record in an existing records.jsonl (what --resume skips; failed cells run again)."""
    if not path.exists():
        return set()
    return {cell_key(r) for r in read_jsonl(path) if r.get("status") == "ok"}


def _job(spec: RunSpec, g: Group, batches: tuple[int, ...], run_id: str) -> dict[str, Any]:
    knob_slug = "" if not spec.knobs else "_" + _slug(json.dumps(spec.knobs, sort_keys=True))
    return {
        "model": g.model, "runtime": g.runtime, "precision": g.precision, "device": spec.device,
        "threads": spec.resolved_threads(), "batches": list(batches), "knobs": spec.knobs,
        "input_shape": list(spec.input_shape) if spec.input_shape else None, "dtype": spec.dtype,
        "weights": spec.weights, "rule": asdict(spec.rule), "input_sets": spec.input_sets, "run_id": run_id,
        "options": spec.options, "mode": spec.mode, "train": spec.train,
        "workdir": str(spec.out / "artifacts" / (_slug(g.model) + knob_slug)), "cwd": os.getcwd(),
    }


def _failed(spec: RunSpec, g: Group, batch: int, error: str, run_id: str) -> Record:
    env = environment()
    return Record(
        model=g.model, runtime=g.runtime, precision=g.precision, batch=batch, device=spec.device,
        threads=spec.resolved_threads(), status="failed", error=error, mode=spec.mode,
        optimizer=spec.train.get("optimizer", "") if spec.mode != "infer" else "",
        knobs=json.dumps(spec.knobs, sort_keys=True), run_id=run_id,
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"), **env,
    )


def _describe_exit(code: int | None, log_tail: str) -> str:
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


OnRecord = Callable[[Record], None]


def run_group(spec: RunSpec, g: Group, run_id: str, on_record: OnRecord) -> None:
    """Run one group's cells, restarting the worker after a crash or timeout, until every cell has a record."""
    remaining = list(g.batches)
    logs = spec.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{_slug(g.model)}_{g.runtime}_{g.precision}.log"
    while remaining:
        job = _job(spec, g, tuple(remaining), run_id)
        with open(log_path, "ab") as log:
            log.write(f"\n=== worker for {g} batches {remaining} ===\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "archbench.bench.measure.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, start_new_session=True,  # its own process group: Ctrl-C reaches only the parent
            )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job).encode())
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current = remaining[0]
        started = False  # did the worker get past building the model and preparing the runtime?
        deadline = time.monotonic() + spec.timeout_s
        buf = b""
        reason = ""
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    reason = f"timed out after {spec.timeout_s:g} s"
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
                        current = int(msg["batch"])
                        deadline = time.monotonic() + spec.timeout_s
                    elif msg.get("event") == "record":
                        started = True
                        rec = Record(**msg["record"])
                        if rec.batch in remaining:
                            remaining.remove(rec.batch)
                        on_record(rec)
                        if remaining:
                            current = remaining[0]
                        deadline = time.monotonic() + spec.timeout_s
        finally:
            sel.close()
            if proc.poll() is None:
                _kill(proc)
            proc.wait()
            proc.stdout.close()
        if remaining:
            if not reason:
                reason = _describe_exit(proc.returncode, _tail(log_path))
            # A worker lost while preparing (build, export, session) would be lost again for every cell:
            # fail them all with the reason. Lost while measuring a cell: fail that cell, retry the rest.
            lost = [current] if started and current in remaining else list(remaining)
            for b in lost:
                remaining.remove(b)
                where = "" if started else " while preparing the model"
                on_record(_failed(spec, g, b, f"{reason}{where} (log: {log_path})", run_id))


def export_first(spec: RunSpec, model: str, run_id: str) -> None:
    """Export ``model`` to ONNX in a worker of its own, before its ONNX Runtime cells (archbench.bench.measure.worker.export_job).

    Best effort: when this fails or times out, the first measuring worker exports again and its record carries
    the real reason. Skipped for .onnx sources and when the export is cached (--resume)."""
    job = _job(spec, Group(model, "onnxruntime", "fp32", ()), (), run_id)
    if model.lower().endswith(".onnx") or (Path(job["workdir"]) / "exporter.txt").exists():
        return
    logs = spec.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{_slug(model)}_export.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "archbench.bench.measure.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        assert proc.stdin is not None
        proc.stdin.write(json.dumps({**job, "mode": "export"}).encode())
        proc.stdin.close()
        try:
            proc.wait(timeout=spec.timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run(spec: RunSpec, progress: Callable[[Record, int, int], None] | None = None) -> list[Record]:
    """Run every cell of ``spec`` not already done; return the records of this invocation."""
    spec.out.mkdir(parents=True, exist_ok=True)
    jsonl = spec.out / "records.jsonl"
    if jsonl.exists() and not spec.resume:
        raise FileExistsError(f"{jsonl} exists; pass --resume to continue that run or choose another --out")
    done = done_cells(jsonl) if spec.resume else set()
    groups = plan(spec, done)
    total = sum(len(g.batches) for g in groups)
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    records: list[Record] = []

    def on_record(rec: Record) -> None:
        append_jsonl(jsonl, rec)
        records.append(rec)
        if progress:
            progress(rec, len(records), total)

    if spec.mode == "train" and spec.train.get("find_max_batch"):
        from archbench.bench.measure.maxbatch import search_groups

        search_groups(spec, run_id, on_record)  # its own groups: the batches are what it searches for
        return records
    exported: set[str] = set()
    for g in groups:
        if g.runtime == "onnxruntime" and spec.mode == "infer" and g.model not in exported:
            exported.add(g.model)
            export_first(spec, g.model, run_id)
        run_group(spec, g, run_id, on_record)
    return records
