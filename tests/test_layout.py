"""The repository's folders never shadow installed packages, here or in a user's repository.

The folders bench/, kernels/ and models/ install as archbench.bench, archbench.kernels and archbench.models. Top-level
names such as ``kernels`` belong to other distributions (transformers imports the ``kernels`` distribution), so
neither this test suite nor archbench run from a folder holding such names may let those folders be found first.
"""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERIC = ("bench", "kernels", "models")


def _site_index() -> int:
    return min(i for i, p in enumerate(sys.path) if p.endswith("site-packages"))


def test_repository_root_never_precedes_installed_packages() -> None:
    """tests/conftest.py takes the root off sys.path (`python -m pytest` puts it first). archbench's CLI, called in
    this process with the root as the current folder, appends it after everything (measure.hooks.demote_cwd)."""
    assert "" not in sys.path
    at = [i for i, p in enumerate(sys.path) if os.path.abspath(p) == str(ROOT)]
    assert all(i > _site_index() for i in at), sys.path


@pytest.mark.parametrize("name", GENERIC)
def test_installed_packages_win_over_the_repository_folders(name: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever distribution provides a top-level `kernels`, `models` or `bench` is the one imported."""
    site = tmp_path / "site-packages"
    (site / name).mkdir(parents=True)
    (site / name / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", [*sys.path[:_site_index()], str(site), *sys.path[_site_index():]])
    importlib.invalidate_caches()
    spec = importlib.machinery.PathFinder.find_spec(name, sys.path)  # not sys.modules: what an import would find
    assert spec is not None and Path(spec.origin).parent == site / name, spec


def _user_repo(tmp_path: Path) -> Path:
    """A user's repository with its own top-level kernels/, models/ and bench/ packages that must never be imported
    by archbench or its dependencies (importing any of them fails loudly)."""
    repo = tmp_path / "userrepo"
    for name in GENERIC:
        (repo / name).mkdir(parents=True)
        (repo / name / "__init__.py").write_text(f"raise ImportError('the user repository\\'s own {name}/ was imported')\n")
    return repo


# A user's shell: no PYTHONSAFEPATH (conftest sets it for the suite's own children), no PYTHONPATH.
USER_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONSAFEPATH", "PYTHONPATH")}
CONSOLE = Path(sys.executable).with_name("archbench")
HF_KNOBS = ["--knob", "num_hidden_layers=1", "--knob", "hidden_size=32", "--knob", "num_attention_heads=2",
            "--knob", "intermediate_size=64", "--knob", "vocab_size=100", "--knob", "seq_len=8"]


@pytest.mark.parametrize("how", ["console script", "python -m"])
def test_user_repository_with_kernels_folder_runs_hf_models(tmp_path: Path, how: str) -> None:
    """From a folder with its own kernels/ (and models/, bench/), `archbench profile hf:bert` builds the model with
    transformers, which imports the installed `kernels` distribution where one is installed: the user's folder must
    not be found first, by either way of starting archbench."""
    pytest.importorskip("transformers")
    repo = _user_repo(tmp_path)
    if how == "console script":
        if not CONSOLE.exists():
            pytest.skip(f"no archbench console script beside {sys.executable}")
        cmd = [str(CONSOLE)]
    else:
        cmd = [sys.executable, "-m", "archbench.bench.cli.main"]
    proc = subprocess.run([*cmd, "profile", "hf:bert", *HF_KNOBS], cwd=repo, capture_output=True, text=True,
                          timeout=300, env=USER_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "MACs" in proc.stdout or "macs" in proc.stdout.lower(), proc.stdout


def test_user_factory_is_still_found_in_the_current_folder(tmp_path: Path) -> None:
    """Demoting the current folder on sys.path must not hide the user's own factory modules there."""
    repo = _user_repo(tmp_path)
    (repo / "mynets.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n")
    proc = subprocess.run([sys.executable, "-m", "archbench.bench.cli.main", "profile", "mynets:build",
                           "--input-shape", "1,4"], cwd=repo, capture_output=True, text=True, timeout=300, env=USER_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "10" in proc.stdout  # 4*2 weights + 2 biases


def test_demote_cwd_moves_the_current_folder_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archbench.bench.measure.hooks import demote_cwd

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), "/site", "/lib"])
    demote_cwd()
    assert sys.path == ["/site", "/lib", str(tmp_path)]
    demote_cwd()  # idempotent
    assert sys.path == ["/site", "/lib", str(tmp_path)]


@pytest.mark.slow
def test_user_repository_with_kernels_folder_measures_hf_models(tmp_path: Path) -> None:
    """The measuring worker too (started with the current folder off sys.path, measure.dispatch.BOOT)."""
    pytest.importorskip("transformers")
    if not CONSOLE.exists():
        pytest.skip(f"no archbench console script beside {sys.executable}")
    repo = _user_repo(tmp_path)
    proc = subprocess.run([str(CONSOLE), "run", "hf:bert", *HF_KNOBS, "--runtime", "torch", "--repetitions", "1",
                           "--threads", "1", "--min-time", "0.05", "--out", str(tmp_path / "out")], cwd=repo,
                          capture_output=True, text=True, timeout=300, env=USER_ENV)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-1500:]
    from archbench.bench.record import read_records

    (rec,) = read_records(tmp_path / "out" / "records.jsonl")
    assert rec.ok and rec.latency_p50_ms, rec.error
