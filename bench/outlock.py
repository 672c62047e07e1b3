"""One writer per output folder: a run holds ``OUT/.archbench.lock`` from its first write to its last.

    with hold(out, "archbench run"):      # a second run into the same --out raises FolderBusy (one line, exit 2)
        ...

The lock is an exclusive ``flock`` on the file, so the kernel drops it when its holder dies, however it dies
(``kill -9``, a crash, the OOM killer): a stale lock from a killed run is taken over by the next run with nothing to
clean up. The file's contents (pid, host, command, start time) only serve the message of the run that is refused;
the lock itself is the flock. Readers (``report``, ``compare``, ``check``, ``pick``) take no lock: records are
appended whole, one line each (archbench.bench.record), so a reader sees every finished record and nothing half
written. On a Ray cluster the driver holds the lock (nodes write only their own scratch folders). A file system
without flock support (some network mounts) cannot hold one: the run says so in a warning and goes on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from archbench.bench.errors import UsageError

LOCK_NAME = ".archbench.lock"


class FolderBusy(UsageError):
    """Another live archbench process holds the output folder."""


def _holder(path: Path) -> str:
    """Who holds the lock, from what it wrote there: 'pid 123 on host h (archbench run, started ...)'."""
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another archbench process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info['pid']} on host {info.get('host', '?')} ({info.get('command', 'archbench')}, started {started})"


@contextlib.contextmanager
def hold(out: Path, command: str = "archbench run") -> Iterator[str]:
    """Hold ``out``'s lock for the block; yields "" or a warning when the file system cannot lock.

    FolderBusy (one line naming the holder) when another live process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    warning = ""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderBusy(f"{out} is being written by {_holder(path)}: wait for it to finish, or choose "
                                 "another --out") from None
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            warning = f"{out}: this file system cannot lock ({e.strerror}); make sure no other run writes here"
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield warning
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # releases the flock
