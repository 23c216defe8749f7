"""The pending-journal: TXT values published and not yet removed.

The one thing a ``finally`` cannot do: a run killed with SIGKILL (or a DNS
server down at cleanup time) leaves values behind, so each value is written
to ``<state>/dns-pending.json`` before it is added and struck off once it is
removed; the next run removes what a dead run left.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from certfan.errors import DnsError
from certfan.state import fsutil

PENDING_FILE = "dns-pending.json"


@dataclass(frozen=True)
class Published:
    """One TXT value certfan put into DNS (the key for removing it again)."""

    challenge: str  # _acme-challenge.<domain>
    target: str  # where the TXT lives after following CNAMEs
    zone: str | None  # the zone updated
    value: str


class PendingTxt:
    """TXT values published and not yet removed, in ``<state>/dns-pending.json``.

    An entry is written before its value is added (a timed-out add may still
    have landed) and dropped once the value is removed. Entries of another run
    are leftovers: the run lock (lock.py) lets only one run use a state
    directory, so another run's entries are those of a run that died (SIGKILL,
    power loss) or could not reach the server at cleanup time.
    """

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / PENDING_FILE
        self.run = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = threading.Lock()

    def add(self, item: Published) -> None:
        entry = {"run": self.run, "challenge": item.challenge, "target": item.target,
                 "zone": item.zone, "value": item.value}
        with self._lock:
            self._write([*self._read(), entry])

    def drop(self, item: Published) -> None:
        with self._lock:
            entries = self._read()
            kept = [e for e in entries if (e["target"], e["value"]) != (item.target, item.value)]
            if len(kept) != len(entries):
                self._write(kept)

    def leftovers(self) -> list[Published]:
        """Values another (dead) run published and never removed."""
        with self._lock:
            entries = self._read()
        return [Published(str(e["challenge"]), str(e["target"]), e["zone"], str(e["value"]))
                for e in entries if e.get("run") != self.run]

    def _read(self) -> list[dict[str, str | None]]:
        doc = fsutil.read_json(self.path, "pending TXT values", DnsError)
        if doc is None:
            return []
        if not isinstance(doc, list) or not all(
            isinstance(e, dict) and {"challenge", "target", "zone", "value"} <= e.keys()
            for e in doc
        ):
            raise DnsError(f"{self.path}: not a list of pending TXT values; remove the listed "
                           "values by hand, then the file")
        return doc

    def _write(self, entries: list[dict[str, str | None]]) -> None:
        try:
            fsutil.ensure_dir(self.path.parent)
            fsutil.atomic_write(self.path, json.dumps(entries, indent=2).encode() + b"\n",
                                fsutil.KEY_MODE)
        except OSError as exc:
            raise DnsError(f"{self.path}: cannot record pending TXT values: {exc}") from exc
