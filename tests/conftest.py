"""Wire the regression benchmarks (tests/benchmarks/, see its conftest) to their committed baseline in
results/benchmarks/. Everything else imports the installed package as ``archbench.…``."""

import os
import sys
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)

# `python -m pytest` from the repository root puts the root first on sys.path, where this repository's kernels/,
# models/ and bench/ folders would shadow installed distributions of the same top-level names (transformers imports
# the `kernels` distribution). The folders are only ever imported as archbench.kernels, archbench.models and
# archbench.bench (the installed package), so the root leaves sys.path before any test module imports anything;
# tests/test_layout.py checks it.
sys.path[:] = [p for p in sys.path if p not in ("", ".", ROOT) and os.path.abspath(p) != ROOT]
# The same for every Python a test starts (`python -c ...` from the root would put it first again): PYTHONSAFEPATH
# (Python >= 3.11) keeps the current folder and the script's folder off sys.path in children. archbench's own
# entry points do not rely on it; tests/test_layout.py runs them without it from a folder with its own kernels/.
os.environ["PYTHONSAFEPATH"] = "1"
# The shared helpers (tests_helpers, userfactories, ...) live here, beside the folders that mirror the package.
sys.path.insert(0, str(Path(__file__).resolve().parent))

# pytest-benchmark's default storage is ./.benchmarks, relative to wherever pytest runs. This repository's baseline
# is committed in results/benchmarks/ (results/benchmarks/README.md), so that is the storage unless
# --benchmark-storage says otherwise: `pytest tests/benchmarks --benchmark-compare` finds it from any directory.
BENCHMARK_STORAGE = Path(ROOT) / "results" / "benchmarks"
_PYTEST_BENCHMARK_DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-benchmarks", action="store_true", default=False,
                     help="run the regression benchmarks in tests/benchmarks/ (skipped unless named on the command "
                          "line or a --benchmark-save/autosave/compare/json/only option asks for them)")


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's pytest_configure opens the storage
def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("benchmark_storage", None) == _PYTEST_BENCHMARK_DEFAULT_STORAGE:
        config.option.benchmark_storage = f"file://{BENCHMARK_STORAGE}"


@pytest.fixture(autouse=True)
def _no_machine_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never read or write the user's ~/.cache/archbench (archbench doctor's noise figure, which compare
    would otherwise pick up as its default noise floor)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
