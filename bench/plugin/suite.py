"""The ``[tool.archbench]`` table of a pyproject.toml, read for ``pytest --archbench``: which cells to measure and
which budgets to judge them by (schema in archbench.bench.plugin.pytest_plugin's docstring). UsageError naming the
file, table and key of the first problem. No pytest here: archbench.bench.plugin.pytest_plugin turns a Suite into
test items.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archbench.bench.analyze.budgets import Budget, load_file, parse_profile
from archbench.bench.errors import UsageError

SUITE_KEYS = ("models", "runtimes", "precisions", "batch", "device", "threads", "timeout_s", "input_shape", "dtype",
              "budgets")


@dataclass(frozen=True)
class Cell:
    model: str
    runtime: str
    precision: str
    batch: int

    @property
    def id(self) -> str:
        return f"{self.model}-{self.runtime}-{self.precision}-b{self.batch}"


@dataclass(frozen=True)
class Suite:
    source: Path  # the pyproject.toml with [tool.archbench]
    budgets: tuple[Budget, ...]
    models: tuple[str, ...]
    runtimes: tuple[str, ...] = ("torch",)
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int, ...] = (1,)
    device: str = "cpu"
    threads: int = 0
    timeout_s: float = 300.0
    input_shape: tuple[int, ...] | None = None
    dtype: str | None = None

    def cells(self) -> list[Cell]:
        return [Cell(m, r, p, b) for m in self.models for r in self.runtimes for p in self.precisions
                for b in self.batches]


def _str_list(tool: dict[str, Any], key: str, where: str, default: tuple[str, ...] | None) -> tuple[str, ...]:
    if key not in tool:
        if default is None:
            raise UsageError(f"{where} has no {key!r} key: list what to measure, e.g. {key} = [\"mlp_s\"]")
        return default
    value = tool[key]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise UsageError(f"{where}: {key} = {value!r}; expected a non-empty list of strings")
    return tuple(v.strip() for v in value)


def _check_names(values: tuple[str, ...], known: Any, key: str, where: str) -> None:
    for v in values:
        if v not in known:
            near = difflib.get_close_matches(v, list(known), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise UsageError(f"{where}: unknown {key[:-1]} {v!r} in {key}{hint} (known: {', '.join(known)})")


def load_suite(pyproject: Path, budgets_file: Path | None = None) -> Suite:
    """[tool.archbench] of ``pyproject`` (budgets from ``budgets_file`` when given). UsageError naming the
    file, table and key of the first problem."""
    from archbench.bench.analyze.budgets import _load_toml

    if not pyproject.is_file():
        raise UsageError(f"{pyproject}: no such file; --archbench reads [tool.archbench] from the pyproject.toml in "
                         "pytest's rootdir (run pytest from your project, or pass --rootdir)")
    data = _load_toml(pyproject)
    tool = data.get("tool", {}).get("archbench") if isinstance(data.get("tool"), dict) else None
    where = f"{pyproject} [tool.archbench]"
    if not isinstance(tool, dict):
        raise UsageError(f"{where}: no such table; --archbench needs models = [...] and "
                         "[tool.archbench.budgets.NAME] tables there")
    for key in tool:
        if key not in SUITE_KEYS:
            near = difflib.get_close_matches(key, SUITE_KEYS, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(SUITE_KEYS)}"
            raise UsageError(f"{where}: unknown key {key!r}{hint}")
    models = _str_list(tool, "models", where, None)
    runtimes = _str_list(tool, "runtimes", where, ("torch",))
    precisions = _str_list(tool, "precisions", where, ("fp32",))
    from archbench.bench.measure.quantize import PRECISIONS
    from archbench.bench.measure.runtimes import RUNTIMES

    _check_names(runtimes, RUNTIMES, "runtimes", where)
    _check_names(precisions, PRECISIONS, "precisions", where)
    _check_models(models, where)
    batch = tool.get("batch", [1])
    batches = batch if isinstance(batch, list) else [batch]
    if not batches or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in batches):
        raise UsageError(f"{where}: batch = {batch!r}; expected a positive integer or a list of them, e.g. [1, 8]")
    device = tool.get("device", "cpu")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"{where}: device = {device!r}; expected \"cpu\" or \"cuda\"")
    threads = tool.get("threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise UsageError(f"{where}: threads = {threads!r}; expected an integer >= 0 (0: all CPUs)")
    timeout = tool.get("timeout_s", 300.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise UsageError(f"{where}: timeout_s = {timeout!r}; expected seconds > 0")
    shape = tool.get("input_shape")
    if shape is not None and (not isinstance(shape, list) or not shape
                              or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
        raise UsageError(f"{where}: input_shape = {shape!r}; expected positive integers, e.g. [1, 3, 160, 160]")
    dtype = tool.get("dtype")
    if dtype is not None:
        from archbench.bench.measure.sources import parse_dtype

        try:
            parse_dtype(str(dtype))
        except UsageError as e:
            raise UsageError(f"{where}: dtype = {dtype!r}: {e}") from None
    budgets = _load_budgets(tool, pyproject, budgets_file)
    return Suite(pyproject, budgets, models, runtimes, precisions, tuple(batches), device, threads, float(timeout),
                 tuple(shape) if shape else None, str(dtype) if dtype is not None else None)


def _check_models(models: tuple[str, ...], where: str) -> None:
    """Zoo names must exist (a typo is a collection error); import refs and .onnx files are checked when run."""
    from archbench.bench.measure.sources import is_import_ref, is_onnx_ref
    from archbench.models import get_entry

    for m in models:
        if is_import_ref(m) or is_onnx_ref(m):
            continue
        try:
            get_entry(m)
        except ValueError as e:
            raise UsageError(f"{where}: models: {e}") from None


def _load_budgets(tool: dict[str, Any], pyproject: Path, budgets_file: Path | None) -> tuple[Budget, ...]:
    if budgets_file is not None:
        from archbench.bench.analyze.budgets import _load_toml

        data = _load_toml(budgets_file)
        names = list(data.get("profiles") or {}) if isinstance(data.get("profiles"), dict) else []
        if not names:
            load_file(budgets_file)  # raises the budget file's own error (no profiles, unknown keys)
        return tuple(_named(f"{budgets_file} [profiles.{n}]", load_file, budgets_file, n) for n in names)
    table = tool.get("budgets")
    if not isinstance(table, dict) or not table:
        raise UsageError(f"{pyproject}: no [tool.archbench.budgets.NAME] table; add one, e.g. "
                         "[tool.archbench.budgets.edge] with p95_ms = \"<= 20\", or pass --archbench-budgets FILE.toml")
    section = "tool.archbench.budgets"
    return tuple(_named(f"{pyproject} [{section}.{name}]", parse_profile, name, t, str(pyproject), section=section)
                 for name, t in table.items())


def _named(where: str, parse: Any, *args: Any, **kwargs: Any) -> Budget:
    """``parse(*args)``, its UsageError prefixed with the profile's table when the message lacks it (an unknown
    metric names only itself)."""
    try:
        return parse(*args, **kwargs)
    except UsageError as e:
        raise UsageError(str(e) if where in str(e) else f"{where}: {e}") from None


def samples_to_bound(budgets: tuple[Budget, ...]) -> int:
    """Fewest samples for which every percentile term's confidence bounds exist (both sides): n with
    1 - max(q, 1-q)^n >= confidence (archbench.bench.analyze.orderstats; e.g. 59 for p95 at 95%, 299 for p99)."""
    n = 0
    for b in budgets:
        for t in b.terms:
            q = t.metric.quantile
            if q is not None:
                n = max(n, math.ceil(math.log(1 - b.confidence) / math.log(max(q, 1 - q))))
    return n
