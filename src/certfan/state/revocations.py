"""What a revocation or a partial rollback leaves behind for later runs to respect.

    revoked.json  <state>/certs/<cert>/revoked.json: versions certfan revoked
                  at the CA and why; status calls serving one CRITICAL and
                  rollback refuses to go back to one
    holds.json    <state>/holds.json: hosts a rollback of only some hosts left
                  on an older version; renew does not bring them forward

Local files only: the reporting commands read them without any CA code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from certfan.errors import StoreError
from certfan.state import fsutil

if TYPE_CHECKING:  # the reasons below are an option's choices: keep this module light
    from certfan.state.deploy import DeployState
    from certfan.state.store import Release, Store

# RFC 5280 section 5.3.1 codes that ACME CAs accept from subscribers.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}
DEFAULT_REASON = "superseded"


def revoked_versions(store: Store, cert: str) -> dict[str, str]:
    """Versions certfan revoked: version -> reason."""
    path = store.cert_dir(cert) / "revoked.json"
    doc = fsutil.read_json(path, "revocations") or {}
    if not isinstance(doc, dict):
        raise StoreError(f"{path}: invalid revocations file")
    return {str(v): str(entry.get("reason")) for v, entry in doc.items()
            if isinstance(entry, dict)}


def record_revoked(store: Store, release: Release, reason: str) -> None:
    path = store.cert_dir(release.cert) / "revoked.json"
    try:
        doc = fsutil.read_json(path, "revocations") or {}
        doc[release.version] = {"reason": reason, "serial": release.serial,
                                "at": datetime.now(UTC).isoformat()}
        fsutil.atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n")
    except (OSError, ValueError, StoreError) as exc:
        raise StoreError(f"{path}: revoked at the CA, but cannot record it: {exc}") from exc


class Holds:
    """Hosts a rollback of only some hosts left on an older version, per certificate.

    ``renew`` does not bring a held host forward (that would undo the rollback
    at the next timer run); the hold ends when a new version of the
    certificate is issued, when every host is rolled back, or when the host is
    no longer on the held version (a push moved it).
    """

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "holds.json"

    def get(self, cert: str) -> dict[str, str]:
        return dict(self._read().get(cert, {}))

    def active(self, cert: str, deploy: DeployState) -> dict[str, str]:
        """The holds still in force: the host is (still) on the held version."""
        recorded = deploy.get(cert)
        return {host: version for host, version in self.get(cert).items()
                if host in recorded and recorded[host].deployed == version}

    def hold(self, cert: str, hosts: Sequence[str], version: str) -> None:
        doc = self._read()
        doc.setdefault(cert, {}).update(dict.fromkeys(hosts, version))
        self._write(doc)

    def clear(self, cert: str) -> None:
        doc = self._read()
        if doc.pop(cert, None) is not None:
            self._write(doc)

    def _read(self) -> dict[str, dict[str, str]]:
        doc = fsutil.read_json(self.path, "holds")
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise StoreError(f"{self.path}: invalid holds file")
        return {str(c): {str(h): str(v) for h, v in hosts.items()} for c, hosts in doc.items()}

    def _write(self, doc: dict[str, dict[str, str]]) -> None:
        try:
            fsutil.ensure_dir(self.path.parent)
            fsutil.atomic_write(self.path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write holds: {exc}") from exc
