"""Checked argument types for the command line: every count, duration, fraction and seed is validated where it
enters, with a message that names the value and what is allowed (argparse prints it as one line, exit 2).

    p.add_argument("--timeout", type=seconds, ...)            # finite, > 0
    p.add_argument("--repetitions", type=count(1), ...)       # whole number >= 1
    p.add_argument("--min-time", type=seconds_or_zero, ...)   # finite, >= 0

Torch-free and import-light: ``archbench --help`` stays instant. The same checks serve the Python API and TOML
through ``check_count`` / ``check_seconds`` (they raise ValueError with the same wording).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn


def _number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"expected a finite number, got {text!r}")
    return v


def check_count(value: object, minimum: int = 1, what: str = "value", maximum: int | None = None) -> int:
    """A whole number in [minimum, maximum]; ``1e3`` and ``8.0`` are accepted as 1000 and 8, ``1.5`` and ``True``
    are not. Raises ValueError naming ``what``, the value and the allowed range."""
    bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    if isinstance(value, bool):
        raise ValueError(f"{what} {value!r}: expected a whole number {bound}")
    try:
        v = _number(str(value).strip()) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r}: expected a whole number {bound}") from None
    if not math.isfinite(v) or v != int(v) or v < minimum or (maximum is not None and v > maximum):
        raise ValueError(f"{what} {value!r}: expected a whole number {bound}")
    return int(v)


def check_seconds(value: object, what: str = "value", allow_zero: bool = False) -> float:
    """A finite duration in seconds, > 0 (or >= 0 with ``allow_zero``)."""
    bound = ">= 0" if allow_zero else "> 0"
    try:
        v = _number(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r}: expected a finite number of seconds {bound}") from None
    if isinstance(value, bool) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{what} {value!r}: expected a finite number of seconds {bound}")
    return v


def _argtype(fn: Callable[[str], object], name: str) -> Callable[[str], object]:
    def convert(text: str) -> object:
        try:
            return fn(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix("value ")) from None

    convert.__name__ = name  # argparse names the type in its messages
    return convert


def count(minimum: int = 1, maximum: int | None = 2**31 - 1) -> Callable[[str], object]:
    """argparse type: a whole number >= minimum and <= maximum (default 2**31 - 1: no count here is larger)."""
    return _argtype(lambda t: check_count(t, minimum, maximum=maximum), "count")


seconds = _argtype(lambda t: check_seconds(t), "seconds")
seconds_or_zero = _argtype(lambda t: check_seconds(t, allow_zero=True), "seconds")
seed = count(0, 2**32 - 1)


def check_positive(value: object, what: str = "value") -> float:
    """A finite number > 0 (a memory cap in MiB, a rate)."""
    try:
        v = _number(value) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {value!r}: expected a finite number > 0") from None
    if isinstance(value, bool) or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{what} {value!r}: expected a finite number > 0")
    return v


positive_number = _argtype(lambda t: check_positive(t), "number")


def _listed(check: Callable[[str], object]) -> Callable[[str], list[object]]:
    def parse(text: str) -> list[object]:
        items = [t.strip() for t in text.split(",")]
        if not all(items):
            raise ValueError(f"value {text!r}: expected a comma list, e.g. 1,2,4")
        return list(dict.fromkeys(check(t) for t in items))

    return parse


def count_list(minimum: int = 1) -> Callable[[str], object]:
    """argparse type: a comma list of whole numbers >= minimum (``1,2,4``), duplicates dropped."""
    return _argtype(_listed(lambda t: check_count(t, minimum, maximum=2**31 - 1)), "count list")


positive_list = _argtype(_listed(lambda t: check_positive(t)), "number list")  # finite numbers > 0
seconds_list = _argtype(_listed(lambda t: check_seconds(t, allow_zero=True)), "duration list")  # finite, >= 0


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, ``archbench run: error: ... (archbench run --help)``, exit 2,
    instead of the full usage block: the line that matters stays visible in CI logs."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)
