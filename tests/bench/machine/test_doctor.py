"""archbench doctor: the noise math on synthetic data with known answers, the OS readers on fake /proc and /sys
trees, the advice rules, the cache (round trip and every reason to reject it), and one end-to-end run.
No test asserts a timing value: only behaviour."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from archbench.bench.machine import doctor as d

# ----------------------------------------------------------------------------------------------------- t quantiles

# Reference values: standard t tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2), to 6 significant digits.
T_TABLE = [
    (0.975, 1, 12.7062),
    (0.975, 2, 4.30265),
    (0.975, 4, 2.77645),
    (0.975, 7, 2.36462),
    (0.975, 30, 2.04227),
    (0.995, 5, 4.03214),
    (0.95, 3, 2.35336),
    (0.90, 10, 1.37218),
    (0.975, 1e7, 1.95996),  # -> the normal quantile
]


@pytest.mark.parametrize("p,df,expected", T_TABLE)
def test_t_quantile_matches_tables(p: float, df: float, expected: float) -> None:
    assert d.t_ppf(p, df) == pytest.approx(expected, rel=2e-5), f"t_{{{df}, {p}}}"


@pytest.mark.parametrize("p", [0.6, 0.9, 0.975, 0.999])
def test_t_quantile_closed_forms(p: float) -> None:
    # df = 1 is Cauchy: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p)).
    assert d.t_ppf(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-9)
    assert d.t_ppf(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9)


def test_t_quantile_symmetry_and_inverse() -> None:
    assert d.t_ppf(0.5, 5) == pytest.approx(0.0, abs=1e-9)
    assert d.t_ppf(0.025, 7) == pytest.approx(-d.t_ppf(0.975, 7), rel=1e-12)
    for df in (1, 3, 9, 50):
        for p in (0.55, 0.8, 0.99):
            assert d.t_cdf(d.t_ppf(p, df), df) == pytest.approx(p, abs=1e-10), (p, df)


def test_t_quantile_matches_scipy_on_a_grid() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 7, 11, 19, 40, 120):
        for p in (0.6, 0.9, 0.95, 0.975, 0.995):
            assert d.t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8), (p, df)


@pytest.mark.parametrize("p,df", [(0.0, 3), (1.0, 3), (0.5, 0), (0.9, -1)])
def test_t_quantile_rejects_bad_input(p: float, df: float) -> None:
    with pytest.raises(ValueError):
        d.t_ppf(p, df)


# ----------------------------------------------------------------------------------------------------- noise figures


def test_identical_medians_have_no_noise() -> None:
    n = d.noise_figure([0.25] * 8, within_cvs=[0.1] * 8, calls=500)
    assert n.noise_pct == 0.0 and n.between_cv == 0.0 and n.log_sd == 0.0
    assert n.center_ms == pytest.approx(0.25)
    assert n.within_cv == pytest.approx(0.1) and n.processes == 8 and n.calls == 500


def test_noise_figure_known_answer() -> None:
    # log-medians 0, +0.1, -0.1: mean 0, sample sd exactly 0.1; K = 3 so t_{2, 0.975} = 4.30265.
    n = d.noise_figure([1.0, math.exp(0.1), math.exp(-0.1)])
    assert n.log_sd == pytest.approx(0.1, rel=1e-12)
    assert n.center_ms == pytest.approx(1.0, rel=1e-12)
    half = 4.302652729911275 * 0.1 * math.sqrt(1 + 1 / 3)
    assert n.noise_pct == pytest.approx(100 * math.expm1(half), rel=1e-9)
    assert n.t_factor == pytest.approx(4.302652729911275, rel=1e-9)
    assert n.within_cv is None


def test_noise_figure_is_scale_free() -> None:
    medians = [0.24, 0.29, 0.23, 0.31, 0.26]
    a, b = d.noise_figure(medians), d.noise_figure([7.0 * m for m in medians])
    assert b.noise_pct == pytest.approx(a.noise_pct, rel=1e-12)
    assert b.between_cv == pytest.approx(a.between_cv, rel=1e-12)
    assert b.center_ms == pytest.approx(7.0 * a.center_ms, rel=1e-12)


def test_lognormal_medians_recover_sigma() -> None:
    # Many lognormal medians with known sigma: log-sd -> sigma, CV -> sqrt(exp(sigma^2) - 1) ~ sigma, and the
    # interval's t factor -> the normal 1.96.
    sigma, rng = 0.05, random.Random(1)
    n = d.noise_figure([math.exp(rng.gauss(math.log(0.3), sigma)) for _ in range(4000)])
    assert n.log_sd == pytest.approx(sigma, rel=0.05)
    assert n.between_cv == pytest.approx(math.sqrt(math.expm1(sigma**2)), rel=0.05)
    assert n.noise_pct == pytest.approx(100 * math.expm1(1.96 * sigma), rel=0.06)
    assert n.center_ms == pytest.approx(0.3, rel=0.01)


def test_prediction_interval_covers_95_percent() -> None:
    # What noise_pct claims, checked by simulation: from K = 8 lognormal medians, the band [g/(1+n), g(1+n)]
    # holds the *next* process's median 95% of the time. 4000 trials: binomial sd 0.34%, so +-1.5% is ~4.4 sd.
    rng, trials, hits = random.Random(7), 4000, 0
    for _ in range(trials):
        draws = [math.exp(rng.gauss(0.0, 0.1)) for _ in range(9)]
        n = d.noise_figure(draws[:8])
        hits += n.covers(draws[8] / n.center_ms)
    assert abs(hits / trials - 0.95) < 0.015, f"coverage {hits / trials:.3f}"


@pytest.mark.parametrize("medians", [[], [0.3], [0.3, 0.0], [0.3, -1.0], [0.3, float("nan")]])
def test_noise_figure_rejects_bad_medians(medians: list[float]) -> None:
    with pytest.raises(ValueError):
        d.noise_figure(medians)


@pytest.mark.parametrize("ratio,covered", [(1.0, True), (1.099, True), (1 / 1.099, True), (1.101, False),
                                           (1 / 1.101, False), (2.0, False)])
def test_covers_is_a_multiplicative_band(ratio: float, covered: bool) -> None:
    n = replace(d.noise_figure([1.0, 1.0]), noise_pct=10.0)
    assert n.covers(ratio) is covered


def test_cv() -> None:
    assert d.cv([2.0, 2.0, 2.0]) == 0.0
    assert d.cv([5.0]) == 0.0
    assert d.cv([1.0, 3.0]) == pytest.approx(math.sqrt(2) / 2)


def test_robust_cv_ignores_a_preempted_call() -> None:
    rng = random.Random(3)
    calls = [rng.gauss(0.25, 0.0025) for _ in range(500)]  # CV 1%
    assert d.robust_cv(calls) == pytest.approx(0.01, rel=0.15)
    with_outlier = [*calls, 10.0]  # one call descheduled for 10 ms
    assert d.cv(with_outlier) > 0.5  # the plain CV explodes...
    assert d.robust_cv(with_outlier) == pytest.approx(d.robust_cv(calls), rel=0.02)  # ...the robust one does not
    assert d.robust_cv([1.0]) == 0.0 and d.robust_cv([2.0, 2.0, 2.0]) == 0.0


def test_noise_from_samples_uses_per_process_medians() -> None:
    per_process = [[1.0, 2.0, 3.0], [2.0, 2.0, 2.0, 9.0, 2.0], [1.0, 1.0, 1.0, 1.0]]
    n = d.noise_from_samples(per_process, d.ProbeSettings(processes=3, threads=2), measured_at="T")
    assert n.medians_ms == (2.0, 2.0, 1.0)
    assert n.calls == 4 and n.threads == 2 and n.measured_at == "T" and n.probe == d.PROBE_NAME
    assert n.within_cv == pytest.approx(d.cv([1.0, 2.0, 3.0]))  # the median of 0.5, 0.83 and 0
    assert n.within_robust_cv == 0.0  # the median of 0.74, 0 and 0


def test_process_effect() -> None:
    # between 0.1 vs what 400 calls of CV 0.2 explain: 1.2533 * 0.2 / 20 = 0.012533 -> ratio 7.98.
    n = replace(d.noise_figure([1.0, 1.0]), between_cv=0.1, within_cv=0.2, calls=400)
    assert d.process_effect(n) == pytest.approx(0.1 / (math.sqrt(math.pi / 2) * 0.2 / 20))
    assert d.process_effect(replace(n, within_cv=None)) is None
    # The robust CV, when known, is the one used: 0.1 / (1.2533 * 0.05 / 20) = 31.9.
    robust = replace(n, within_robust_cv=0.05)
    assert d.process_effect(robust) == pytest.approx(0.1 / (math.sqrt(math.pi / 2) * 0.05 / 20))


# ----------------------------------------------------------------------------------------------------- the probe


def test_run_probe_runs_k_processes_in_order() -> None:
    seen: list[int] = []
    out = d.run_probe(d.ProbeSettings(processes=4), on_process=lambda i, s: seen.append(i),
                      run_one=lambda s: [0.5, 0.6])
    assert len(out) == 4 and seen == [0, 1, 2, 3]


def test_probe_env_sets_every_thread_knob() -> None:
    env = d.probe_env(3, base={"PATH": "/bin", "OMP_NUM_THREADS": "8"})
    assert env["PATH"] == "/bin"
    assert all(env[k] == "3" for k in d.THREAD_ENV_VARS)


def test_probe_process_ignores_a_numpy_py_in_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As for measuring workers: a user's numpy.py where archbench runs must not shadow numpy in the probe.
    (tmp_path / "numpy.py").write_text("raise ImportError('shadowed numpy imported')\n")
    monkeypatch.chdir(tmp_path)
    samples = d.run_probe_process(d.ProbeSettings(warmup_s=0.0, measure_s=0.0))
    assert len(samples) >= 20 and all(s > 0 for s in samples)


# ----------------------------------------------------------------------------------------------------- OS readers


def tree(root: Path, files: dict[str, str]) -> Path:
    """A fake filesystem root: {relative path: content}."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Fake 1234
flags\t\t: fpu vme sse2 hypervisor avx2

processor\t: 1
model name\t: Intel(R) Xeon(R) Fake 1234
flags\t\t: fpu vme sse2 hypervisor avx2
"""

FULL_TREE = {
    "proc/cpuinfo": CPUINFO,
    "proc/loadavg": "1.90 0.85 0.40 3/120 4567\n",
    "proc/stat": "cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\nintr 1 2 3\n",
    "proc/meminfo": "MemTotal:        8388608 kB\nMemFree:  100 kB\nMemAvailable:    4194304 kB\n"
                    "SwapTotal:       1048576 kB\nSwapFree:         524288 kB\nHugePages_Total:       0\n",
    "proc/pressure/memory": "some avg10=1.50 avg60=0.20 avg300=0.00 total=123\n"
                            "full avg10=0.50 avg60=0.00 avg300=0.00 total=45\n",
    "proc/pressure/cpu": "some avg10=0.25 avg60=0.10 avg300=0.00 total=99\n",
    "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "powersave\n",
    "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": "powersave\n",
    "sys/devices/system/cpu/cpu0/cpufreq/scaling_driver": "intel_pstate\n",
    "sys/devices/system/cpu/intel_pstate/no_turbo": "0\n",
    "sys/devices/system/cpu/smt/active": "1\n",
}


def test_readers_on_a_full_tree(tmp_path: Path) -> None:
    root = tree(tmp_path, FULL_TREE)
    assert d.read_cpuinfo(root) == d.CpuInfo("Intel(R) Xeon(R) Fake 1234", 2, True)
    assert d.read_governors(root) == {"cpu0": "powersave", "cpu1": "powersave"}
    assert d.read_cpufreq_driver(root) == "intel_pstate"
    assert d.read_turbo(root) == (True, "/sys/devices/system/cpu/intel_pstate/no_turbo")
    assert d.read_smt(root) is True
    assert d.read_loadavg(root) == (1.90, 0.85, 0.40)
    assert d.read_cpu_times(root) == d.CpuTimes(100, 0, 50, 800, 10, 0, 0, 40)
    mem = d.read_meminfo(root)
    assert mem["MemTotal"] == 8192.0 and mem["MemAvailable"] == 4096.0 and mem["HugePages_Total"] == 0.0
    assert d.read_pressure(root, "memory") == {"some_avg10": 1.5, "some_avg60": 0.2, "some_avg300": 0.0,
                                               "full_avg10": 0.5, "full_avg60": 0.0, "full_avg300": 0.0}


def test_readers_on_an_empty_tree_fall_back(tmp_path: Path) -> None:
    assert d.read_cpuinfo(tmp_path) == d.CpuInfo("", 0, None)
    assert d.read_governors(tmp_path) == {}
    assert d.read_cpufreq_driver(tmp_path) is None
    assert d.read_turbo(tmp_path) == (None, "")
    assert d.read_smt(tmp_path) is None
    assert d.read_loadavg(tmp_path) is None
    assert d.read_cpu_times(tmp_path) is None
    assert d.read_meminfo(tmp_path) == {}
    assert d.read_pressure(tmp_path) == {}


@pytest.mark.parametrize("files,expected", [
    ({"sys/devices/system/cpu/intel_pstate/no_turbo": "1"}, False),
    ({"sys/devices/system/cpu/intel_pstate/no_turbo": "0"}, True),
    ({"sys/devices/system/cpu/cpufreq/boost": "1"}, True),
    ({"sys/devices/system/cpu/cpufreq/boost": "0"}, False),
    ({"sys/devices/system/cpu/cpufreq/boost": "garbage"}, None),
])
def test_read_turbo(tmp_path: Path, files: dict[str, str], expected: bool | None) -> None:
    assert d.read_turbo(tree(tmp_path, files))[0] is expected


@pytest.mark.parametrize("text,expected", [("1", True), ("0", False), ("forceoff", None)])
def test_read_smt(tmp_path: Path, text: str, expected: bool | None) -> None:
    assert d.read_smt(tree(tmp_path, {"sys/devices/system/cpu/smt/active": text})) is expected


def test_governors_sorted_numerically_and_mixed(tmp_path: Path) -> None:
    gov = "sys/devices/system/cpu/cpu{}/cpufreq/scaling_governor"
    root = tree(tmp_path, {gov.format(10): "performance", gov.format(2): "powersave", gov.format(0): "performance"})
    assert list(d.read_governors(root)) == ["cpu0", "cpu2", "cpu10"]
    facts = d.SystemFacts("h", "m", 3, False, governors=d.read_governors(root))
    assert facts.governor == "mixed (performance, powersave)"


def test_cpuinfo_without_flags_does_not_guess_vm(tmp_path: Path) -> None:
    root = tree(tmp_path, {"proc/cpuinfo": "processor : 0\nmodel name : ARM thing\n"})
    assert d.read_cpuinfo(root) == d.CpuInfo("ARM thing", 1, None)


def test_loadavg_garbage_is_none(tmp_path: Path) -> None:
    assert d.read_loadavg(tree(tmp_path, {"proc/loadavg": "not numbers"})) is None


def test_cpu_usage_known_shares() -> None:
    before = d.CpuTimes(100, 0, 50, 800, 10, 0, 0, 40)
    # +1000 ticks: user +100, system +50, irq +10, steal +80, iowait +20, idle +740.
    after = d.CpuTimes(200, 0, 100, 1540, 30, 10, 0, 120)
    u = d.cpu_usage(before, after, seconds=5.0)
    assert u == d.CpuUsage(busy_pct=16.0, steal_pct=8.0, iowait_pct=2.0, seconds=5.0)
    assert d.cpu_usage(before, before) is None


def test_proc_stat_of_an_old_kernel_has_no_steal() -> None:
    assert d.parse_cpu_times("cpu  1 2 3 4 5 6 7\n") == d.CpuTimes(1, 2, 3, 4, 5, 6, 7, 0)
    assert d.parse_cpu_times("intr 1 2\n") is None


NVIDIA_SMI = """0, NVIDIA H100 80GB HBM3, P0, 1980, 1980, 2619, 2619, Enabled, 35, 0, 70.12
1, NVIDIA H100 80GB HBM3, P8, 345, 1980, 405, 2619, Disabled, [N/A], 97, [Not Supported]
this line is garbage
"""


def test_parse_nvidia_smi() -> None:
    a, b = d.parse_nvidia_smi(NVIDIA_SMI)
    assert a == d.GpuFacts(0, "NVIDIA H100 80GB HBM3", "P0", 1980, 1980, 2619, 2619, True, 35, 0, 70.12)
    assert (b.index, b.pstate, b.sm_mhz, b.persistence, b.temperature_c, b.utilization_pct, b.power_w) == \
        (1, "P8", 345, False, None, 97, None)


def test_read_gpus_with_a_fake_nvidia_smi() -> None:
    calls: list[list[str]] = []

    def runner(cmd: list[str]) -> str:
        calls.append(cmd)
        return NVIDIA_SMI

    gpus, note = d.read_gpus(runner)
    assert len(gpus) == 2 and note == ""
    assert calls[0][0] == "nvidia-smi" and "clocks.max.sm" in calls[0][1] and calls[0][2].endswith("nounits")

    def failing(cmd: list[str]) -> str:
        raise subprocess.CalledProcessError(9, cmd)

    gpus, note = d.read_gpus(failing)
    assert gpus == [] and note.startswith("nvidia-smi failed")
    assert d.read_gpus(lambda cmd: "") == ([], "nvidia-smi listed no GPU")


def test_static_facts_on_fake_trees(tmp_path: Path) -> None:
    full = d.read_static_facts(tree(tmp_path / "full", FULL_TREE), gpu_runner=lambda cmd: NVIDIA_SMI,
                               idle_usage=d.CpuUsage(1.0, 0.0, 0.0, 1.0))
    assert (full.cpu_model, full.cpu_count, full.in_vm, full.governor, full.turbo, full.smt_active) == \
        ("Intel(R) Xeon(R) Fake 1234", 2, True, "powersave", True, True)
    assert full.load_avg == (1.90, 0.85, 0.40)
    assert (full.mem_total_mib, full.mem_available_mib, full.swap_used_mib) == (8192.0, 4096.0, 512.0)
    assert full.memory_pressure["some_avg10"] == 1.5 and full.cpu_pressure["some_avg10"] == 0.25
    assert len(full.gpus) == 2 and full.unreadable == ()

    (tmp_path / "empty").mkdir()
    empty = d.read_static_facts(tmp_path / "empty", gpu_runner=lambda cmd: "")
    assert (empty.cpu_model, empty.cpu_count, empty.governor, empty.turbo, empty.load_avg) == ("", 0, None, None, None)
    joined = " | ".join(empty.unreadable)
    for what in ("frequency governor", "turbo", "SMT", "load average", "CPU usage and steal", "available memory",
                 "memory pressure", "VM or not"):
        assert what in joined, f"{what!r} missing from unreadable: {joined}"
    assert empty.gpus == () and empty.gpu_note == "nvidia-smi listed no GPU"


# ----------------------------------------------------------------------------------------------------- advice

CLEAN = d.SystemFacts(
    hostname="h", cpu_model="m", cpu_count=2, in_vm=False, governors={"cpu0": "performance", "cpu1": "performance"},
    turbo=False, turbo_source="/sys/devices/system/cpu/intel_pstate/no_turbo", smt_active=False,
    load_avg=(0.1, 0.1, 0.1), idle_usage=d.CpuUsage(1.0, 0.0, 0.0, 1.0), probe_usage=d.CpuUsage(50.0, 0.0, 0.0, 4.0),
    mem_total_mib=8192.0, mem_available_mib=6000.0, memory_pressure={"some_avg10": 0.0},
    cpu_pressure={"some_avg10": 0.0},
)
QUIET = replace(d.noise_figure([0.25, 0.251, 0.249, 0.25]), within_cv=0.05, calls=1000)
NOISY = replace(QUIET, noise_pct=12.0)
GPU = d.GpuFacts(0, "H100", "P0", 1980, 1980, 2619, 2619, True, 40, 0, 70)


def texts(advice: list[d.Advice], level: str | None = None) -> str:
    return "\n".join(a.text for a in advice if level is None or a.level == level)


def test_a_clean_machine_gets_no_warning() -> None:
    advice = d.advise(CLEAN, QUIET, busy_pct=10.0)
    assert texts(advice, "warn") == "", texts(advice)
    assert [a.topic for a in advice] == ["noise"] and advice[0].level == "ok"


# (change to CLEAN, noise, level, text that must appear): one row per rule.
RULES = [
    ({"governors": {"cpu0": "powersave"}}, QUIET, "warn", "governor is powersave: "
                                                          "the frequency ramps"),
    ({"governors": {"cpu0": "powersave"}}, QUIET, "warn", "`sudo cpupower frequency-set -g performance`"),
    ({"turbo": True}, QUIET, "warn", "echo 1 | sudo tee /sys/devices/system/cpu/intel_pstate/no_turbo"),
    ({"turbo": True, "turbo_source": "/sys/devices/system/cpu/cpufreq/boost"}, QUIET, "warn",
     "echo 0 | sudo tee /sys/devices/system/cpu/cpufreq/boost"),
    ({"smt_active": True}, QUIET, "info", "SMT (hyper-threading) is on"),
    ({"load_avg": (1.9, 1.0, 0.5)}, QUIET, "warn", "load average 1.90 on 2 CPUs: other processes are running"),
    ({"idle_usage": d.CpuUsage(30.0, 0.0, 0.0, 1.0)}, QUIET, "warn", "other processes used 30% of the CPUs"),
    ({"probe_usage": d.CpuUsage(50.0, 8.0, 0.0, 4.0)}, QUIET, "warn",
     "steal time 8%: a hypervisor is running other guests on these vCPUs; compare only runs measured back to back"),
    ({"idle_usage": d.CpuUsage(1.0, 1.0, 0.0, 1.0)}, QUIET, "info", "steal time 1.0%"),
    ({"mem_available_mib": 400.0}, QUIET, "warn", "only 400 of 8,192 MiB available"),
    ({"memory_pressure": {"some_avg10": 5.0}}, QUIET, "warn", "memory pressure 5.0%"),
    ({"cpu_pressure": {"some_avg10": 3.0}}, QUIET, "warn", "CPU pressure 3.0%"),
    ({"gpus": (replace(GPU, persistence=False),)}, QUIET, "warn", "GPU 0 persistence mode is off"),
    ({"gpus": (replace(GPU, utilization_pct=60.0),)}, QUIET, "warn", "GPU 0 is 60% busy"),
    ({"gpus": (replace(GPU, temperature_c=88.0),)}, QUIET, "warn", "GPU 0 at 88 C"),
    ({"gpus": (replace(GPU, sm_mhz=345.0),)}, QUIET, "info", "`sudo nvidia-smi -lgc 1980,1980`"),
    ({}, NOISY, "warn", "run-to-run noise ±12%: differences smaller than ~12% between two single processes are "
                        "not distinguishable here"),
    ({}, NOISY, "warn", "~7% for two runs of 5"),  # 1.12 ** sqrt(2/5) = 1.0743
    ({"in_vm": True}, QUIET, "info", "running in a VM"),
    ({"in_vm": True}, NOISY, "info", "nothing visible from inside explains that noise"),
    ({"unreadable": ("turbo: no file",)}, QUIET, "info", "not readable here: turbo: no file"),
    # between 0.05 vs 1.2533 * 0.05 / sqrt(1000): 25x.
    ({}, replace(NOISY, between_cv=0.05, within_cv=0.05, calls=1000), "info", "process medians differ 25x more"),
]


@pytest.mark.parametrize("change,noise,level,text", RULES, ids=[f"{i}-{r[2]}" for i, r in enumerate(RULES)])
def test_advice_rules(change: dict, noise: d.NoiseFigure, level: str, text: str) -> None:
    advice = d.advise(replace(CLEAN, **change), noise, busy_pct=10.0)
    assert text in texts(advice, level), f"expected {level} {text!r} for {change}, got:\n{texts(advice)}"


def test_process_effect_is_silent_on_a_quiet_machine() -> None:
    quiet = replace(QUIET, between_cv=0.05, within_cv=0.05, calls=1000)  # 25x, but the noise is ±1.2%
    assert "process medians differ" not in texts(d.advise(CLEAN, quiet, busy_pct=10.0))


def test_vm_noise_explanation_only_when_nothing_else_explains_it() -> None:
    busy = replace(CLEAN, in_vm=True, load_avg=(1.9, 1.0, 1.0))
    assert "nothing visible" not in texts(d.advise(busy, NOISY, busy_pct=10.0))


def test_warnings_come_first() -> None:
    advice = d.advise(replace(CLEAN, smt_active=True, in_vm=True, turbo=True), NOISY, busy_pct=10.0)
    levels = [a.level for a in advice]
    assert levels == sorted(levels, key=["warn", "info", "ok"].index), levels


def test_default_busy_threshold_is_the_harness_one() -> None:
    from archbench.bench.analyze.stats import BUSY_PCT

    just_over = replace(CLEAN, idle_usage=d.CpuUsage(BUSY_PCT + 1, 0.0, 0.0, 1.0))
    assert "other processes used" in texts(d.advise(just_over, QUIET), "warn")


# ----------------------------------------------------------------------------------------------------- the cache

ME = {"hostname": "bench-box", "cpu_model": "Fake CPU", "cpu_count": 2}


def test_cache_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "doctor.json"
    noise = replace(NOISY, probe=d.PROBE_NAME, threads=1, measured_at="2026-01-01T00:00:00Z")
    assert d.save_noise(noise, path, identity=ME, now=1000.0) == path
    assert d.load_noise(3600, path, identity=ME, now=1000.0 + 3599) == noise
    assert [p.name for p in path.parent.iterdir()] == ["doctor.json"], "temp file left behind"


def test_cache_round_trip_with_this_machine(tmp_path: Path) -> None:
    path = d.save_noise(QUIET, tmp_path / "doctor.json")
    assert d.load_noise(path=path) == QUIET


@pytest.mark.parametrize("why,identity,now", [
    ("stale", ME, 1000.0 + 3601),
    ("from the future", ME, 1000.0 - 3600),
    ("other host", {**ME, "hostname": "other-box"}, 1001.0),
    ("other CPU", {**ME, "cpu_model": "Other CPU"}, 1001.0),
    ("other CPU count", {**ME, "cpu_count": 64}, 1001.0),
])
def test_cache_rejects(tmp_path: Path, why: str, identity: dict, now: float) -> None:
    path = d.save_noise(QUIET, tmp_path / "doctor.json", identity=ME, now=1000.0)
    assert d.load_noise(3600, path, identity=identity, now=now) is None, why


@pytest.mark.parametrize("content", [
    "{not json",
    "[]",
    json.dumps({"schema": 999, **ME, "saved_unix": 1000.0, "noise": {}}),
    json.dumps({"schema": d.CACHE_SCHEMA, **ME, "saved_unix": "yesterday", "noise": {}}),
    json.dumps({"schema": d.CACHE_SCHEMA, **ME, "saved_unix": 1000.0, "noise": {"noise_pct": 3.0}}),
    json.dumps({"schema": d.CACHE_SCHEMA, **ME, "saved_unix": 1000.0, "noise": "3%"}),
])
def test_cache_rejects_corrupt_files(tmp_path: Path, content: str) -> None:
    path = tmp_path / "doctor.json"
    path.write_text(content)
    assert d.load_noise(3600, path, identity=ME, now=1001.0) is None


def test_cache_rejects_tampered_fields(tmp_path: Path) -> None:
    path = d.save_noise(QUIET, tmp_path / "doctor.json", identity=ME, now=1000.0)
    doc = json.loads(path.read_text())
    for bad in ({"noise_pct": -1.0}, {"noise_pct": "x"}, {"unknown_field": 1}):
        path.write_text(json.dumps({**doc, "noise": {**doc["noise"], **bad}}))
        assert d.load_noise(3600, path, identity=ME, now=1001.0) is None, bad


def test_cache_missing_file_is_none(tmp_path: Path) -> None:
    assert d.load_noise(path=tmp_path / "nope.json") is None


def test_cache_write_failure_raises_oserror(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        d.save_noise(QUIET, tmp_path / "file" / "doctor.json", identity=ME)


@pytest.mark.parametrize("env,expected", [
    ({"XDG_CACHE_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/archbench/doctor.json"),
    ({"XDG_CACHE_HOME": "relative/dir", "HOME": "/home/u"}, "/home/u/.cache/archbench/doctor.json"),
    ({"XDG_CACHE_HOME": "", "HOME": "/home/u"}, "/home/u/.cache/archbench/doctor.json"),
    ({"HOME": "/home/u"}, "/home/u/.cache/archbench/doctor.json"),
])
def test_cache_path(env: dict[str, str], expected: str) -> None:
    assert d.cache_path(env) == Path(expected)


# ----------------------------------------------------------------------------------------------------- the CLI


def test_render_formats_a_diagnosis() -> None:
    from archbench.bench.cli.doctor import render

    facts = replace(CLEAN, gpus=(replace(GPU, persistence=False),), in_vm=True)
    noise = replace(NOISY, probe=d.PROBE_NAME, threads=1, measured_at="2026-01-01T00:00:00Z")
    diag = d.Diagnosis(facts, noise, tuple(d.advise(facts, noise, busy_pct=10.0)), d.ProbeSettings(), 5.0)
    out = render(diag)
    for line in ("frequency  governor performance; turbo off", "gpu 0", "SMT off", "run-to-run noise        ±12.0%",
                 "  !  GPU 0 persistence mode is off", "  -  running in a VM"):
        assert line in out, f"{line!r} not in:\n{out}"
    json.dumps(diag.to_json())  # serializable as --json writes it


@pytest.mark.parametrize("argv,message", [
    (["--processes", "1"], "--processes must be at least 3"),
    (["--processes", "2"], "--processes must be at least 3"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--json", "/no/such/folder/x.json"], "--json: no such folder"),
])
def test_bad_flags_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from archbench.bench.cli.main import main

    assert main(["doctor", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archbench: error: ") and message in err and "\n" not in err, err


def test_doctor_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "archbench.bench.cli.main", "doctor", "--quick", "--processes", "3",
                           "--json", str(tmp_path / "doctor.json")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for key in ("machine ", "frequency ", "load ", "steal ", "memory ", "noise probe: matmul 256x256 float32, "
                "3 processes", "between-process CV", "within-process CV", "run-to-run noise", "advice",
                "noise figure cached in"):
        assert key in proc.stdout, f"{key!r} not in:\n{proc.stdout}"
    doc = json.loads((tmp_path / "doctor.json").read_text())
    assert set(doc) >= {"facts", "noise", "advice", "settings"} and doc["noise"]["processes"] == 3
    cached = d.load_noise(path=tmp_path / "cache" / "archbench" / "doctor.json")
    assert cached is not None and cached.processes == 3 and len(cached.medians_ms) == 3
