"""What the OS exposes about a machine's fitness to measure: CPU, frequency governor, turbo, SMT, load, steal, memory
pressure, GPUs (archbench doctor). Each reader takes a root path so tests can use a fake /proc and /sys."""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# ----------------------------------------------------------------------------------------------------- OS facts


def _read(root: str | Path, rel: str) -> str | None:
    """The stripped text of root/rel, or None when it is missing or unreadable (a VM has no cpufreq, a container
    may hide /sys, an old kernel has no /proc/pressure)."""
    try:
        return (Path(root) / rel.lstrip("/")).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


@dataclass(frozen=True)
class CpuInfo:
    model: str  # "" when not readable
    count: int  # logical CPUs listed in /proc/cpuinfo; 0 when not readable
    hypervisor: bool | None  # the `hypervisor` CPU flag: the kernel runs as a guest (KVM, Xen, Hyper-V, VMware)


def read_cpuinfo(root: str | Path = "/") -> CpuInfo:
    text = _read(root, "proc/cpuinfo")
    if text is None:
        return CpuInfo("", 0, None)
    model, count, flags = "", 0, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = value.split()
    return CpuInfo(model, count, None if flags is None else "hypervisor" in flags)


def read_governors(root: str | Path = "/") -> dict[str, str]:
    """{cpuN: scaling governor} for every CPU exposing cpufreq; {} without cpufreq (typical in a VM)."""
    out = {}
    pattern = str(Path(root) / "sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")
    for path in glob.glob(pattern):
        value = _read("/", path)
        if value:
            out[Path(path).parent.parent.name] = value
    # cpu2 before cpu10
    return dict(sorted(out.items(), key=lambda kv: int(kv[0][3:]) if kv[0][3:].isdigit() else -1))


def read_cpufreq_driver(root: str | Path = "/") -> str | None:
    return _read(root, "sys/devices/system/cpu/cpu0/cpufreq/scaling_driver") or None


def read_turbo(root: str | Path = "/") -> tuple[bool | None, str]:
    """(turbo on?, the file that said so). intel_pstate exposes ``no_turbo`` (1 = turbo off); acpi-cpufreq and
    amd-pstate expose ``cpufreq/boost`` (1 = on). (None, "") when neither exists."""
    no_turbo = _read(root, "sys/devices/system/cpu/intel_pstate/no_turbo")
    if no_turbo in ("0", "1"):
        return no_turbo == "0", "/sys/devices/system/cpu/intel_pstate/no_turbo"
    boost = _read(root, "sys/devices/system/cpu/cpufreq/boost")
    if boost in ("0", "1"):
        return boost == "1", "/sys/devices/system/cpu/cpufreq/boost"
    return None, ""


def read_smt(root: str | Path = "/") -> bool | None:
    """Whether SMT (hyper-threading) is active. In a VM this says what the guest sees (usually 0), not the host."""
    value = _read(root, "sys/devices/system/cpu/smt/active")
    return None if value not in ("0", "1") else value == "1"


def read_loadavg(root: str | Path = "/") -> tuple[float, float, float] | None:
    """The 1-, 5- and 15-minute load averages: runnable (and uninterruptible) tasks, exponentially averaged."""
    text = _read(root, "proc/loadavg")
    try:
        one, five, fifteen = (float(x) for x in (text or "").split()[:3])
    except ValueError:
        return None
    return one, five, fifteen


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate ``cpu`` line of /proc/stat, in clock ticks since boot (all CPUs together)."""

    user: int
    nice: int
    system: int
    idle: int
    iowait: int
    irq: int
    softirq: int
    steal: int

    @property
    def total(self) -> int:  # guest time is already inside user/nice, so it is not added again
        return self.user + self.nice + self.system + self.idle + self.iowait + self.irq + self.softirq + self.steal


def parse_cpu_times(stat_text: str) -> CpuTimes | None:
    for line in stat_text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            vals = [int(x) for x in parts[1:9]]
            vals += [0] * (8 - len(vals))  # kernels before 2.6.11 had no steal column
            return CpuTimes(*vals)
    return None


def read_cpu_times(root: str | Path = "/") -> CpuTimes | None:
    text = _read(root, "proc/stat")
    try:
        return parse_cpu_times(text) if text else None
    except ValueError:
        return None


@dataclass(frozen=True)
class CpuUsage:
    """Shares of all CPUs' time between two /proc/stat readings, in %."""

    busy_pct: float  # user + nice + system + irq + softirq: anything running (guests' own work, not steal)
    steal_pct: float  # the hypervisor ran something else while our vCPUs wanted to run
    iowait_pct: float
    seconds: float  # wall time between the readings (0 when unknown)


def cpu_usage(before: CpuTimes, after: CpuTimes, seconds: float = 0.0) -> CpuUsage | None:
    """Usage between two readings; None when no tick elapsed."""
    total = after.total - before.total
    if total <= 0:
        return None

    def pct(name: str) -> float:
        return 100.0 * max(0, getattr(after, name) - getattr(before, name)) / total

    busy = sum(pct(n) for n in ("user", "nice", "system", "irq", "softirq"))
    return CpuUsage(busy, pct("steal"), pct("iowait"), seconds)


def read_meminfo(root: str | Path = "/") -> dict[str, float]:
    """/proc/meminfo in MiB ({'MemTotal': ..., 'MemAvailable': ..., ...}); {} when not readable."""
    out = {}
    for line in (_read(root, "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        with contextlib.suppress(ValueError, IndexError):
            out[key.strip()] = float(parts[0]) / 1024.0 if parts[1:] == ["kB"] else float(parts[0])
    return out


def read_pressure(root: str | Path = "/", resource: str = "memory") -> dict[str, float]:
    """Pressure stall information (PSI, Linux >= 4.20): {'some_avg10': %, 'full_avg10': %, ...}, the share of
    the last 10/60/300 s in which some (or all) runnable tasks were stalled waiting for ``resource``; {} without
    PSI."""
    out = {}
    for line in (_read(root, f"proc/pressure/{resource}") or "").splitlines():
        kind, *pairs = line.split()
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key.startswith("avg"):
                with contextlib.suppress(ValueError):
                    out[f"{kind}_{key}"] = float(value)
    return out


# ----------------------------------------------------------------------------------------------------- GPUs

# Fields every driver since the 2010s accepts; one unknown field makes nvidia-smi reject the whole query, so the
# newer clocks_event_reasons.* (renamed from clocks_throttle_reasons.*) are left out.
GPU_QUERY = ("index", "name", "pstate", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
             "persistence_mode", "temperature.gpu", "utilization.gpu", "power.draw")


@dataclass(frozen=True)
class GpuFacts:
    index: int
    name: str
    pstate: str  # P0 (max performance) .. P12 (idle)
    sm_mhz: float | None
    sm_max_mhz: float | None
    mem_mhz: float | None
    mem_max_mhz: float | None
    persistence: bool | None
    temperature_c: float | None
    utilization_pct: float | None
    power_w: float | None


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_nvidia_smi(text: str) -> list[GpuFacts]:
    """GPUs from ``nvidia-smi --query-gpu=<GPU_QUERY> --format=csv,noheader,nounits``; malformed lines skipped."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(GPU_QUERY):
            continue
        idx, name, pstate, sm, sm_max, mem, mem_max, pm, temp, util, power = parts
        index = _num(idx)
        if index is None:
            continue
        persistence = {"enabled": True, "disabled": False}.get(pm.lower())
        out.append(GpuFacts(int(index), name, pstate, _num(sm), _num(sm_max), _num(mem), _num(mem_max), persistence,
                            _num(temp), _num(util), _num(power)))
    return out


def _run_quietly(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=True).stdout


def read_gpus(runner: Callable[[list[str]], str] | None = None) -> tuple[list[GpuFacts], str]:
    """(GPUs, a note when none could be read). ``runner(cmd) -> stdout`` replaces the real nvidia-smi in tests."""
    cmd = ["nvidia-smi", f"--query-gpu={','.join(GPU_QUERY)}", "--format=csv,noheader,nounits"]
    if runner is None:
        if shutil.which("nvidia-smi") is None:
            return [], "no nvidia-smi on PATH"
        runner = _run_quietly
    try:
        text = runner(cmd)
    except (OSError, subprocess.SubprocessError) as e:
        return [], f"nvidia-smi failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    gpus = parse_nvidia_smi(text)
    return gpus, "" if gpus else "nvidia-smi listed no GPU"


# ----------------------------------------------------------------------------------------------------- all facts


@dataclass(frozen=True)
class SystemFacts:
    """What the OS exposes about this machine's fitness to measure. None / empty = not readable (see
    ``unreadable``)."""

    hostname: str
    cpu_model: str
    cpu_count: int
    in_vm: bool | None  # hypervisor CPU flag
    governors: dict[str, str] = field(default_factory=dict)  # cpuN -> scaling_governor
    cpufreq_driver: str | None = None
    turbo: bool | None = None
    turbo_source: str = ""
    smt_active: bool | None = None
    load_avg: tuple[float, float, float] | None = None  # read before the probe, so it excludes our own processes
    idle_usage: CpuUsage | None = None  # while doctor slept: what the rest of the machine used
    probe_usage: CpuUsage | None = None  # while the probe ran: steal is only visible when we want the CPU
    mem_total_mib: float | None = None
    mem_available_mib: float | None = None
    swap_used_mib: float | None = None
    memory_pressure: dict[str, float] = field(default_factory=dict)  # PSI, see read_pressure
    cpu_pressure: dict[str, float] = field(default_factory=dict)
    gpus: tuple[GpuFacts, ...] = ()
    gpu_note: str = ""  # why no GPU is listed
    unreadable: tuple[str, ...] = ()  # "what: why", one per fact that could not be read

    @property
    def governor(self) -> str | None:
        """The governor when all CPUs share one; 'mixed (...)' otherwise; None without cpufreq."""
        values = sorted(set(self.governors.values()))
        if not values:
            return None
        return values[0] if len(values) == 1 else f"mixed ({', '.join(values)})"


def read_static_facts(root: str | Path = "/", gpu_runner: Callable[[list[str]], str] | None = None,
                      load_avg: tuple[float, float, float] | None = None, idle_usage: CpuUsage | None = None,
                      probe_usage: CpuUsage | None = None) -> SystemFacts:
    """Every fact that is read at one instant (the /proc/stat windows are measured by ``examine`` and passed in).
    ``root`` is "/" except in tests; the hostname is this process's (it is not a file)."""
    from archbench.bench.env import cpu_model

    info = read_cpuinfo(root)
    unreadable = []
    governors = read_governors(root)
    driver = read_cpufreq_driver(root)
    if not governors:
        unreadable.append("frequency governor: no cpufreq in /sys (in a VM the host sets the frequency)")
    turbo, turbo_source = read_turbo(root)
    if turbo is None:
        unreadable.append("turbo: neither intel_pstate/no_turbo nor cpufreq/boost exists")
    smt = read_smt(root)
    if smt is None:
        unreadable.append("SMT: no /sys/devices/system/cpu/smt/active")
    if load_avg is None:
        load_avg = read_loadavg(root)
    if load_avg is None:
        unreadable.append("load average: no /proc/loadavg")
    if idle_usage is None:
        unreadable.append("CPU usage and steal: no /proc/stat")
    mem = read_meminfo(root)
    if "MemAvailable" not in mem:
        unreadable.append("available memory: no MemAvailable in /proc/meminfo")
    mem_psi, cpu_psi = read_pressure(root, "memory"), read_pressure(root, "cpu")
    if not mem_psi:
        unreadable.append("memory pressure: no /proc/pressure (kernel without PSI)")
    if info.hypervisor is None:
        unreadable.append("VM or not: no flags in /proc/cpuinfo")
    gpus, gpu_note = read_gpus(gpu_runner)
    swap_used = mem["SwapTotal"] - mem["SwapFree"] if {"SwapTotal", "SwapFree"} <= mem.keys() else None
    return SystemFacts(
        hostname=platform.node(),
        # The same CPU model string as records' provenance (archbench.bench.env) when reading the real machine.
        cpu_model=info.model or (cpu_model() if str(root) == "/" else ""),
        cpu_count=info.count or ((os.cpu_count() or 0) if str(root) == "/" else 0),
        in_vm=info.hypervisor,
        governors=governors,
        cpufreq_driver=driver,
        turbo=turbo,
        turbo_source=turbo_source,
        smt_active=smt,
        load_avg=load_avg,
        idle_usage=idle_usage,
        probe_usage=probe_usage,
        mem_total_mib=mem.get("MemTotal"),
        mem_available_mib=mem.get("MemAvailable"),
        swap_used_mib=swap_used,
        memory_pressure=mem_psi,
        cpu_pressure=cpu_psi,
        gpus=tuple(gpus),
        gpu_note=gpu_note,
        unreadable=tuple(unreadable),
    )


