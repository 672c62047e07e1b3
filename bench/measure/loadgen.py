"""The load generator and the server it loads, in one process (the measuring worker's), like MLPerf LoadGen.

    result = run_load(Scenario("server", qps=200, max_batch=8, queue_delay_ms=2), rules, runs)

``runs[e](k)`` runs one batch of ``k`` requests on executor ``e`` (its own runtime instance; modes.serve
builds them). What runs where:

- **executors**: ``len(runs)`` threads. One at a time forms a batch (a lock, so batches leave the queue in FIFO
  order, as analyze.capacity simulates): it takes the oldest request and, with ``max_batch`` > 1, waits until
  ``max_batch`` requests are queued or the oldest has waited ``queue_delay_ms`` since its arrival, then takes up to
  ``max_batch`` and runs them outside every lock. ONNX Runtime sessions and torch ops release the GIL while they
  compute, so executors overlap.
- **server scenario**: a load-generator thread issues a Poisson process at ``qps``: N = max(min_queries,
  ceil(qps x min_duration)) arrival times drawn as N sorted uniforms on [0, N / qps] (a Poisson process
  conditioned on N arrivals in that window: the offered rate is exactly qps, the gaps exponential). It *sleeps*
  until each arrival (``time.sleep`` to the absolute time; an arrival whose time has passed is issued at once, so
  lateness never accumulates) and never busy-waits: its CPU time per issued request is measured
  (``loadgen_cpu_s``, ``time.thread_time``) and so is how late each arrival was issued vs its schedule
  (``late_ms``). **Latency = completion - scheduled arrival**: a late issue counts against the server, never hides
  queueing (no coordinated omission; Tene, "How NOT to measure latency").
- **offline** and **concurrency**: a closed loop. ``concurrency`` requests (offline: 2 x executors x max_batch, so
  every batch is full and no executor waits) are issued at once; every completed batch issues as many new ones
  (arrival = that moment) until both min_duration and min_queries are reached; then the queue drains.

**Validity** (``reasons`` empty = VALID; LoadGen's rule: never a quietly bad number). A run is INVALID when

- it completed fewer than ``min_queries`` requests or issued for less than ``min_duration_s`` (a run that would
  take longer than ``MAX_RUN_S`` stops there);
- server: the backlog (queued + running) at the last arrival exceeds max(``BACKLOG_FLOOR``, 4 x executors x
  max_batch, tolerance x N) - the queue was growing; or it reached ``ABORT_SHARE`` x N (or 4x that floor) while
  issuing, where the run stops early: overloaded;
- server: achieved QPS (completed / (last completion - start)) is below (1 - tolerance) x offered;
- server: the load generator itself issued the last arrival more than tolerance x the schedule late (it could not
  offer the rate);
- the queue did not drain within ``drain_s`` after the last arrival, or a batch raised.

Percentiles of an INVALID run are over the requests that completed: biased low. They are recorded, never judged
as passing (analyze.budgets).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from archbench.bench.scenario import OFFLINE, SERVER, Rules, Scenario

MAX_RUN_S = 120.0  # one run issues for at most this long (min_queries at a low qps would take longer)
MAX_REQUESTS = 10_000_000  # one run's schedule at most (80 MB of arrival times); the CLI refuses more
BACKLOG_FLOOR = 32  # a backlog this small is queueing noise, not growth
ABORT_SHARE = 0.25  # server: stop issuing once this share of all requests is waiting: the answer is known
POLL_S = 0.005  # the main thread sleeps this long between looks at the counters while waiting


@dataclass
class LoadResult:
    """One run (one repetition) of a scenario: every completed request's latency and how the run went."""

    latency_ms: np.ndarray  # completion - arrival of every completed request, in completion order per executor
    issued: int
    completed: int
    start_s: float  # perf_counter at the run's start (time 0 of the schedule)
    last_done_s: float  # perf_counter of the last completion
    issue_span_s: float  # start -> the last request issued
    backlog: int  # server: requests queued or running when the last arrival was issued (closed loop: in flight)
    batches: np.ndarray  # size of each executed batch
    service_ms: np.ndarray  # run() time of each executed batch
    executors: int
    offered_qps: float | None = None
    late_ms: np.ndarray | None = None  # server: issue time - scheduled arrival of every issued request
    loadgen_cpu_s: float | None = None  # server: CPU time of the load-generator thread
    reasons: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.reasons

    @property
    def duration_s(self) -> float:
        return max(self.last_done_s - self.start_s, 1e-9)

    @property
    def achieved_qps(self) -> float:
        """Completed requests per second, start to last completion."""
        return self.completed / self.duration_s

    @property
    def utilization(self) -> float:
        """Busy executor time / (executors x duration)."""
        return float(self.service_ms.sum()) / 1e3 / (self.executors * self.duration_s)


class _Server:
    """The queue and its executor threads (see the module docstring)."""

    def __init__(self, runs: Sequence[Callable[[int], object]], max_batch: int, delay_s: float,
                 starts: Sequence[Callable[[], object]] | None = None) -> None:
        self.runs, self.max_batch, self.delay_s = list(runs), max_batch, delay_s
        self.starts = list(starts) if starts is not None else [lambda: None] * len(self.runs)
        self.ready = threading.Barrier(len(self.runs) + 1)
        self.q: deque[float] = deque()  # arrival times of the queued requests, oldest first
        self.cond = threading.Condition()  # guards q, closed, issued, completed; wakes the batch former
        self.former = threading.Lock()  # one executor forms a batch at a time: FIFO batches
        self.closed = False
        self.issued = self.completed = 0
        self.last_done = 0.0
        self.refill: Callable[[int, float], None] | None = None  # closed loop: issue k more at time t
        n = len(self.runs)
        self.lat: list[list[float]] = [[] for _ in range(n)]
        self.sizes: list[list[int]] = [[] for _ in range(n)]
        self.service: list[list[float]] = [[] for _ in range(n)]
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._executor, args=(e,), name=f"executor-{e}", daemon=True)
                        for e in range(n)]

    def start(self) -> None:
        """Start the executors and return once each has run its ``starts`` function (thread set-up, warm-up)."""
        for t in self.threads:
            t.start()
        self.ready.wait()

    def submit(self, arrivals: Sequence[float]) -> None:
        with self.cond:
            self.q.extend(arrivals)
            self.issued += len(arrivals)
            self.cond.notify()  # only the batch former waits on cond

    def close(self, abandon: bool = False) -> None:
        """No more requests; ``abandon``: drop the queued ones too (a run that overloaded or did not drain)."""
        with self.cond:
            if abandon:
                self.q.clear()
            self.closed = True
            self.cond.notify_all()

    def join(self, timeout_s: float) -> None:
        end = time.perf_counter() + timeout_s
        for t in self.threads:
            t.join(max(0.0, end - time.perf_counter()))

    def _take(self) -> list[float] | None:
        with self.former, self.cond:
            while not self.q and not self.closed:
                self.cond.wait()
            if not self.q:
                return None
            if self.max_batch > 1:
                deadline = self.q[0] + self.delay_s  # the oldest request has waited delay_s since its arrival
                while len(self.q) < self.max_batch and not self.closed:
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self.cond.wait(left)
            return [self.q.popleft() for _ in range(min(len(self.q), self.max_batch))]

    def _executor(self, e: int) -> None:
        run, lat, sizes, service = self.runs[e], self.lat[e], self.sizes[e], self.service[e]
        clock = time.perf_counter
        try:
            self.starts[e]()
        except BaseException as ex:
            self.errors.append(ex)
            self.close(abandon=True)
            return
        finally:
            self.ready.wait()
        while True:
            batch = self._take()
            if batch is None:
                return
            k = len(batch)
            t0 = clock()
            try:
                run(k)
            except BaseException as ex:  # a runtime error ends the run (recorded), never hangs it
                self.errors.append(ex)
                self.close(abandon=True)
                return
            t1 = clock()
            sizes.append(k)
            service.append(t1 - t0)
            lat.extend(t1 - a for a in batch)
            with self.cond:
                self.completed += k
                self.last_done = max(self.last_done, t1)
            if self.refill is not None:
                self.refill(k, t1)


def server_schedule(qps: float, rules: Rules) -> np.ndarray:
    """Arrival times (s from the start) of a server run: N sorted uniforms on [0, N / qps] (module docstring)."""
    n = max(rules.min_queries, math.ceil(qps * rules.min_duration_s))
    n = min(n, max(1, math.floor(qps * MAX_RUN_S)))
    rng = np.random.default_rng(rules.seed)
    return np.sort(rng.uniform(0.0, n / qps, n))


def _floor(s: Scenario) -> int:
    return max(BACKLOG_FLOOR, 4 * s.executors * s.max_batch)


def run_load(s: Scenario, rules: Rules, runs: Sequence[Callable[[int], object]],
             starts: Sequence[Callable[[], object]] | None = None, drain_s: float | None = None) -> LoadResult:
    """Run scenario ``s`` against executors ``runs`` under ``rules``; never raises for what the run does.
    ``starts[e]()`` runs first in executor e's thread (its runtime's thread set-up and warm-up), before any load."""
    if len(runs) != s.executors:
        raise ValueError(f"{s.executors} executors need {s.executors} run functions, got {len(runs)}")
    srv = _Server(runs, s.max_batch, s.queue_delay_ms / 1e3, starts)
    drain = drain_s if drain_s is not None else max(2.0, rules.min_duration_s)
    srv.start()
    if srv.errors:
        srv.join(timeout_s=30.0)
        return _result(srv, s, time.perf_counter(), time.perf_counter(), 0,
                       [f"an executor's set-up raised {type(srv.errors[0]).__name__}: {srv.errors[0]}"])
    if s.kind == SERVER:
        res = _run_server(srv, s, rules, drain)
    else:
        res = _run_closed(srv, s, rules, drain)
    if srv.errors:
        res.reasons.insert(0, f"a batch raised {type(srv.errors[0]).__name__}: {srv.errors[0]}")
    return res


def _finish(srv: _Server, drain_end: float, reasons: list[str]) -> None:
    """Wait (sleeping) until every issued request completed or ``drain_end``; then stop the executors."""
    while srv.completed < srv.issued and time.perf_counter() < drain_end and not srv.errors:
        time.sleep(POLL_S)
    left = srv.issued - srv.completed
    if left and not srv.errors and not reasons:
        reasons.append(f"did not drain: {left} of {srv.issued} requests still waiting "
                       f"{drain_end - srv.last_done if srv.last_done else 0:.1f} s after the last completion")
    srv.close(abandon=True)
    srv.join(timeout_s=30.0)


def _result(srv: _Server, s: Scenario, start: float, issue_end: float, backlog: int, reasons: list[str],
            **extra: object) -> LoadResult:
    lat = np.asarray([x for lst in srv.lat for x in lst], dtype=np.float64) * 1e3
    return LoadResult(
        latency_ms=lat, issued=srv.issued, completed=srv.completed, start_s=start,
        last_done_s=srv.last_done or start, issue_span_s=issue_end - start, backlog=backlog,
        batches=np.asarray([k for lst in srv.sizes for k in lst], dtype=np.int64),
        service_ms=np.asarray([x for lst in srv.service for x in lst], dtype=np.float64) * 1e3,
        executors=s.executors, reasons=reasons, **extra)  # type: ignore[arg-type]


def _run_server(srv: _Server, s: Scenario, rules: Rules, drain_s: float) -> LoadResult:
    assert s.qps is not None
    sched = server_schedule(s.qps, rules)
    n = len(sched)
    tol = rules.tolerance
    abort_at = max(4 * _floor(s), math.ceil(ABORT_SHARE * n))
    late = np.full(n, np.nan)
    state: dict[str, float] = {"cpu": 0.0, "backlog": 0.0, "issue_end": 0.0, "aborted": -1.0}
    start = time.perf_counter() + 0.01  # time for the thread to start before the first arrival

    def generate() -> None:  # the load-generator thread: sleeps to each arrival, issues it, measures itself
        cpu0 = time.thread_time()
        clock, sleep = time.perf_counter, time.sleep
        for i, t in enumerate(sched):
            due = start + t
            now = clock()
            if due > now:
                sleep(due - now)
                now = clock()
            srv.submit((due,))
            late[i] = now - due
            if i + 1 - srv.completed > abort_at:  # a growing queue: the run's answer is known
                state["aborted"] = now - start
                break
        state["issue_end"] = clock()
        state["backlog"] = srv.issued - srv.completed
        state["cpu"] = time.thread_time() - cpu0

    gen = threading.Thread(target=generate, name="loadgen", daemon=True)
    gen.start()
    gen.join()
    issued = srv.issued
    reasons: list[str] = []
    if state["aborted"] >= 0:
        reasons.append(f"overloaded: {int(state['backlog'])} of {n} requests waiting after "
                       f"{state['aborted']:.2f} s at {s.qps:g} qps offered (the executors completed "
                       f"{srv.completed / max(state['aborted'], 1e-9):.4g}/s); the run stopped early")
    _finish(srv, state["issue_end"] + drain_s, reasons)
    res = _result(srv, s, start, state["issue_end"], int(state["backlog"]), reasons, offered_qps=s.qps,
                  late_ms=late[:issued] * 1e3, loadgen_cpu_s=state["cpu"])
    if state["aborted"] < 0:
        floor = max(_floor(s), math.ceil(tol * n))
        if res.backlog > floor:
            reasons.append(f"queue grew: {res.backlog} requests waiting or running at the last arrival "
                           f"(limit {floor}): the server cannot keep up with {s.qps:g} qps")
        if res.completed and res.achieved_qps < (1 - tol) * s.qps:
            reasons.append(f"achieved {res.achieved_qps:.4g} qps < {1 - tol:.0%} of the {s.qps:g} offered")
        span = float(sched[-1])
        if res.issue_span_s > span * (1 + tol) + 0.05:
            reasons.append(f"the load generator fell behind: its last arrival went out "
                           f"{res.issue_span_s - span:.3f} s after schedule (the offered rate was not offered)")
        _short(res, rules, reasons, duration=False)  # N / qps >= min_duration by construction
    return res


def _run_closed(srv: _Server, s: Scenario, rules: Rules, drain_s: float) -> LoadResult:
    """offline and concurrency: a closed loop of ``in_flight`` requests."""
    in_flight = 2 * s.executors * s.max_batch if s.kind == OFFLINE else int(s.concurrency or 1)
    stop = threading.Event()

    def refill(k: int, t: float) -> None:  # in the executor that completed k: issue k more (arrival now)
        if not stop.is_set():
            srv.submit((t,) * k)

    srv.refill = refill
    start = time.perf_counter()
    srv.submit((start,) * in_flight)
    reasons: list[str] = []
    while True:
        elapsed = time.perf_counter() - start
        if (elapsed >= rules.min_duration_s and srv.issued >= rules.min_queries) or srv.errors:
            break
        if elapsed >= MAX_RUN_S:
            break
        time.sleep(POLL_S)
    stop.set()
    issue_end = time.perf_counter()
    backlog = srv.issued - srv.completed
    _finish(srv, issue_end + drain_s, reasons)
    res = _result(srv, s, start, issue_end, backlog, reasons)
    _short(res, rules, reasons)
    return res


def _short(res: LoadResult, rules: Rules, reasons: list[str], duration: bool = True) -> None:
    if res.completed < rules.min_queries:
        reasons.append(f"too few queries: {res.completed} completed < --min-queries {rules.min_queries}"
                       + (f" (a run stops after {MAX_RUN_S:g} s)" if res.issue_span_s >= MAX_RUN_S else ""))
    if duration and res.issue_span_s < rules.min_duration_s * 0.999:
        reasons.append(f"too short: requests issued for {res.issue_span_s:.2f} s < --min-duration "
                       f"{rules.min_duration_s:g} s")
