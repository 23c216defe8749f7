"""Which version each host should serve and which it does, per certificate.

One JSON file per certificate, ``<state>/deploy/<cert>.json``::

    {"cert": "media",
     "hosts": {"sally": {"desired": "0002-1a2b3c4d5e6f", "deployed": "0001-...",
                         "last_error": null, "updated_at": "2025-01-01T00:00:00+00:00"}}}

``desired`` is set when a rollout starts, ``deployed`` when a host is proven to
serve a version (or proven back on its old one), ``last_error`` when it fails.
A later run reads it to bring hosts that missed a rollout up to date
(:func:`hosts_behind`). Every write replaces the file atomically; a
read-modify-write holds an in-process lock and an ``flock`` on the directory's
lock file, so concurrent host threads and runs never lose each other's updates.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certfan.errors import StoreError
from certfan.state import fsutil

if TYPE_CHECKING:
    from certfan.config import Config
    from certfan.state.store import Store


@dataclass(frozen=True)
class HostDeploy:
    desired: str | None = None
    deployed: str | None = None
    last_error: str | None = None
    updated_at: str | None = None


_UNSET: Any = object()


class DeployState:
    """Per host and certificate: desired and deployed version, last error."""

    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir) / "deploy"
        self._lock = threading.Lock()

    def path(self, cert: str) -> Path:
        return self.dir / f"{cert}.json"

    def get(self, cert: str) -> dict[str, HostDeploy]:
        """Every host recorded for ``cert`` (empty when nothing was ever deployed)."""
        return self._read(cert)

    def host(self, cert: str, host: str) -> HostDeploy:
        return self._read(cert).get(host, HostDeploy())

    def set_desired(self, cert: str, hosts: Iterable[str], version: str) -> None:
        with self._update(cert) as entries:
            for name in hosts:
                entries[name] = replace(entries.get(name, HostDeploy()), desired=version)

    def record(
        self, cert: str, host: str, *, deployed: str | None = _UNSET, error: str | None = None
    ) -> None:
        """After a host's run: what it now serves (when known) and the error, if any."""
        with self._update(cert) as entries:
            entry = replace(entries.get(host, HostDeploy()), last_error=error)
            if deployed is not _UNSET:
                entry = replace(entry, deployed=deployed)
            entries[host] = entry

    # ------------------------------------------------------------ file

    def _read(self, cert: str) -> dict[str, HostDeploy]:
        path = self.path(cert)
        doc = fsutil.read_json(path, "deploy state")
        if doc is None:
            return {}
        try:
            return {
                str(name): HostDeploy(
                    desired=raw.get("desired"),
                    deployed=raw.get("deployed"),
                    last_error=raw.get("last_error"),
                    updated_at=raw.get("updated_at"),
                )
                for name, raw in doc["hosts"].items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"{path}: invalid deploy state: {exc!r}") from exc

    @contextmanager
    def _update(self, cert: str) -> Iterator[dict[str, HostDeploy]]:
        path = self.path(cert)
        with self._lock:
            try:
                fsutil.ensure_dir(self.dir)
                lock_fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise StoreError(f"{self.dir}: cannot open deploy state: {exc}") from exc
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
                before = self._read(cert)
                entries = dict(before)
                yield entries
                now = datetime.now(UTC).isoformat(timespec="seconds")
                doc = {
                    "cert": cert,
                    "hosts": {
                        name: asdict(e if before.get(name) == e else replace(e, updated_at=now))
                        for name, e in entries.items()
                    },
                }
                try:
                    fsutil.atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)
                except OSError as exc:
                    raise StoreError(f"{path}: cannot write deploy state: {exc}") from exc
            finally:
                os.close(lock_fd)  # releases the flock


def hosts_behind(
    cfg: Config, store: Store, deploy_state: DeployState
) -> dict[str, tuple[str, ...]]:
    """Per certificate with a current release: its hosts not known to serve that version.

    A host is behind when the last run did not prove it serves the current
    version: it missed a rollout, failed one, or was never deployed to.
    """
    behind: dict[str, tuple[str, ...]] = {}
    for cert in cfg.certificates.values():
        release = store.current(cert.name)
        if release is None:
            continue
        recorded = deploy_state.get(cert.name)
        late = tuple(
            h for h in cert.hosts if recorded.get(h, HostDeploy()).deployed != release.version
        )
        if late:
            behind[cert.name] = late
    return behind
