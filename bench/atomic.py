"""Files written whole or not at all: a temp file in the same folder, flushed to disk, then renamed over the target.

    atomic_write(path, text)                 # str -> UTF-8, or bytes
    with atomic_path(path) as tmp:           # for writers that want a path (matplotlib's savefig)
        fig.savefig(tmp)

A reader (or a kill, or a full disk) never sees half a report: the old file stays until the new one is complete.
A failure removes the temp file and raises the OSError, which the CLI reports as one line naming the path (exit 3).
Torch-free and import-light.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path next to ``path`` (same suffix, so writers that infer a format from it still do) that becomes
    ``path`` when the block ends without an exception."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent or ".")
    except OSError as e:
        raise _naming(e, path) from None
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:  # the bytes reach the disk before the name points at them
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _naming(e, path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _naming(e: OSError, path: Path) -> OSError:
    """The OS error about ``path`` (the file the user asked for), not about a temp file or no file at all."""
    return OSError(e.errno, e.strerror or str(e), str(path))


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
