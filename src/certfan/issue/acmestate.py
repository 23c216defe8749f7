"""What certfan keeps on disk about one CA (its account, whether it offers ARI),
and what it makes of the CA's directory metadata (profiles).

``<state>/account/<sha256(directory)[:16]>/``, directories 0700:

* ``key.pem`` (0600 from creation): the account key;
* ``account.json``: the account URL once registered;
* ``directory.json``: whether the directory lists ``renewalInfo``, with the
  time it was fetched, so a run with nothing to do need not contact the CA.

No ACME library here: ``acme.AcmeClient`` does the protocol.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from certfan.errors import AcmeError
from certfan.state import fsutil

log = logging.getLogger(__name__)

DIRECTORY_CACHE_TTL = 24 * 3600.0  # whether the CA offers ARI: a day-old answer is fine


@dataclass(frozen=True)
class AccountFiles:
    key_pem: bytes
    uri: str | None  # None: not registered (or not recorded) yet


class CaState:
    def __init__(self, state_dir: Path, directory: str):
        self.directory = directory
        digest = hashlib.sha256(directory.encode()).hexdigest()[:16]
        self.dir = Path(state_dir) / "account" / digest

    def load_account(self, key_type: str) -> AccountFiles:
        """The account key (made now if there is none) and the recorded account URL."""
        folder = fsutil.ensure_dir(self.dir)
        key_path, info_path = folder / "key.pem", folder / "account.json"
        try:
            if key_path.exists():
                key_pem = key_path.read_bytes()
            else:
                from certfan.issue import crypto  # only a new account: the due check needs none

                key_pem = crypto.new_key_pem(key_type)
                fsutil.atomic_write(key_path, key_pem, fsutil.KEY_MODE)
                log.info("created ACME account key %s", key_path)
            info = json.loads(info_path.read_text()) if info_path.exists() else {}
        except (OSError, ValueError) as exc:
            raise AcmeError(f"{folder}: cannot read ACME account: {exc}") from exc
        uri = info.get("uri") if isinstance(info, dict) else None
        return AccountFiles(key_pem, str(uri) if uri else None)

    def record_account(self, uri: str) -> None:
        doc = {"uri": uri, "directory": self.directory, "created": datetime.now(UTC).isoformat()}
        fsutil.atomic_write(self.dir / "account.json", json.dumps(doc, indent=2).encode() + b"\n")

    def cached_ari(self, ttl: float) -> bool | None:
        """Whether the CA offers ARI, from a cache younger than ``ttl``; None: ask the CA."""
        path = self.dir / "directory.json"
        try:
            doc = json.loads(path.read_text())
            fetched = datetime.fromisoformat(doc["fetched_at"])
            age = (datetime.now(UTC) - fetched).total_seconds()
            fresh = doc["directory"] == self.directory and 0 <= age < ttl
            offers = doc["renewal_info"] is not None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.debug("%s: ignoring directory cache: %r", path, exc)
            return None
        if not fresh:
            return None
        log.debug("CA offers ARI: %s (cached %.0fs ago in %s)", offers, age, path)
        return bool(offers)

    def remember_ari(self, renewal_info: str | None) -> None:
        doc = {"directory": self.directory, "renewal_info": renewal_info,
               "fetched_at": datetime.now(UTC).isoformat()}
        path = self.dir / "directory.json"
        try:
            fsutil.ensure_dir(path.parent)
            fsutil.atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n")
        except OSError as exc:  # only an optimisation: the next run asks the CA again
            log.warning("%s: cannot cache the ACME directory: %s", path, exc)


def choose_profile(wanted: str, offered: dict[str, str]) -> str | None:
    """``acme.profile`` if the CA offers it; None (and a warning) if it offers none."""
    if not offered:
        log.warning("the CA offers no profiles; acme.profile %r not requested", wanted)
        return None
    if wanted not in offered:
        raise AcmeError(f"acme.profile {wanted!r} is not offered by the CA "
                        f"(it offers: {', '.join(sorted(offered))})")
    return wanted


def read_secret(path: Path, what: str) -> str:
    """A one-line secret file (the EAB HMAC key); errors name the file, never the content."""
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise AcmeError(f"{path}: cannot read {what}: {exc.strerror}") from None
