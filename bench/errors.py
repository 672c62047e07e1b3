"""The one exception type the CLI turns into a one-line message and exit code 2, and the text helpers that keep
every message one clean line."""

from __future__ import annotations

import re


class UsageError(Exception):
    """Bad input from the user (unknown model, malformed shape, factory that raises...)."""


# What user code (a factory, a module import, a metric or calibration hook) may raise that archbench reports instead
# of obeying: a factory calling sys.exit() or raising KeyboardInterrupt must not end the run or the worker silently.
USER_CODE_ERRORS: tuple[type[BaseException], ...] = (Exception, SystemExit, KeyboardInterrupt)


_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean_text(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves) or other control characters: what a record
    or an error line stores is plain text, whatever a user's code printed into its exception."""
    return _CONTROL.sub("", _ANSI.sub("", str(text)))


def one_line_text(text: str, limit: int = 2000) -> str:
    """A multi-line message as one clean line: lines joined with ' | ' (nothing dropped up to ``limit`` chars)."""
    parts = [p.strip() for p in clean_text(text).strip().splitlines() if p.strip()]
    out = " | ".join(parts)
    return out if len(out) <= limit else out[: limit - 3] + "..."
