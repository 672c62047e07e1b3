"""The regression benchmarks run only when asked for, so the default ``pytest -q`` stays fast.

They are *collected* in every run and *skipped* (with the reason in the -ra summary) unless

- tests/benchmarks (or a file or test in it) is named on the command line: ``pytest tests/benchmarks ...``;
- ``--run-benchmarks`` is given; or
- a pytest-benchmark option that only makes sense with benchmarks is: --benchmark-save, --benchmark-autosave,
  --benchmark-compare, --benchmark-json, --benchmark-only, --benchmark-enable.

Skipping, not deselecting: a deselected suite run on its own would collect nothing and exit 5 without a word;
a skipped one says why. The baseline lives in results/benchmarks/ (tests/conftest.py makes it the storage).
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TRIGGERS = ("benchmark_save", "benchmark_autosave", "benchmark_compare", "benchmark_json", "benchmark_only",
            "benchmark_enable")
SKIP_REASON = ("regression benchmarks (minutes): run `pytest tests/benchmarks` or pass --run-benchmarks "
               "(see results/benchmarks/README.md)")


def _inside(path: Path) -> bool:
    return path == HERE or HERE in path.parents


def suite_requested(config: pytest.Config) -> bool:
    """Did this invocation ask for the regression benchmarks (module docstring)?"""
    if config.getoption("run_benchmarks", False):
        return True
    if any(config.getoption(opt, None) for opt in TRIGGERS):
        return True
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False  # testpaths or the current folder: the default run
    start = Path(config.invocation_params.dir)
    return any(_inside((start / arg.split("::", 1)[0]).resolve()) for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if suite_requested(config):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if _inside(Path(item.path).resolve()):
            item.add_marker(skip)
