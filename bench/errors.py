"""The one exception type the CLI turns into a one-line message and exit code 2, and the text helpers that keep
every message one clean line."""

from __future__ import annotations

import re

# Every exit code of the archbench command, in one place (the CLI's epilog and docs/reference/exit-codes.md read it).
EXIT_CODES: dict[str, str] = {
    "0": "everything ran; no budget FAIL, no gated regression",
    "1": "a check failed: a cell failed, a budget FAIL or ERROR (INCONCLUSIVE too with --strict), a gated regression",
    "2": "bad input: one `archbench: error:` line naming the value and what is allowed (--debug: the traceback); "
         "also another run holding the same --out",
    "3": "the OS refused a read or write (a full disk, a read-only folder, an --out that is a file): one line naming "
         "the path and the reason",
    "4": "an internal error (a bug in archbench): one line; --debug shows the traceback",
    "130 / 143 / 129": "stopped by SIGINT (Ctrl-C) / SIGTERM / SIGHUP; finished records kept, --resume continues",
}
EXIT_OS_ERROR = 3
EXIT_INTERNAL = 4


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
