"""constraints.txt pins everything pyproject.toml asks for, and the environment the tests run in was installed from it.

When pyproject.toml gains a requirement or raises a floor, these fail until `python3 .ci/lock.py` refreshes the lock.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.\-]*)==(\S+)")


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = PIN.fullmatch(line)
        assert m, f"constraints.txt:{n}: {line!r} is not NAME==VERSION"
        name = canonicalize_name(m.group(1))
        assert name not in out, f"constraints.txt:{n}: {name} pinned twice"
        out[name] = m.group(2)
    return out


def requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for the dependencies and every extra whose marker holds on this platform."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out = [("dependencies", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        out += [(f"[{extra}]", Requirement(r)) for r in reqs]
    return [(w, r) for w, r in out if canonicalize_name(r.name) != "archbench"
            and (r.marker is None or r.marker.evaluate({"extra": w.strip("[]")}))]


def test_the_lock_is_well_formed_and_pins_torch_cpu_release() -> None:
    p = pins()
    assert len(p) > 20 and "torch" in p
    assert "+" not in p["torch"], "no local label: torch==X matches the CPU build where it is offered"


@pytest.mark.parametrize("where, req", requirements(), ids=lambda x: str(x))
def test_every_requirement_is_pinned_at_a_version_it_accepts(where: str, req: Requirement) -> None:
    p = pins()
    name = canonicalize_name(req.name)
    assert name in p, f"pyproject.toml {where} asks for {req} but constraints.txt does not pin it: python3 .ci/lock.py"
    assert req.specifier.contains(p[name], prereleases=True), (
        f"pyproject.toml {where} asks for {req}; constraints.txt pins {name}=={p[name]}: python3 .ci/lock.py")


def test_installed_versions_are_the_locked_ones() -> None:
    """Whatever of the lock is installed here is at its pinned version (the public part: torch's +cpu aside)."""
    wrong = []
    for name, ver in pins().items():
        try:
            got = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if Version(got).public != Version(ver).public:
            wrong.append(f"{name} {got} (locked {ver})")
    assert not wrong, "installed without -c constraints.txt? " + ", ".join(wrong)


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in ln and not ln.startswith("#")]
    assert len(ci) == 1, ci
    readme = (ROOT / "README.md").read_text()
    assert ci[0].strip() in readme, f".ci/run's command is not the README's: {ci[0]}"
    assert "-c constraints.txt" in ci[0] and ".[dev]" in ci[0]
    for cmd in re.findall(r"^python3 -m venv \S+ && .*pip install.*$", readme, flags=re.MULTILINE):
        assert "-c constraints.txt" in cmd, f"a README set-up command installs without the lock: {cmd}"
