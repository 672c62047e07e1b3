"""The pipe between the engine and a worker process, and the records a worker starts from. Torch-free.

A worker reads ``Job``s (archbench.bench.cell) from stdin, one JSON line each, runs them in order until stdin
closes, and writes one JSON line per event on its original stdout:

    {"event": "start", "batch": B}                 a cell begins (the engine restarts its timeout)
    {"event": "record", "record": {...}}           a cell ends: its Record, ok, failed or skipped
    {"event": "artifacts", "seconds": S, ...}      an artifacts job finished (measure.artifacts)
    {"event": "done"}                              a job ends (a worker may be sent several, one JSON line each)
    {"event": "ready"}                             a worker started with PRELOAD_ENV has imported its runtime

Anything a model or a library prints goes to stderr (the engine keeps it in a log), so it cannot corrupt the pipe.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TextIO

from archbench.bench.cell import Cell
from archbench.bench.errors import clean_text
from archbench.bench.record import Record

PRELOAD_ENV = "ARCHBENCH_WORKER_PRELOAD"  # "runtime,device,threads": import and size that runtime, then "ready"


def one_line(e: BaseException) -> str:
    """``Type: first line of the message``, at most 500 characters: what a record's ``error`` holds."""
    msg = clean_text(str(e)).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Emitter:
    """Writes events to the engine, one JSON line each, flushed at once."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def __call__(self, event: str, **payload: Any) -> None:
        self.fh.write(json.dumps({"event": event, **payload}) + "\n")
        self.fh.flush()

    def record(self, rec: Record) -> None:
        self("record", record=asdict(rec))


def new_record(cell: Cell, run_id: str = "", **fields: Any) -> Record:
    """A record of ``cell`` with its identity, provenance and the given fields filled in."""
    from archbench.bench.env import environment

    return Record(model=cell.source, runtime=cell.runtime, precision=cell.precision, batch=cell.batch,
                  device=cell.device, threads=cell.threads, knobs=cell.knobs, mode=cell.mode,
                  optimizer=cell.options.train.optimizer if cell.mode != "infer" else "", run_id=run_id,
                  timestamp=now(), **environment(), **fields)


def prepare_failed(e: BaseException, skip: tuple[type[BaseException], ...], cells: tuple[Cell, ...], run_id: str,
                   emit: Emitter) -> None:
    """Building the model or preparing the runtime raised: every cell of the job gets a record saying so,
    ``skipped`` when it is something the runtime cannot do (an instance of ``skip``), else ``failed`` (traceback to
    the log)."""
    if isinstance(e, skip):
        status, error = "skipped", str(e)
    else:
        print(traceback.format_exc(), file=sys.stderr)
        status, error = "failed", f"prepare: {one_line(e)}"
    for c in cells:
        emit.record(new_record(c, run_id, status=status, error=error))
