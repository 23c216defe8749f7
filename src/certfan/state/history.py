"""When renew and rollouts last succeeded, for monitoring: ``<state>/history.json``.

    {"renew": {"last_run": "...", "last_success": "...", "last_result": "ok"},
     "rollout": {"media": {"last_success": "...", "version": "0002-..."}}}

Written only by runs that hold the run lock (one writer at a time), read by
``status`` (which does not lock: the file is replaced atomically). A missing
or unreadable file is an empty history, never an error: monitoring must keep
working when it is lost, and then says "never".
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from certfan.state import fsutil

log = logging.getLogger(__name__)

HISTORY_FILE = "history.json"


@dataclass(frozen=True)
class History:
    renew_last_run: datetime | None = None
    renew_last_success: datetime | None = None
    renew_last_result: str | None = None
    rollout_last_success: dict[str, datetime] = field(default_factory=dict)  # per certificate


def load(state_dir: Path) -> History:
    doc = _read(Path(state_dir) / HISTORY_FILE)
    renew = doc.get("renew") or {}
    rollouts = doc.get("rollout") or {}
    return History(
        renew_last_run=_time(renew.get("last_run")),
        renew_last_success=_time(renew.get("last_success")),
        renew_last_result=renew.get("last_result"),
        rollout_last_success={
            str(cert): when
            for cert, entry in rollouts.items()
            if isinstance(entry, dict) and (when := _time(entry.get("last_success")))
        },
    )


def record_renew(state_dir: Path, result: str, *, ok: bool, now: datetime | None = None) -> None:
    """One renew run ended: ``result`` is a word for humans ("ok", "failed", ...)."""
    stamp = (now or datetime.now(UTC)).isoformat()

    def change(doc: dict[str, Any]) -> None:
        renew = doc.setdefault("renew", {})
        renew.update(last_run=stamp, last_result=result)
        if ok:
            renew["last_success"] = stamp

    _update(Path(state_dir), change)


def record_rollouts(
    state_dir: Path, succeeded: Iterable[tuple[str, str]], now: datetime | None = None
) -> None:
    """Rollouts that left every targeted host serving the version: (cert, version) pairs."""
    done = list(succeeded)
    if not done:
        return
    stamp = (now or datetime.now(UTC)).isoformat()

    def change(doc: dict[str, Any]) -> None:
        rollouts = doc.setdefault("rollout", {})
        for cert, version in done:
            rollouts[cert] = {"last_success": stamp, "version": version}

    _update(Path(state_dir), change)


def _update(state_dir: Path, change: Any) -> None:
    path = state_dir / HISTORY_FILE
    doc = _read(path)
    change(doc)
    try:
        fsutil.ensure_dir(state_dir)
        fsutil.atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n")
    except OSError as exc:  # the run itself stands; monitoring will show it as stale
        log.error("%s: cannot record run history: %s", path, exc)


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s: ignoring unreadable run history: %s", path, exc)
        return {}
    return doc if isinstance(doc, dict) else {}


def _time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo else None
