"""Capacity planning from single-stream service times: p99 latency against offered load for a serving
configuration, and how many executors (replicas) a target QPS needs under a latency SLA. Pure: numpy only.

    st = service_times({1: samples_b1_ms, 8: samples_b8_ms})      # the records' raw samples per batch size
    cap = capacity_qps(st, Config(executors=2, max_batch=8))        # saturation throughput, requests/s
    p = simulate(st, 150.0, Config(executors=2, max_batch=8, queue_delay_ms=2))   # p.p99_ms ...
    plan = executors_needed(st, 200.0, quantile=0.99, limit_ms=20.0, base=Config(max_batch=8))

**The model** (a discrete-event simulation; the same queue discipline as measure.loadgen runs for real):
requests arrive as a Poisson process at rate lambda (exponential gaps, seeded). ``executors`` identical servers;
batches leave the queue in FIFO order, one formed at a time: a free executor takes the oldest request and, with
``max_batch`` > 1, waits until ``max_batch`` requests have arrived or the oldest has waited ``queue_delay_ms``,
then takes up to ``max_batch`` (it starts forming no earlier than the previous batch left). A batch of k takes a
service time drawn from the empirical distribution measured at batch k (a random sample of the single-stream
record's ``samples_ms``; between measured batch sizes, the same quantile interpolated linearly in k). Latency
(sojourn) = completion - arrival. The first ``WARMUP`` share of requests is dropped (the queue starts empty).

**What it assumes** (and a measured server run can contradict): service times are independent draws from the
single-stream distribution, so executors do not slow each other down - true for replicas on their own CPUs, not
for executors sharing this machine's cores, memory bandwidth or the Python GIL; the per-request overhead of a real
server (queueing, batching, the load generator) is not in a single-stream sample. results/serving-validation
compares predictions with measured server runs.

**Capacity** (saturation throughput) = executors x B / mean service at batch B, B = min(max_batch, the largest
measured batch): a saturated queue always fills the batch. At or above it the queue grows without bound:
predictions there are ``stable=False`` with infinite latencies.

Checked against closed forms (tests/test_serving.py): M/M/1 mean wait rho / (mu - lambda) and sojourn p99 =
ln(100) / (mu - lambda); M/D/1 mean wait rho / (2 mu (1 - rho)); M/M/c's mean wait from Erlang C.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

WARMUP = 0.1  # share of the simulated requests dropped from the start (the queue starts empty)
PLATEAU_UTILIZATION = 0.2  # executors_needed stops adding executors below this utilization: no queue left to cut
DEFAULT_REQUESTS = 40_000  # simulated requests per prediction: p99 rests on ~360 after the warm-up


@dataclass(frozen=True)
class ServiceTimes:
    """Empirical service-time distributions (ms) per batch size: sorted samples."""

    by_batch: Mapping[int, np.ndarray]

    @property
    def batches(self) -> list[int]:
        return sorted(self.by_batch)

    @property
    def max_batch(self) -> int:
        return max(self.by_batch)

    def mean(self, k: int) -> float:
        """Mean service time of a batch of k (interpolated linearly between measured batch sizes)."""
        return float(np.mean(self.draw(k, np.linspace(0.0, 1.0, 1001, endpoint=False))))

    def draw(self, k: int, u: np.ndarray | float) -> np.ndarray:
        """Service times of a batch of k at uniform draws ``u`` in [0, 1): the u-quantiles of the measured
        samples (batch k, or interpolated between the nearest measured sizes around it)."""
        u = np.asarray(u, dtype=float)
        bs = self.batches
        if k in self.by_batch:
            return _pick(self.by_batch[k], u)
        if k < bs[0] or k > bs[-1]:
            raise ValueError(f"batch {k} is outside the measured batch sizes {bs[0]}..{bs[-1]}")
        lo = max(b for b in bs if b < k)
        hi = min(b for b in bs if b > k)
        a, b = _pick(self.by_batch[lo], u), _pick(self.by_batch[hi], u)
        return a + (b - a) * (k - lo) / (hi - lo)


def _pick(sorted_samples: np.ndarray, u: np.ndarray) -> np.ndarray:
    n = len(sorted_samples)
    return sorted_samples[np.minimum((u * n).astype(np.int64), n - 1)]


def service_times(samples: Mapping[int, Sequence[float]]) -> ServiceTimes:
    """ServiceTimes from raw samples (ms) per batch size; ValueError when a batch has none or a bad value."""
    out = {}
    for k, xs in samples.items():
        a = np.sort(np.asarray(xs, dtype=float))
        if a.size == 0 or not np.all(np.isfinite(a)) or a[0] < 0 or int(k) < 1:
            raise ValueError(f"batch {k}: need finite service times >= 0, got {a.size} samples")
        out[int(k)] = a
    if not out:
        raise ValueError("no service times")
    return ServiceTimes(out)


@dataclass(frozen=True)
class Config:
    executors: int = 1
    max_batch: int = 1
    queue_delay_ms: float = 0.0

    def title(self) -> str:
        return f"executors={self.executors} max_batch={self.max_batch} queue_delay_ms={self.queue_delay_ms:g}"


@dataclass(frozen=True)
class Prediction:
    qps: float
    config: Config
    stable: bool  # qps < capacity: the queue does not grow without bound
    utilization: float  # qps / capacity
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float  # mean sojourn (wait + service)
    mean_wait_ms: float  # mean time from arrival to the batch's dispatch
    mean_batch: float
    requests: int  # simulated requests the statistics rest on (after the warm-up)

    def latency(self, quantile: float | None) -> float:
        """The sojourn time at ``quantile`` (0.5, 0.9, 0.99), or the mean for None."""
        if quantile is None:
            return self.mean_ms
        return {0.5: self.p50_ms, 0.9: self.p90_ms, 0.99: self.p99_ms}.get(quantile, math.nan)


def capacity_qps(st: ServiceTimes, cfg: Config) -> float:
    """Saturation throughput, requests/s: executors x B / mean service at B, B = min(max_batch, largest measured)."""
    b = min(cfg.max_batch, st.max_batch)
    return cfg.executors * b / st.mean(b) * 1e3


def simulate(st: ServiceTimes, qps: float, cfg: Config, requests: int = DEFAULT_REQUESTS, seed: int = 0
             ) -> Prediction:
    """Sojourn-time statistics at Poisson load ``qps`` (module docstring; every request's: ``sojourn_times``)."""
    if not (qps > 0 and math.isfinite(qps)):
        raise ValueError(f"qps {qps!r}: expected a finite number > 0")
    util = qps / capacity_qps(st, cfg)
    if util >= 1.0:
        inf = math.inf
        return Prediction(qps, cfg, False, util, inf, inf, inf, inf, inf, float(min(cfg.max_batch, st.max_batch)), 0)
    soj, wait, batch = sojourn_times(st, qps, cfg, requests, seed)
    keep = slice(int(WARMUP * len(soj)), None)
    s = soj[keep]
    p50, p90, p99 = np.percentile(s, [50, 90, 99])
    return Prediction(qps, cfg, True, util, float(p50), float(p90), float(p99), float(s.mean()),
                      float(wait[keep].mean()), batch, int(s.size))


def sojourn_times(st: ServiceTimes, qps: float, cfg: Config, requests: int = DEFAULT_REQUESTS, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """(sojourn ms, wait ms, mean batch) of every simulated request, in arrival order."""
    if cfg.executors < 1 or cfg.max_batch < 1 or cfg.queue_delay_ms < 0 or requests < 1:
        raise ValueError(f"bad configuration {cfg} or request count {requests}")
    rng = np.random.default_rng(seed)
    n = int(requests)
    arr = np.cumsum(rng.exponential(1000.0 / qps, n))  # ms
    u = rng.random(n)
    b_max, delay = min(cfg.max_batch, st.max_batch), cfg.queue_delay_ms
    done = np.empty(n)
    wait = np.empty(n)
    free = [0.0] * cfg.executors  # when each executor is next free (a heap)
    last_dispatch = 0.0
    batches = i = 0
    while i < n:
        t_free = heapq.heappop(free)
        start = max(t_free, arr[i], last_dispatch)
        if b_max > 1:
            full_at = arr[i + b_max - 1] if i + b_max - 1 < n else math.inf
            dispatch = max(start, min(arr[i] + delay, full_at))
            k = min(b_max, int(np.searchsorted(arr, dispatch, side="right")) - i)
        else:
            dispatch, k = start, 1
        exact = st.by_batch.get(k)  # (inlined _pick: this loop runs once per batch)
        if exact is not None:
            s = float(exact[min(int(u[i] * len(exact)), len(exact) - 1)])
        else:
            s = float(st.draw(k, u[i]))
        done[i:i + k] = dispatch + s
        wait[i:i + k] = dispatch - arr[i:i + k]
        heapq.heappush(free, dispatch + s)
        last_dispatch = dispatch
        batches += 1
        i += k
    return done - arr, wait, n / batches


def curve(st: ServiceTimes, cfg: Config, loads: Sequence[float], requests: int = DEFAULT_REQUESTS,
          seed: int = 0) -> list[Prediction]:
    """Predictions at each offered load (requests/s)."""
    return [simulate(st, q, cfg, requests, seed) for q in loads]


@dataclass(frozen=True)
class Plan:
    qps: float
    quantile: float | None  # the SLA's latency statistic (None: the mean)
    limit_ms: float
    base: Config
    executors: int | None  # fewest executors whose prediction meets the SLA (None: none up to max_executors)
    prediction: Prediction | None  # at that many executors
    tried: tuple[Prediction, ...]  # every executor count tried, in order
    reason: str = ""  # why there is no answer


def executors_needed(st: ServiceTimes, qps: float, limit_ms: float, quantile: float | None = 0.99,
                     base: Config = Config(), max_executors: int = 64, requests: int = DEFAULT_REQUESTS,
                     seed: int = 0) -> Plan:
    """The fewest executors (replicas) with ``base``'s batching for which the predicted latency statistic at
    ``qps`` is <= ``limit_ms``. Latency falls as executors are added (more servers, same arrivals), so the first
    count that meets it is the answer; counts below capacity are skipped without simulating, and an SLA that the
    service time alone misses (no queueing at all) has no answer."""
    tried: list[Prediction] = []
    # With no wait at all a request's latency is its service time: if that alone misses the SLA, no count meets it.
    alone = st.mean(1) if quantile is None else float(st.draw(1, np.array([min(quantile, 1 - 1e-12)]))[0])
    if alone > limit_ms:
        what = "mean" if quantile is None else f"p{100 * quantile:g}"
        return Plan(qps, quantile, limit_ms, base, None, None, (), f"the {what} of one request's service time alone "
                    f"is {alone:.3g} ms > {limit_ms:g} ms: no executor count meets it")
    one = capacity_qps(st, Config(1, base.max_batch, base.queue_delay_ms))
    start = max(1, math.floor(qps / one) + 1) if one > 0 else 1
    for e in range(start, max_executors + 1):
        cfg = Config(e, base.max_batch, base.queue_delay_ms)
        p = simulate(st, qps, cfg, requests, seed)
        tried.append(p)
        if p.stable and p.latency(quantile) <= limit_ms:
            return Plan(qps, quantile, limit_ms, base, e, p, tuple(tried))
        if p.utilization < PLATEAU_UTILIZATION:  # barely any queueing left: more executors change nothing
            return Plan(qps, quantile, limit_ms, base, None, None, tuple(tried),
                        f"more executors do not help: at {e} ({p.utilization:.0%} busy) the latency is still "
                        f"{p.latency(quantile):.3g} ms, the service times (and the batching wait) alone")
    return Plan(qps, quantile, limit_ms, base, None, None, tuple(tried),
                f"no executor count up to {max_executors} meets it")


def erlang_c_wait(lam: float, mu: float, c: int) -> float:
    """M/M/c mean wait in queue: C(c, a) / (c mu - lambda), a = lambda / mu, with Erlang C's probability of waiting
    C = (a^c / c!) (c / (c - a)) / (sum_{k<c} a^k / k! + (a^c / c!) (c / (c - a))). For tests and sanity checks."""
    a = lam / mu
    if a >= c:
        return math.inf
    top = a**c / math.factorial(c) * c / (c - a)
    prob = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return prob / (c * mu - lam)
