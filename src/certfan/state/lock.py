"""One certfan run at a time per state directory: ``flock`` on ``<state>/lock``.

Every command that changes the store, the deploy state or a host takes it
(renew, reissue, issue, import, push, rollback, prune); ``status`` only reads
and does not. The lock is never waited for: a second run fails at once with
:class:`LockError` (exit 75, EX_TEMPFAIL) naming the file and the holder, so
a cron job that overlaps a long rollout says so instead of queueing up.

The file is never removed: unlinking a lock file races with the next run's
``open`` (two runs could then hold locks on two different inodes). Its
content -- pid, command, start time -- is only for the message; the kernel
releases the ``flock`` when the holder exits, however it exits.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from certfan.errors import LockError
from certfan.state import fsutil

log = logging.getLogger(__name__)

LOCK_FILE = "lock"


def lock_path(state_dir: Path) -> Path:
    return Path(state_dir) / LOCK_FILE


@contextmanager
def hold(state_dir: Path, command: str) -> Iterator[Path]:
    """Hold the run lock for the block; raise LockError at once if another run has it."""
    path = lock_path(state_dir)
    try:
        fsutil.ensure_dir(Path(state_dir))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LockError(f"{path}: cannot open the lock file: {exc.strerror or exc}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockError(f"{path}: another certfan run holds the lock ({_holder(fd)}); "
                            "not starting") from None
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid={os.getpid()} command={command} since={stamp}\n".encode(), 0)
        log.debug("holding %s for %s", path, command)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if "pid" not in fields:
        return "holder unknown: it is just starting or stopping"
    what = f"pid {fields['pid']}"
    if "command" in fields:
        what += f", certfan {fields['command']}"
    if "since" in fields:
        what += f", since {fields['since']}"
    return what
