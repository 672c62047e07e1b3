"""Serving scenarios, as cells carry them: what load is offered and how the server is configured. Torch-free, no
runtime, no numpy: the CLI, the engine and the measuring worker all read it.

    s = Scenario("server", qps=200, executors=2, executor_threads=1, max_batch=8, queue_delay_ms=2)
    s.descriptor() == "qps=200 executors=2 executor_threads=1 max_batch=8 queue_delay_ms=2"
    Scenario.parse("server", s.descriptor()) == s

A scenario's **kind** is the cell's ``mode`` (the MLPerf LoadGen scenarios, single-stream being the ordinary
``infer`` cell):

- ``offline``: every sample is available at once; the executors run full batches back to back. Measures samples/s.
- ``server``: requests arrive as a Poisson process at ``qps`` for a duration; latency = completion - arrival,
  queueing included. Measures latency percentiles at that load, and whether the server kept up.
- ``concurrency``: ``concurrency`` requests always in flight (a closed loop: each completion issues the next).

The **descriptor** (canonical ``key=value`` text) is part of the cell's identity (``Cell.scenario``), so several
loads or configurations of one model are cells of their own. ``Rules`` are how long a run must be and how far it
may fall behind before it is INVALID (measure.loadgen); they do not identify a cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

OFFLINE, SERVER, CONCURRENCY = "offline", "server", "concurrency"
KINDS = (OFFLINE, SERVER, CONCURRENCY)
SINGLE_STREAM = "single-stream"  # the ordinary inference cell (mode infer): one request at a time
OFFLINE_MAX_BATCH = 32  # offline's default batch: "best throughput with batching"; the others default to 1

# Validity defaults sized for a small (2-vCPU) machine and runs of seconds, not MLPerf's 600 s and 270,336 queries.
# A p99 from 256 requests rests on its ~3 slowest: the repetitions' interval says how much that moves.
DEFAULT_MIN_DURATION_S = 2.0
DEFAULT_MIN_QUERIES = {OFFLINE: 1024, SERVER: 256, CONCURRENCY: 256}
DEFAULT_TOLERANCE = 0.10  # achieved QPS below (1 - tolerance) x offered, or a backlog above tolerance x N: INVALID


@dataclass(frozen=True)
class Scenario:
    kind: str  # offline | server | concurrency (the cell's mode)
    qps: float | None = None  # server: the Poisson arrival rate offered, requests per second
    concurrency: int | None = None  # concurrency: requests always in flight
    executors: int = 1  # executor threads, each with its own runtime instance
    executor_threads: int = 1  # intra-op threads of each executor's runtime
    max_batch: int = 1  # dynamic batching: most queued requests one executor runs as one batch
    queue_delay_ms: float = 0.0  # dynamic batching: longest the oldest queued request waits for a batch to fill

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"scenario {self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.kind == SERVER and not (_finite(self.qps) and self.qps > 0):
            raise ValueError(f"server scenario: qps {self.qps!r}: expected a finite number > 0")
        if self.kind == CONCURRENCY and not (_whole(self.concurrency) and self.concurrency >= 1):
            raise ValueError(f"concurrency scenario: concurrency {self.concurrency!r}: expected a whole number >= 1")
        for name in ("executors", "executor_threads", "max_batch"):
            if not (_whole(getattr(self, name)) and getattr(self, name) >= 1):
                raise ValueError(f"scenario {name} {getattr(self, name)!r}: expected a whole number >= 1")
        if not (_finite(self.queue_delay_ms) and self.queue_delay_ms >= 0):
            raise ValueError(f"scenario queue_delay_ms {self.queue_delay_ms!r}: expected a finite number >= 0")

    def descriptor(self) -> str:
        """Canonical ``key=value`` text of everything but the kind (the cell's ``scenario``)."""
        head = (f"qps={self.qps:g}" if self.kind == SERVER else
                f"concurrency={self.concurrency}" if self.kind == CONCURRENCY else "")
        rest = (f"executors={self.executors} executor_threads={self.executor_threads} max_batch={self.max_batch} "
                f"queue_delay_ms={self.queue_delay_ms:g}")
        return f"{head} {rest}".strip()

    def title(self) -> str:
        """'server qps=200 executors=2 ...': the kind and the descriptor."""
        return f"{self.kind} {self.descriptor()}"

    @classmethod
    def parse(cls, kind: str, descriptor: str) -> Scenario:
        """The scenario a cell's (mode, scenario) describe; ValueError naming what is wrong."""
        kw: dict[str, float | int] = {}
        names = {f.name: f.type for f in fields(cls)}
        for part in descriptor.split():
            k, sep, v = part.partition("=")
            if not sep or k not in names or k == "kind":
                raise ValueError(f"scenario {descriptor!r}: {part!r} is not key=value of {', '.join(names)}")
            kw[k] = float(v) if k in ("qps", "queue_delay_ms") else int(v)
        return cls(kind, **kw)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Rules:
    """When a serving run is long enough and when it counts as keeping up (measure.loadgen applies them)."""

    min_duration_s: float = DEFAULT_MIN_DURATION_S  # issue requests for at least this long
    min_queries: int = 256  # and complete at least this many
    tolerance: float = DEFAULT_TOLERANCE  # see DEFAULT_TOLERANCE
    seed: int = 0  # of the arrival schedule (each repetition its own)

    @classmethod
    def for_kind(cls, kind: str, min_duration_s: float = 0.0, min_queries: int = 0, tolerance: float = 0.0,
                 seed: int = 0) -> Rules:
        """The rules of a ``kind`` of scenario, 0 meaning its default."""
        return cls(min_duration_s or DEFAULT_MIN_DURATION_S, min_queries or DEFAULT_MIN_QUERIES[kind],
                   tolerance or DEFAULT_TOLERANCE, seed)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
