"""The timing loop. Rules (DESIGN.md "Measuring honestly"):

- warm up for at least ``warmup_iters`` calls *and* ``warmup_s`` seconds (caches, allocator, lazy init, JIT);
- time every call on its own; stop when both ``min_iters`` calls and ``min_time_s`` seconds are done
  (or at ``max_iters`` / ``max_time_s``, whichever first, so a slow model still ends);
- rotate among several random input sets (never zeros: a zero tensor can hit fast paths);
- on CUDA, time with events recorded around each call and synchronize before reading them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StopRule:
    warmup_iters: int = 5
    warmup_s: float = 0.2
    min_iters: int = 30
    min_time_s: float = 1.0
    max_iters: int = 100_000
    max_time_s: float = 30.0


QUICK = StopRule(warmup_iters=3, warmup_s=0.1, min_iters=20, min_time_s=0.4, max_time_s=5.0)


@dataclass(frozen=True)
class Timing:
    samples_ms: list[float]
    first_ms: float  # the first call, before any warm-up (cold)
    warmup_iters: int
    measure_s: float  # wall time of the timed loop


def measure(
    fn: Callable[[Any], Any],
    input_sets: Sequence[Any],
    rule: StopRule = StopRule(),
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

    sync()
    t0 = time.perf_counter()
    fn(input_sets[0])
    sync()
    first_ms = (time.perf_counter() - t0) * 1e3

    warm = 0
    start = time.perf_counter()
    while warm < rule.warmup_iters or time.perf_counter() - start < rule.warmup_s:
        fn(input_sets[(warm + 1) % k])
        warm += 1
        if time.perf_counter() - start > rule.max_time_s:
            break
    sync()

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


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) so the next read covers only what follows (Linux >= 4.0)."""
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
