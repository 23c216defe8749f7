"""Atomic local file operations shared by the store and the rest of certfan.

Every write goes to a temporary name in the same directory, is fsynced, then
renamed over the target; the directory is fsynced so the rename survives a
crash. Files holding key material are created with their final mode by
``os.open`` so they are never readable by others, not even for a moment.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from certfan.errors import CertfanError, StoreError

DIR_MODE = 0o700
KEY_MODE = 0o600
FILE_MODE = 0o644


def fsync_dir(path: Path) -> None:
    """Make a rename or create inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Create ``path`` (must not exist) with ``mode`` from the start, write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed it; never widened beyond mode
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically: temp name, fsync, rename, fsync dir."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        write_new(tmp, data, mode)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _rename_into_place(tmp, path)


def atomic_symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` in one rename (never rm-then-ln)."""
    link = Path(link)
    tmp = _tmp_name(link)
    os.symlink(target, tmp)
    _rename_into_place(tmp, link)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")


def _rename_into_place(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def read_json(path: Path, what: str, error: type[CertfanError] = StoreError) -> Any | None:
    """The parsed JSON document at ``path``, None when there is none; any other
    failure is ``error`` naming the file and ``what`` it holds."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from exc


def ensure_dir(path: Path, mode: int = DIR_MODE) -> Path:
    """Create ``path`` and any missing parents with ``mode``; tighten an existing leaf."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent run made it
            directory.mkdir(mode=mode)
        os.chmod(directory, mode)  # mkdir's mode is filtered by the umask
    if (path.stat().st_mode & 0o777) != mode:
        os.chmod(path, mode)
    return path
