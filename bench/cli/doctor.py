"""``archbench doctor``: is this machine fit to measure? The measuring, the OS facts, the advice and the cache live
in archbench.bench.machine.doctor (see its docstring for the formulas and for how ``compare`` reads the cached
noise figure); this module parses arguments, calls ``examine`` and prints. ``render`` only formats the Diagnosis
(it computes nothing), so it can move to report/ unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from archbench.bench.machine.doctor import Diagnosis, SystemFacts

EPILOG = """examples:
  archbench doctor                      ~6 s: OS facts, 8 probe processes, advice; caches the noise figure
  archbench doctor --quick              ~3 s: 5 shorter probe processes
  archbench doctor --threads 2          probe with 2 BLAS threads (match what you will benchmark)
  archbench doctor --processes 20       a tighter noise figure, ~12 s
  archbench doctor --json doctor.json   also write facts, noise figures and advice as JSON

The probe is a 256x256 float32 numpy matmul timed in K separate processes run back to back. "run-to-run noise
±N%" is the half-width of a 95% prediction interval for another process's median: a change smaller than N%
between two single processes is not distinguishable on this machine (between two runs of R repetitions each,
`archbench compare` uses (1 + N%)^sqrt(2/R) - 1). The figure is cached in
$XDG_CACHE_HOME/archbench/doctor.json (default ~/.cache/archbench/doctor.json) for `archbench compare`.

exit codes: 0 ok (advice is not a failure), 1 a probe process failed, 2 bad input"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="5 shorter probe processes and a 0.5 s idle window (~3 s)")
    p.add_argument("--processes", type=int, default=None, metavar="K",
                   help="probe processes, at least 3 (default 8; 5 with --quick)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="OMP/OpenBLAS/MKL threads of each probe process (default 1)")
    p.add_argument("--json", metavar="FILE", help="write facts, noise figures and advice as JSON to FILE ('-': stdout)")
    p.add_argument("--no-save", action="store_true", help="do not write the noise figure to the cache")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from archbench.bench.errors import UsageError
    from archbench.bench.machine import doctor

    settings = doctor.QUICK_PROBE if args.quick else doctor.ProbeSettings()
    if args.processes is not None:
        # With K = 2 the 95% interval's t factor is 12.7: a figure too wide to act on.
        if args.processes < 3:
            raise UsageError(f"--processes must be at least 3, got {args.processes}")
        if args.processes > 200:
            raise UsageError(f"--processes must be at most 200, got {args.processes}")
        settings = replace(settings, processes=args.processes)
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    settings = replace(settings, threads=args.threads)
    json_out = args.json
    if json_out and json_out != "-" and not Path(json_out).parent.is_dir():
        raise UsageError(f"--json: no such folder: {Path(json_out).parent}")

    idle_s = 0.5 if args.quick else 1.0
    print(f"archbench doctor: watching the machine idle for {idle_s:g} s, then {settings.processes} probe processes "
          f"of ~{settings.measure_s:g} s ...", file=sys.stderr)
    try:
        diag = doctor.examine(settings, idle_window_s=idle_s)
    except doctor.ProbeError as e:
        print(f"archbench doctor: the probe failed: {e}", file=sys.stderr)
        return 1

    if json_out == "-":
        print(json.dumps(diag.to_json(), indent=1))
    else:
        print(render(diag))
    if json_out and json_out != "-":
        from archbench.bench.atomic import atomic_write

        atomic_write(json_out, json.dumps(diag.to_json(), indent=1) + "\n")
    if not args.no_save:
        try:
            path = doctor.save_noise(diag.noise)
        except OSError as e:
            print(f"archbench doctor: warning: could not cache the noise figure: {e}", file=sys.stderr)
        else:
            if json_out != "-":
                print(f"\nnoise figure cached in {_home(path)} (archbench compare reads it for "
                      f"{doctor.DEFAULT_MAX_AGE_S / 3600:g} h)")
    return 0


# ----------------------------------------------------------------------------------------------------- rendering


def _home(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _gib(mib: float | None) -> str:
    return "?" if mib is None else f"{mib / 1024:.1f} GiB"


def _yes_no(value: bool | None, yes: str, no: str, unknown: str = "not exposed") -> str:
    return unknown if value is None else (yes if value else no)


def _fact_lines(f: SystemFacts) -> list[tuple[str, str]]:
    vm = _yes_no(f.in_vm, "in a VM (hypervisor flag)", "bare metal (no hypervisor flag)", "VM: unknown")
    smt = _yes_no(f.smt_active, "SMT on", "SMT off", "SMT not exposed")
    rows = [("machine", f"{f.cpu_model or '?'}, {f.cpu_count} CPUs, {vm}, {smt}; host {f.hostname}")]
    gov = f.governor or "not exposed (no cpufreq)"
    driver = f" ({f.cpufreq_driver})" if f.cpufreq_driver else ""
    rows.append(("frequency", f"governor {gov}{driver}; turbo {_yes_no(f.turbo, 'on', 'off')}"))
    load = "load average not exposed"
    if f.load_avg is not None:
        load = f"load average {f.load_avg[0]:.2f} / {f.load_avg[1]:.2f} / {f.load_avg[2]:.2f} (1/5/15 min) " \
               f"on {f.cpu_count} CPUs"
    if f.idle_usage is not None:
        load += f"; others used {f.idle_usage.busy_pct:.1f}% of the CPUs over {f.idle_usage.seconds:.1f} s idle"
    rows.append(("load", load))
    steal = [f"{u.steal_pct:.1f}% {when}" for u, when in ((f.idle_usage, "while idle"),
                                                           (f.probe_usage, "during the probe")) if u is not None]
    rows.append(("steal", ", ".join(steal) or "not exposed"))
    mem = f"{_gib(f.mem_available_mib)} available of {_gib(f.mem_total_mib)}"
    if f.swap_used_mib:
        mem += f", {_gib(f.swap_used_mib)} swap used"
    psi = [f"{name} {d['some_avg10']:.2f}%" for name, d in (("memory", f.memory_pressure), ("cpu", f.cpu_pressure))
           if "some_avg10" in d]
    mem += f"; pressure (some, last 10 s): {', '.join(psi)}" if psi else "; pressure not exposed"
    rows.append(("memory", mem))
    if f.gpus:
        for g in f.gpus:
            pm = _yes_no(g.persistence, "persistence on", "persistence off", "persistence ?")
            sm = "?" if g.sm_mhz is None else f"{g.sm_mhz:.0f}"
            sm_max = "?" if g.sm_max_mhz is None else f"{g.sm_max_mhz:.0f}"
            extra = "".join([f", {g.temperature_c:.0f} C" if g.temperature_c is not None else "",
                             f", {g.utilization_pct:.0f}% busy" if g.utilization_pct is not None else ""])
            rows.append((f"gpu {g.index}", f"{g.name}, {g.pstate}, SM {sm} / {sm_max} MHz, {pm}{extra}"))
    else:
        rows.append(("gpu", f"none ({f.gpu_note})" if f.gpu_note else "none"))
    return rows


def render(d: Diagnosis) -> str:
    """The doctor's report as text lines: facts, noise figures, advice."""
    n = d.noise
    lines = [f"archbench doctor: is this machine fit to measure?  ({n.measured_at}, {d.seconds:.1f} s)", ""]
    rows = _fact_lines(d.facts)
    width = max(len(k) for k, _ in rows) + 2
    lines += [f"{k:<{width}}{v}" for k, v in rows]
    s = d.settings
    lines += ["", f"noise probe: {n.probe}, {n.processes} processes x ~{s.measure_s:g} s "
                  f"(median {n.calls} calls each), {n.threads} thread{'s' if n.threads != 1 else ''}"]
    label_w = 24
    medians = " ".join(f"{m:.3f}" for m in n.medians_ms)
    within = "-" if n.within_cv is None else f"{n.within_cv:.1%}"
    if n.within_robust_cv is not None:
        within += f" (robust {n.within_robust_cv:.1%}: 1.4826 MAD / median)"
    within += ", median over processes"
    lines += [
        f"  {'process medians ms':<{label_w}}{medians}",
        f"  {'between-process CV':<{label_w}}{n.between_cv:.1%}",
        f"  {'within-process CV':<{label_w}}{within}",
        f"  {'run-to-run noise':<{label_w}}±{n.noise_pct:.1f}%  (95% prediction interval for another process's "
        f"median: t({n.processes - 1}) {n.t_factor:.2f} x log-sd {n.log_sd:.4f} x sqrt(1 + 1/{n.processes}))",
        "",
        "advice",
    ]
    marks = {"warn": "!", "info": "-", "ok": "ok"}
    lines += [f"  {marks.get(a.level, '-'):<2} {a.text}" for a in d.advice]
    return "\n".join(lines)
