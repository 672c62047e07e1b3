"""The timing loop. Rules (DESIGN.md "Measuring honestly"):

- warm up for at least ``warmup_iters`` calls *and* ``warmup_s`` seconds (caches, allocator, lazy init, JIT);
- time every call on its own; stop when both ``min_iters`` calls and ``min_time_s`` seconds are done
  (or at ``max_iters`` / ``max_time_s``, whichever first, so a slow model still ends);
- rotate among several random input sets (never zeros: a zero tensor can hit fast paths);
- on CUDA, time with events recorded around each call and synchronize before reading them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from archbench.bench.analyze.stats import BUSY_PCT, busy_warning  # noqa: F401  (re-exported)
from archbench.bench.cell import QUICK, StopRule  # noqa: F401  (re-exported: the rule lives with the cell)

DEFAULT_RULE = StopRule()


@dataclass(frozen=True)
class Timing:
    samples_ms: list[float]
    first_ms: float  # the first call, before any warm-up (cold)
    warmup_iters: int
    measure_s: float  # wall time of the timed loop


@dataclass(frozen=True)
class WarmUp:
    first_ms: float  # the first call, before any warm-up (cold)
    iters: int  # warm-up calls after it
    per_call_s: float  # median of the later, warmer half of the warm-up calls: what a timed call will cost


def warm_up(fn: Callable[[Any], Any], input_sets: Sequence[Any], rule: StopRule,
            sync: Callable[[], None] = lambda: None) -> WarmUp:
    """The cold first call, then warm-up calls (at least ``warmup_iters`` *and* ``warmup_s``, at most ``max_time_s``)
    rotating through the input sets: what every timing loop here and the pytest fixture start with."""
    import statistics

    k = len(input_sets)
    sync()
    t0 = time.perf_counter()
    fn(input_sets[0])
    sync()
    first_ms = (time.perf_counter() - t0) * 1e3
    warm: list[float] = []
    start = time.perf_counter()
    while len(warm) < rule.warmup_iters or time.perf_counter() - start < rule.warmup_s:
        t = time.perf_counter()
        fn(input_sets[(len(warm) + 1) % k])
        sync()
        warm.append(time.perf_counter() - t)
        if time.perf_counter() - start > rule.max_time_s:
            break
    per_call = statistics.median(warm[len(warm) // 2:]) if warm else first_ms / 1e3
    return WarmUp(first_ms, len(warm), per_call)


def measure(
    fn: Callable[[Any], Any],
    input_sets: Sequence[Any],
    rule: StopRule = DEFAULT_RULE,
    cuda: bool = False,
) -> Timing:
    """Time ``fn(inputs)`` per call, rotating through ``input_sets``."""
    if not input_sets:
        raise ValueError("measure() needs at least one input set")
    k = len(input_sets)
    sync: Callable[[], None] = lambda: None  # noqa: E731
    if cuda:
        import torch

        sync = torch.cuda.synchronize

    w = warm_up(fn, input_sets, rule, sync)
    first_ms, warm = w.first_ms, w.iters

    samples: list[float] = []
    i = 0
    loop_start = time.perf_counter()
    if cuda:
        import torch

        events = []
        while True:
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn(input_sets[i % k])
            e.record()
            events.append((s, e))
            i += 1
            if len(events) >= 64:  # read back in chunks so the loop's clock sees GPU time too
                torch.cuda.synchronize()
                samples += [a.elapsed_time(b) for a, b in events]
                events = []
            elapsed = time.perf_counter() - loop_start
            if (i >= rule.min_iters and elapsed >= rule.min_time_s) or i >= rule.max_iters or elapsed >= rule.max_time_s:
                break
        torch.cuda.synchronize()
        samples += [a.elapsed_time(b) for a, b in events]
    else:
        clock = time.perf_counter_ns
        while True:
            t = clock()
            fn(input_sets[i % k])
            samples.append((clock() - t) / 1e6)
            i += 1
            elapsed = time.perf_counter() - loop_start
            if (i >= rule.min_iters and elapsed >= rule.min_time_s) or i >= rule.max_iters or elapsed >= rule.max_time_s:
                break
    return Timing(samples, first_ms, warm, time.perf_counter() - loop_start)




@dataclass(frozen=True)
class CpuSnapshot:
    busy_s: float  # all CPUs since boot: user + nice + system + irq + softirq + steal (/proc/stat), seconds
    own_s: float  # this process, all its threads: user + system (os.times), seconds
    wall_s: float  # time.perf_counter()


def cpu_snapshot() -> CpuSnapshot | None:
    """Where the machine's CPU time has gone so far (Linux; None elsewhere). See ``other_cpu_pct``."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    t = os.times()
    hz = os.sysconf("SC_CLK_TCK")
    return CpuSnapshot((user + nice + system + irq + softirq + steal) / hz, t.user + t.system, time.perf_counter())


def other_cpu_pct(before: CpuSnapshot | None, after: CpuSnapshot | None, ncpu: int | None = None) -> float | None:
    """CPU used by anything but this process between two snapshots, in % of all CPUs' capacity:

        other % = (delta busy_s - delta own_s) / (delta wall_s * ncpu) * 100

    Steal (the hypervisor running another guest on our vCPUs) counts as other. Clamped at 0 (the two clocks tick
    at different granularity: /proc/stat in 1/CLK_TCK s). None without /proc/stat or for a zero-length interval.
    """
    if before is None or after is None:
        return None
    wall = after.wall_s - before.wall_s
    if wall <= 0:
        return None
    ncpu = ncpu or os.cpu_count() or 1
    other = (after.busy_s - before.busy_s) - (after.own_s - before.own_s)
    return max(0.0, 100.0 * other / (wall * ncpu))


def trim_heap() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc malloc_trim), so RSS reflects live memory."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next read covers only what follows (Linux >= 4.0).

    The high-water mark restarts at the current RSS, so the heap is trimmed first (``trim_heap``): what preparing
    the cell freed (an fp32 graph loaded for fp16 conversion, say) would otherwise count as the model's. On vit_s
    that was 47 MiB of an fp16 ONNX Runtime cell's peak; 14 MiB after.
    """
    trim_heap()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mib() -> float:
    """Resident memory of this process now (not the peak), MiB; 0.0 where /proc is missing."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def available_mib() -> float | None:
    """MemAvailable of the machine, MiB (None where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# ----------------------------------------------------------------------------------------------------- generation
# The timing loop of --mode generate (archbench.bench.modes.generate says what is timed and why): a runtime's
# decoder (measure.runtimes: ``generates``) driven one prefill and then one decode step at a time.

MIN_GENERATIONS = 3  # timed generations per repetition at least: TTFT has one sample per generation


class Decoder(Protocol):
    """What a runtime's ``decoder()`` returns (measure.runtimes: ``generates``)."""

    kv_itemsize: int  # bytes per element of the KV cache

    def convert(self, prompt: np.ndarray) -> Any: ...

    def prefill(self, prompt: Any) -> Any: ...

    def decode(self, token: Any) -> Any: ...

    def tokens(self, token: Any) -> np.ndarray: ...

    def sync(self) -> None: ...


@dataclass(frozen=True)
class Generation:
    """One generation's times (ms) and tokens (B, new_tokens)."""

    ttft_ms: float
    step_ms: list[float]
    tokens: np.ndarray

    @property
    def e2e_ms(self) -> float:
        return self.ttft_ms + sum(self.step_ms)


def generate_once(dec: Decoder, prompt: Any, new_tokens: int) -> Generation:
    """Prefill + argmax, then ``new_tokens - 1`` decode steps, each timed on its own."""
    t0 = time.perf_counter()
    tok = dec.prefill(prompt)
    dec.sync()
    ttft = (time.perf_counter() - t0) * 1e3
    out, steps = [tok], []
    for _ in range(new_tokens - 1):
        t0 = time.perf_counter()
        tok = dec.decode(tok)
        dec.sync()
        steps.append((time.perf_counter() - t0) * 1e3)
        out.append(tok)
    return Generation(ttft, steps, np.concatenate([dec.tokens(t) for t in out], axis=1))


@dataclass(frozen=True)
class GenTiming:
    first_ms: float  # the cold generation, end to end
    warmup: int  # generations before timing (the cold one included)
    timed: list[Generation]
    measure_s: float

    @property
    def ttft_ms(self) -> list[float]:
        return [g.ttft_ms for g in self.timed]

    @property
    def step_ms(self) -> list[float]:
        return [s for g in self.timed for s in g.step_ms]


def time_generations(dec: Decoder, prompt: Any, new_tokens: int, rule: Any) -> GenTiming:
    """Warm-up generations, then timed ones under ``rule`` (StopRule; archbench.bench.modes.generate says why)."""
    start = time.perf_counter()
    first = generate_once(dec, prompt, new_tokens).e2e_ms
    warm = 1
    while time.perf_counter() - start < rule.warmup_s and time.perf_counter() - start < rule.max_time_s:
        generate_once(dec, prompt, new_tokens)
        warm += 1
    timed: list[Generation] = []
    t0 = time.perf_counter()
    while True:
        timed.append(generate_once(dec, prompt, new_tokens))
        elapsed = time.perf_counter() - t0
        steps = len(timed) * (new_tokens - 1)
        if elapsed >= rule.max_time_s or (len(timed) >= MIN_GENERATIONS and steps >= rule.min_iters
                                          and elapsed >= rule.min_time_s):
            return GenTiming(first, warm, timed, elapsed)


