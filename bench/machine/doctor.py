"""``archbench doctor``: is this machine fit to measure? Its run-to-run noise on a fixed probe, what the OS says
about frequency, turbo, SMT, load, steal, memory and GPU clocks, and concrete advice (as pyperf's ``system tune``
and trtexec's variance warnings give).

**The probe.** A fixed, deterministic CPU workload that needs only numpy: ``np.matmul`` of two seeded
(256, 256) float32 matrices into a preallocated output (2 * 256^3 = 33.5 MFLOP a call, ~0.25 ms on the dev VM:
short enough for ~1000 timed calls in 0.25 s, long enough that perf_counter's resolution does not matter). It runs
in K separate short-lived processes (default 8), one after another, each started like a measuring worker
(``[sys.executable, "-c", ...]`` with the current directory removed from sys.path, as measure.dispatch.BOOT does) with
OMP/OpenBLAS/MKL threads set to ``threads`` (default 1, so the probe is the same workload on every machine). Each
process warms up, then times every call for ~``measure_s`` seconds and hands back its call times.

**The noise figures** (``noise_figure``, pure). Per process, the median call time m_i, i = 1..K. Then

- between-process CV = sd(m) / mean(m) (sample sd, ddof=1): how much whole processes differ;
- within-process CV = the median over processes of sd / mean of that process's call times, and its robust twin
  1.4826 MAD / median (one preempted 10 ms call among 500 of 0.25 ms doubles the CV, not the robust one);
- ``noise_pct``, the half-width of a 95% prediction interval for *another* process's median (Hahn & Meeker,
  Statistical Intervals, 1991, sec. 4.6), on log-medians because timings are multiplicative and right-skewed:

      h = t_{K-1, 0.975} * sd(log m) * sqrt(1 + 1/K)
      noise_pct = 100 * (exp(h) - 1)

  so another process's median lands within [g / (1 + noise_pct/100), g * (1 + noise_pct/100)] of the geometric
  mean g of the K medians 95% of the time (for small h, noise_pct ~ 100 h). The sqrt(1 + 1/K) term is what makes
  it a prediction interval (a new draw's own spread plus the uncertainty of g), not a confidence interval for g.

**How compare should use it.** ``load_noise()`` returns the cached NoiseFigure of *this* machine (written by the
last ``archbench doctor``), or None when the cache is missing, older than ``max_age_s``, unreadable, or written on
another machine (hostname, CPU model or CPU count differ). With a figure, ``archbench compare`` should never call a
change significant when its ratio new/base lies within the noise band, ``noise.covers(ratio)``, whatever the tests
on the raw samples say: those tests treat calls as independent draws and cannot see that whole runs shift on this
machine (DESIGN.md, "Measuring honestly"). It should say so in its legend ("within the machine's run-to-run noise
±6.3%, measured by archbench doctor at ...") and, with None, say that no noise figure was available. The figure is
for single-threaded numpy work; a model run with more threads is usually noisier, so it is a floor, not a bound.

**The OS facts** (``read_facts``): each reader takes ``root`` (default "/") so tests can hand it a fake /proc and
/sys tree, and returns None (or an empty tuple) when its file is missing; ``read_facts`` lists what was not
readable and why. ``advise`` turns facts and noise into ``Advice`` lines, each with its reason. The cache file is
``$XDG_CACHE_HOME/archbench/doctor.json`` (default ~/.cache/archbench/doctor.json), written atomically.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archbench.bench.analyze.noise import (  # noqa: F401  (re-exported: doctor's API)
    NoiseFigure,
    cv,
    noise_figure,
    robust_cv,
    t_cdf,
    t_ppf,
)
from archbench.bench.machine.sysfacts import (  # noqa: F401  (re-exported: doctor's API)
    GPU_QUERY,
    CpuInfo,
    CpuTimes,
    CpuUsage,
    GpuFacts,
    SystemFacts,
    _num,
    _read,
    _run_quietly,
    cpu_usage,
    parse_cpu_times,
    parse_nvidia_smi,
    read_cpu_times,
    read_cpufreq_driver,
    read_cpuinfo,
    read_governors,
    read_gpus,
    read_loadavg,
    read_meminfo,
    read_pressure,
    read_smt,
    read_static_facts,
    read_turbo,
)

# ----------------------------------------------------------------------------------------------------- the probe

PROBE_N = 256
PROBE_NAME = f"matmul {PROBE_N}x{PROBE_N} float32"

# The child's whole program. sys.path loses the current directory first, as in measure.dispatch.BOOT, so a numpy.py
# in the directory doctor runs from cannot shadow numpy. Seeded standard-normal inputs (never zeros: no fast paths);
# the output is preallocated so each call does the same work and allocates nothing. The loop stops on time *and*
# at least 20 calls, so a very slow machine still yields a usable median; at 200000 calls, so a tiny one ends.
PROBE_CODE = """\
import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]
import json, time
import numpy as np
warmup_s, measure_s, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n)).astype(np.float32)
b = rng.standard_normal((n, n)).astype(np.float32)
out = np.empty((n, n), dtype=np.float32)
clock = time.perf_counter
end = clock() + warmup_s
while True:
    np.matmul(a, b, out=out)
    if clock() >= end:
        break
samples = []
start = clock()
while True:
    t0 = clock()
    np.matmul(a, b, out=out)
    t1 = clock()
    samples.append(t1 - t0)
    if (t1 - start >= measure_s and len(samples) >= 20) or len(samples) >= 200000:
        break
print(json.dumps(samples))
"""

# Every thread-pool knob numpy's BLAS might read: OpenBLAS, MKL, BLIS/OpenMP builds, Accelerate.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                   "VECLIB_MAXIMUM_THREADS")


@dataclass(frozen=True)
class ProbeSettings:
    processes: int = 8
    warmup_s: float = 0.1
    measure_s: float = 0.25
    threads: int = 1
    timeout_s: float = 60.0  # per process; a probe that hangs is a broken machine, not noise


# `--quick`: fewer, shorter processes and a shorter idle window (~3 s in all on the dev VM instead of ~6 s).
QUICK_PROBE = ProbeSettings(processes=5, warmup_s=0.05, measure_s=0.1)


class ProbeError(RuntimeError):
    """A probe process failed (crashed, timed out, or printed no call times)."""


def probe_env(threads: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a probe process: ours, with every BLAS/OpenMP thread count set to ``threads``."""
    env = dict(os.environ if base is None else base)
    env.update({k: str(threads) for k in THREAD_ENV_VARS})
    return env


def run_probe_process(settings: ProbeSettings) -> list[float]:
    """One probe process: its timed call times in ms. Raises ProbeError."""
    cmd = [sys.executable, "-c", PROBE_CODE, str(settings.warmup_s), str(settings.measure_s), str(PROBE_N)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=probe_env(settings.threads),
                              timeout=settings.timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise ProbeError(f"probe process timed out after {settings.timeout_s:g} s") from e
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        raise ProbeError(f"probe process exited with {proc.returncode}: {tail}")
    try:
        samples = [1e3 * float(s) for s in json.loads(proc.stdout.strip().splitlines()[-1])]
    except (ValueError, IndexError, TypeError) as e:
        raise ProbeError(f"probe process printed no call times: {proc.stdout[-200:]!r}") from e
    if not samples:
        raise ProbeError("probe process timed no calls")
    return samples


def run_probe(settings: ProbeSettings, on_process: Callable[[int, list[float]], None] | None = None,
              run_one: Callable[[ProbeSettings], list[float]] = run_probe_process) -> list[list[float]]:
    """K probe processes back to back (never concurrently: they would compete for the CPUs we are measuring);
    each one's call times in ms. ``on_process(i, samples)`` after each, for progress."""
    out = []
    for i in range(settings.processes):
        samples = run_one(settings)
        out.append(samples)
        if on_process is not None:
            on_process(i, samples)
    return out


def noise_from_samples(per_process_ms: Sequence[Sequence[float]], settings: ProbeSettings,
                       measured_at: str = "") -> NoiseFigure:
    """The NoiseFigure of the probe processes' call times (ms)."""
    return noise_figure(
        [statistics.median(s) for s in per_process_ms],
        within_cvs=[cv(s) for s in per_process_ms],
        within_robust_cvs=[robust_cv(s) for s in per_process_ms],
        calls=int(statistics.median(len(s) for s in per_process_ms)),
        probe=PROBE_NAME, threads=settings.threads, measured_at=measured_at,
    )


# ----------------------------------------------------------------------------------------------------- advice

# Thresholds, each with why. The dev VM (2 vCPUs, KVM) reads 0-3% other CPU while idle, steal under 1%.
LOAD_PER_CPU_WARN = 0.5  # a load of half a runnable task per CPU: another process holds a CPU a good part of the time
STEAL_WARN_PCT = 2.0  # steal this high means the host is oversubscribed now; slow spells follow
STEAL_INFO_PCT = 0.5
MEM_AVAILABLE_WARN = 0.10  # below 10% available, the kernel reclaims page cache and timing includes page faults
PRESSURE_WARN_PCT = 1.0  # PSI some avg10: tasks stalled on memory (or waited for a CPU) 1% of the last 10 s
NOISE_OK_PCT = 2.0  # under ±2% run-to-run, changes of a few % are resolvable; above, say how large is needed
PROCESS_EFFECT_WARN = 3.0  # process medians differ 3x more than their own call scatter explains
GPU_BUSY_PCT = 5.0
GPU_HOT_C = 80.0  # most datacenter and consumer GPUs start reducing clocks in the 80s (C)


@dataclass(frozen=True)
class Advice:
    level: str  # warn (fix this or expect noisy numbers) | info (know this) | ok
    topic: str  # governor, turbo, smt, load, steal, memory, gpu, noise, vm, unreadable
    text: str  # the finding, then after ':' what to do and why


def advise(facts: SystemFacts, noise: NoiseFigure | None, busy_pct: float | None = None) -> list[Advice]:
    """Concrete advice from the facts and the noise figure: warnings first, then information. ``busy_pct``: the
    threshold for other processes' CPU use while doctor was idle (default: measure.harness.BUSY_PCT, the same one
    that flags a record as measured on a busy machine)."""
    if busy_pct is None:
        from archbench.bench.analyze.stats import BUSY_PCT

        busy_pct = BUSY_PCT
    out: list[Advice] = []
    add = out.append

    gov = facts.governor
    if gov is not None and gov != "performance":
        add(Advice("warn", "governor", f"governor is {gov}: the frequency ramps with load, so short bursts and the "
                   "first calls after a pause run slow; `sudo cpupower frequency-set -g performance`"))
    if facts.turbo:
        fix = ("echo 1 | sudo tee /sys/devices/system/cpu/intel_pstate/no_turbo" if "no_turbo" in facts.turbo_source
               else "echo 0 | sudo tee /sys/devices/system/cpu/cpufreq/boost")
        add(Advice("warn", "turbo", "turbo boost is on: the clock depends on temperature and on how many cores are "
                   f"busy, so long or parallel runs slow down mid-way; `{fix}` (or `pyperf system tune`)"))
    if facts.smt_active:
        add(Advice("info", "smt", "SMT (hyper-threading) is on: two threads on one core share its units; give a "
                   "benchmark one thread per physical core, or `echo off | sudo tee "
                   "/sys/devices/system/cpu/smt/control`"))

    n = facts.cpu_count or 1
    if facts.load_avg is not None and facts.load_avg[0] >= LOAD_PER_CPU_WARN * n:
        add(Advice("warn", "load", f"load average {facts.load_avg[0]:.2f} on {n} CPUs: other processes are running; "
                   "close them or expect inflated latencies"))
    idle = facts.idle_usage
    if idle is not None and idle.busy_pct > busy_pct:
        add(Advice("warn", "load", f"other processes used {idle.busy_pct:.0f}% of the CPUs while doctor was idle "
                   f"({idle.seconds:.1f} s): they will compete with a benchmark; find them with `top`"))
    steal = max((u.steal_pct for u in (facts.idle_usage, facts.probe_usage) if u is not None), default=None)
    if steal is not None and steal >= STEAL_WARN_PCT:
        add(Advice("warn", "steal", f"steal time {steal:.0f}%: a hypervisor is running other guests on these vCPUs; "
                   "compare only runs measured back to back, interleaved"))
    elif steal is not None and steal >= STEAL_INFO_PCT:
        add(Advice("info", "steal", f"steal time {steal:.1f}%: the host is shared; a busier neighbour will slow "
                   "runs without warning, so compare runs measured back to back"))

    if facts.mem_total_mib and facts.mem_available_mib is not None \
            and facts.mem_available_mib < MEM_AVAILABLE_WARN * facts.mem_total_mib:
        add(Advice("warn", "memory", f"only {facts.mem_available_mib:,.0f} of {facts.mem_total_mib:,.0f} MiB "
                   "available: the kernel is reclaiming memory, so timings include page faults and peak-memory "
                   "numbers can hit swap; close memory-hungry programs"))
    mem_psi = facts.memory_pressure.get("some_avg10")
    if mem_psi is not None and mem_psi >= PRESSURE_WARN_PCT:
        add(Advice("warn", "memory", f"memory pressure {mem_psi:.1f}%: tasks stalled waiting for memory {mem_psi:.1f}% "
                   "of the last 10 s; free memory before measuring"))
    cpu_psi = facts.cpu_pressure.get("some_avg10")
    if cpu_psi is not None and cpu_psi >= PRESSURE_WARN_PCT:
        add(Advice("warn", "load", f"CPU pressure {cpu_psi:.1f}%: runnable tasks waited for a CPU {cpu_psi:.1f}% of "
                   "the last 10 s; fewer threads than CPUs, or fewer other processes"))

    for g in facts.gpus:
        if g.persistence is False:
            add(Advice("warn", "gpu", f"GPU {g.index} persistence mode is off: the driver may tear down between "
                       "processes, so each measuring process pays initialization and starts at idle clocks; "
                       "`sudo nvidia-smi -pm 1`"))
        if g.utilization_pct is not None and g.utilization_pct >= GPU_BUSY_PCT:
            add(Advice("warn", "gpu", f"GPU {g.index} is {g.utilization_pct:.0f}% busy before measuring: another "
                       "process is using it; wait, or pick another GPU with CUDA_VISIBLE_DEVICES"))
        if g.temperature_c is not None and g.temperature_c >= GPU_HOT_C:
            add(Advice("warn", "gpu", f"GPU {g.index} at {g.temperature_c:.0f} C: it will lower its clocks to cool "
                       "down; let it cool, check its airflow"))
        if g.sm_mhz is not None and g.sm_max_mhz and g.sm_mhz < g.sm_max_mhz:
            add(Advice("info", "gpu", f"GPU {g.index} SM clock {g.sm_mhz:.0f} of max {g.sm_max_mhz:.0f} MHz now "
                       "(low when idle is normal): clocks boost and throttle with power and temperature; for steady "
                       f"timings lock them, `sudo nvidia-smi -lgc {g.sm_max_mhz:.0f},{g.sm_max_mhz:.0f}` "
                       "(undo: `-rgc`)"))

    if noise is not None:
        add(_noise_advice(noise))
        effect = process_effect(noise)
        # Only worth saying when the noise matters: a 25x effect on a ±1% machine changes nothing in practice.
        if effect is not None and effect >= PROCESS_EFFECT_WARN and noise.noise_pct > NOISE_OK_PCT:
            add(Advice("info", "noise", f"process medians differ {effect:.0f}x more than their own call-to-call "
                       f"scatter explains (between-process CV {noise.between_cv:.1%}, within "
                       f"{noise.within_robust_cv or noise.within_cv or 0:.1%} over {noise.calls} calls): each "
                       "process lands at its own level, so repeat in separate processes; one long loop does not help"))
    quiet = (steal is None or steal < STEAL_INFO_PCT) and (idle is None or idle.busy_pct <= busy_pct) \
        and (facts.load_avg is None or facts.load_avg[0] < LOAD_PER_CPU_WARN * n)
    if facts.in_vm and noise is not None and noise.noise_pct > NOISE_OK_PCT and quiet:
        add(Advice("info", "noise", "nothing visible from inside explains that noise (no steal reported, no other "
                   "load): in a VM the slow spells come from outside the guest (other tenants sharing the host's "
                   "cores, caches and memory bandwidth; its frequency), which a guest cannot fix; only repetition "
                   "in separate processes, interleaved, averages them out"))
    if facts.in_vm:
        add(Advice("info", "vm", "running in a VM (hypervisor CPU flag): the host's frequency, turbo and neighbours "
                   "are out of reach from here; measure A and B back to back, interleaved, and repeat"))
    if facts.unreadable:
        add(Advice("info", "unreadable", "not readable here: " + "; ".join(facts.unreadable)))
    # Stable sort: warnings first, each group in the order above.
    return sorted(out, key=lambda a: {"warn": 0, "info": 1, "ok": 2}.get(a.level, 3))


def _noise_advice(noise: NoiseFigure) -> Advice:
    pct = noise.noise_pct
    if pct <= NOISE_OK_PCT:
        return Advice("ok", "noise", f"run-to-run noise ±{pct:.1f}%: changes of a few percent between runs are "
                      "resolvable here")
    return Advice("warn", "noise", f"run-to-run noise ±{pct:.0f}%: differences smaller than ~{pct:.0f}% between two "
                  "single processes are not distinguishable here; use more repetitions in separate processes, "
                  "interleaved (compare scales the floor by sqrt(1/R_base + 1/R_new) on the log scale: "
                  f"~{_floor(pct, 5):.0f}% for two runs of 5)")


def _floor(pct: float, reps: int) -> float:
    from archbench.bench.analyze.compare import run_floor

    return 100 * run_floor(pct / 100, reps, reps)


def process_effect(noise: NoiseFigure) -> float | None:
    """How many times more the process medians spread than their own call scatter explains:

        between_cv / (1.2533 * within / sqrt(calls))

    1.2533 = sqrt(pi / 2): the standard error of a median of n draws is ~1.2533 sd / sqrt(n) (asymptotic, normal
    data). ~1 means processes differ only by sampling; >> 1 means each process has its own level (CPU placement,
    memory layout, a neighbour's slow spell), the effect DESIGN.md's "Measuring honestly" warns about. ``within``
    is the robust CV when known (a median ignores outliers, so its scatter is that of the bulk), else the plain
    CV, whose outliers make the ratio smaller: conservative. None without either."""
    within = noise.within_robust_cv or noise.within_cv
    if not within or noise.calls < 2:
        return None
    return noise.between_cv / (math.sqrt(math.pi / 2) * within / math.sqrt(noise.calls))


# ----------------------------------------------------------------------------------------------------- examine


@dataclass(frozen=True)
class Diagnosis:
    facts: SystemFacts
    noise: NoiseFigure
    advice: tuple[Advice, ...]
    settings: ProbeSettings
    seconds: float  # wall time of the whole examination

    def to_json(self) -> dict[str, Any]:
        return {"facts": asdict(self.facts), "noise": asdict(self.noise), "advice": [asdict(a) for a in self.advice],
                "settings": asdict(self.settings), "seconds": self.seconds}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def examine(settings: ProbeSettings, idle_window_s: float = 1.0,
            on_process: Callable[[int, list[float]], None] | None = None) -> Diagnosis:
    """Read the machine, watch it idle for ``idle_window_s``, run the probe, and advise. Raises ProbeError."""
    start = time.perf_counter()
    load = read_loadavg()  # before our own processes raise it
    t0, w0 = read_cpu_times(), time.perf_counter()
    time.sleep(idle_window_s)  # we sleep, so whatever runs now is someone else
    t1, w1 = read_cpu_times(), time.perf_counter()
    measured_at = utc_now()
    samples = run_probe(settings, on_process)
    t2, w2 = read_cpu_times(), time.perf_counter()
    idle = cpu_usage(t0, t1, w1 - w0) if t0 and t1 else None
    during = cpu_usage(t1, t2, w2 - w1) if t1 and t2 else None
    facts = read_static_facts(load_avg=load, idle_usage=idle, probe_usage=during)
    noise = noise_from_samples(samples, settings, measured_at)
    return Diagnosis(facts, noise, tuple(advise(facts, noise)), settings, time.perf_counter() - start)


# ----------------------------------------------------------------------------------------------------- the cache

CACHE_SCHEMA = 1
# A day: the dev VM's noise moves with its neighbours over hours; a figure from last week says little about now.
DEFAULT_MAX_AGE_S = 24 * 3600.0


def cache_path(environ: Mapping[str, str] | None = None) -> Path:
    """$XDG_CACHE_HOME/archbench/doctor.json, or ~/.cache/archbench/doctor.json (XDG Base Directory spec: an
    unset, empty or relative XDG_CACHE_HOME is ignored)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path(environ.get("HOME") or Path.home()) / ".cache"
    return root / "archbench" / "doctor.json"


def machine_identity() -> dict[str, Any]:
    """What must match for a cached noise figure to describe this machine: the same hostname, CPU model and CPU
    count that records carry (archbench.bench.env.environment)."""
    from archbench.bench.env import cpu_model

    return {"hostname": platform.node(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count() or 0}


def save_noise(noise: NoiseFigure, path: Path | None = None, identity: Mapping[str, Any] | None = None,
               now: float | None = None) -> Path:
    """Write the cache atomically (a temp file in the same folder, then os.replace): a reader sees the old file or
    the new one, never half of one. Raises OSError (the CLI turns it into a warning line)."""
    path = cache_path() if path is None else path
    doc = {"schema": CACHE_SCHEMA, **(machine_identity() if identity is None else identity),
           "saved_unix": time.time() if now is None else now, "noise": asdict(noise)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".doctor.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def load_noise(max_age_s: float = DEFAULT_MAX_AGE_S, path: Path | None = None,
               identity: Mapping[str, Any] | None = None, now: float | None = None) -> NoiseFigure | None:
    """This machine's cached NoiseFigure, or None when the cache is missing, older than ``max_age_s`` (or dated in
    the future beyond a minute of clock skew), corrupt, of another schema, or from another machine (hostname, CPU
    model or CPU count differ from ``identity``, default ``machine_identity()``). Never raises for a bad cache:
    compare must work without one. See the module docstring for how compare uses the figure."""
    path = cache_path() if path is None else path
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != CACHE_SCHEMA:
        return None
    ident = machine_identity() if identity is None else identity
    if any(doc.get(k) != v for k, v in ident.items()):
        return None
    saved = doc.get("saved_unix")
    now = time.time() if now is None else now
    if not isinstance(saved, (int, float)) or not -60.0 <= now - saved <= max_age_s:
        return None
    data = doc.get("noise")
    if not isinstance(data, dict) or set(data) - {f.name for f in fields(NoiseFigure)}:
        return None
    try:
        noise = NoiseFigure(**{**data, "medians_ms": tuple(float(m) for m in data.get("medians_ms", ()))})
    except (TypeError, ValueError):
        return None
    if not isinstance(noise.noise_pct, (int, float)) or not math.isfinite(noise.noise_pct) or noise.noise_pct < 0:
        return None
    return noise
