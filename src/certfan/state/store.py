"""The local versioned certificate store.

Layout under the state directory (every directory 0700)::

    certs/<cert>/
        current -> versions/0003-1a2b3c4d5e6f     symlink, flipped by one rename
        versions/
            0001-9f8e7d6c5b4a/
                privkey.pem    0600, PKCS#8
                cert.pem       leaf
                chain.pem      intermediates (may be empty)
                fullchain.pem  leaf + intermediates, as the CA sent them
                meta.json      serial, sha256, names, validity, issuer, order URL
            .tmp-...           a version being written; readers ignore it

A version is written complete into ``versions/.tmp-*`` and then renamed into
place, so a crash leaves either nothing or a whole version, never half of one.
``save`` never touches ``current``; ``activate`` is the one atomic flip.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certfan.errors import CertfanError, StoreError
from certfan.state import fsutil

if TYPE_CHECKING:
    from certfan.issue import crypto  # imported where used: reading the store needs none

log = logging.getLogger(__name__)

FILES = ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem")
META = "meta.json"
_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_RE = re.compile(r"^(\d{4,})-([0-9a-f]{12})$")  # f"{n:04d}-{sha256[:12]}"


@dataclass(frozen=True)
class Release:
    cert: str  # certificate name
    version: str  # f"{n:04d}-{sha256[:12]}", sortable, safe for paths
    path: Path  # <state>/certs/<cert>/versions/<version>
    sha256: str  # hex SHA-256 of the leaf DER
    serial: str  # hex
    names: tuple[str, ...]
    not_before: datetime  # tz-aware UTC
    not_after: datetime
    issuer: str
    order_url: str | None
    key_type: str

    def file(self, name: str) -> Path:
        """Path of one of ``FILES`` in this version."""
        if name not in FILES and name != META:
            raise StoreError(f"{self.path}: no such release file {name!r}")
        return self.path / name

    @property
    def number(self) -> int:
        return int(self.version.split("-", 1)[0])


class Store:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)

    # ------------------------------------------------------------ paths

    def cert_dir(self, cert: str) -> Path:
        if not _CERT_NAME.match(cert):
            raise StoreError(f"invalid certificate name {cert!r} (letters, digits, . _ -)")
        return self.state_dir / "certs" / cert

    def _versions_dir(self, cert: str) -> Path:
        return self.cert_dir(cert) / "versions"

    def _current_link(self, cert: str) -> Path:
        return self.cert_dir(cert) / "current"

    # ------------------------------------------------------------ writing

    def save(
        self,
        cert: str,
        key_pem: bytes,
        fullchain_pem: bytes,
        *,
        order_url: str | None,
        key_type: str,
        names: Sequence[str] = (),
        anchors: crypto.Anchors | None = None,
    ) -> Release:
        """Write a new, complete version; it does NOT become current.

        Refused unless the key matches the leaf, the leaf covers ``names`` and
        each certificate of the fullchain is signed by the next; with
        ``anchors``, the chain must also end at one of them. Every command that
        stores (issue, renew, reissue, import) passes both; a unit test holds
        them to it.
        """
        from certfan.issue import crypto

        problems = crypto.chain_problems(key_pem, fullchain_pem, names, anchors)
        if problems:
            raise StoreError(f"{cert}: refusing to store: {'; '.join(problems)}")
        try:
            leaf, chain = crypto.split_fullchain(fullchain_pem)
            facts = crypto.cert_facts(leaf)
        except CertfanError as exc:
            raise StoreError(f"{cert}: refusing to store: {exc}") from exc
        versions = self._versions_dir(cert)
        try:
            fsutil.ensure_dir(self.state_dir)
            fsutil.ensure_dir(versions)
            tmp = versions / f".tmp-{secrets.token_hex(8)}"
            tmp.mkdir(mode=fsutil.DIR_MODE)
            os.chmod(tmp, fsutil.DIR_MODE)
        except OSError as exc:
            raise StoreError(f"{versions}: cannot create version directory: {exc}") from exc
        try:
            self._write_files(tmp, key_pem, leaf, chain, fullchain_pem)
            release = self._place(cert, tmp, facts, order_url, key_type)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("stored %s version %s (serial %s)", cert, release.version, release.serial)
        return release

    def _write_files(
        self, tmp: Path, key_pem: bytes, leaf: bytes, chain: bytes, fullchain: bytes
    ) -> None:
        try:
            fsutil.write_new(tmp / "privkey.pem", key_pem, fsutil.KEY_MODE)
            fsutil.write_new(tmp / "cert.pem", leaf, fsutil.FILE_MODE)
            fsutil.write_new(tmp / "chain.pem", chain, fsutil.FILE_MODE)
            fsutil.write_new(tmp / "fullchain.pem", fullchain, fsutil.FILE_MODE)
        except OSError as exc:
            raise StoreError(f"{tmp}: cannot write release files: {exc}") from exc

    def _place(
        self,
        cert: str,
        tmp: Path,
        facts: crypto.CertFacts,
        order_url: str | None,
        key_type: str,
    ) -> Release:
        versions = tmp.parent
        number = self._last_number(cert) + 1
        for _ in range(100):
            version = f"{number:04d}-{facts.sha256[:12]}"
            release = Release(
                cert=cert,
                version=version,
                path=versions / version,
                sha256=facts.sha256,
                serial=facts.serial,
                names=facts.names,
                not_before=facts.not_before,
                not_after=facts.not_after,
                issuer=facts.issuer,
                order_url=order_url,
                key_type=key_type,
            )
            meta = _meta_doc(release, facts)
            try:
                meta_path = tmp / META
                meta_path.unlink(missing_ok=True)
                fsutil.write_new(meta_path, json.dumps(meta, indent=2).encode() + b"\n")
                fsutil.fsync_dir(tmp)
                # rename(2) of a directory never replaces a non-empty one: a
                # concurrent save that took this number makes us take the next.
                os.rename(tmp, release.path)
                fsutil.fsync_dir(versions)
                return release
            except OSError as exc:
                if release.path.exists():
                    number += 1
                    continue
                raise StoreError(f"{release.path}: cannot place version: {exc}") from exc
        raise StoreError(f"{versions}: cannot find a free version number")

    def activate(self, release: Release) -> None:
        """Make ``release`` current: one atomic flip of the ``current`` symlink."""
        self._check_complete(release)
        link = self._current_link(release.cert)
        try:
            fsutil.atomic_symlink(f"versions/{release.version}", link)
        except OSError as exc:
            raise StoreError(f"{link}: cannot flip current pointer: {exc}") from exc
        log.info("%s: current version is now %s", release.cert, release.version)

    def delete(self, release: Release) -> None:
        """Remove one version; never the current one."""
        current = self.current(release.cert)
        if current is not None and current.version == release.version:
            raise StoreError(f"{release.path}: refusing to delete the current version")
        if not release.path.is_dir():
            raise StoreError(f"{release.path}: no such version")
        trash = release.path.with_name(f".del-{release.version}-{secrets.token_hex(4)}")
        try:
            os.rename(release.path, trash)  # readers stop seeing it at once
            fsutil.fsync_dir(release.path.parent)
            shutil.rmtree(trash)
        except OSError as exc:
            raise StoreError(f"{release.path}: cannot delete: {exc}") from exc
        log.info("%s: deleted version %s", release.cert, release.version)

    # ------------------------------------------------------------ reading

    def current(self, cert: str) -> Release | None:
        link = self._current_link(cert)
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{link}: cannot read current pointer: {exc}") from exc
        version = Path(target).name
        if not VERSION_RE.match(version):
            raise StoreError(f"{link}: points at {target!r}, not a version")
        return self.get(cert, version)

    def unactivated(self, cert: str) -> Release | None:
        """The newest version, when it was stored after ``current`` last moved and is newer.

        That is a version a run stored and then died before ``activate`` (a
        rollback that moved ``current`` back flipped it after the newer
        version was stored, so that one does not count).
        """
        versions = self.versions(cert)
        if not versions:
            return None
        newest = versions[-1]
        current = self.current(cert)
        if current is not None:
            if newest.number <= current.number:
                return None
            try:  # both stamped by the file system's clock: meta.json written, link made
                stored = os.stat(newest.path).st_mtime_ns
                flipped = os.lstat(self._current_link(cert)).st_mtime_ns
            except OSError:
                return None
            if stored <= flipped:
                return None
        return newest

    def same_as_current(self, cert: str, key_pem: bytes, fullchain_pem: bytes) -> Release | None:
        """The current version when it holds this very key and fullchain, else None."""
        current = self.current(cert)
        if current is None:
            return None
        try:
            stored_key = current.file("privkey.pem").read_bytes()
            stored_chain = current.file("fullchain.pem").read_bytes()
        except OSError as exc:
            raise StoreError(f"{current.path}: cannot read: {exc.strerror or exc}") from exc
        from certfan.issue import crypto

        try:
            same_key = crypto.public_key_sha256_of_key(key_pem) == (
                crypto.public_key_sha256_of_key(stored_key)
            )
            same_chain = crypto.split_pem_chain(fullchain_pem) == (
                crypto.split_pem_chain(stored_chain)
            )
        except CertfanError:
            return None
        return current if same_key and same_chain else None

    def chain_problem(self, cert: str, version: str | None, served: Sequence[bytes]) -> str | None:
        """How a served chain (DER, leaf first) differs from ``version``'s fullchain.pem;
        None when it is the same, or when there is nothing to compare."""
        if not served or version is None:
            return None
        try:
            fullchain = self.get(cert, version).file("fullchain.pem").read_bytes()
        except (OSError, StoreError):
            return None
        from certfan.issue import crypto

        return crypto.same_chain(served, fullchain)

    def previous(self, cert: str) -> Release | None:
        current = self.current(cert)
        if current is None:
            return None
        older = [r for r in self.versions(cert) if r.number < current.number]
        return older[-1] if older else None

    def get(self, cert: str, version: str) -> Release:
        if not VERSION_RE.match(version):
            raise StoreError(f"{self._versions_dir(cert)}: invalid version {version!r}")
        path = self._versions_dir(cert) / version
        meta_path = path / META
        try:
            doc = json.loads(meta_path.read_text())
        except FileNotFoundError:
            raise StoreError(f"{path}: no such version") from None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{meta_path}: cannot read metadata: {exc}") from exc
        try:
            return _release_from_meta(cert, version, path, doc)
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{meta_path}: invalid metadata: {exc!r}") from exc

    def versions(self, cert: str) -> list[Release]:
        """Complete versions, oldest first; half-written ones are never listed."""
        directory = self._versions_dir(cert)
        try:
            names = [n for n in os.listdir(directory) if VERSION_RE.match(n)]
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"{directory}: cannot list versions: {exc}") from exc
        names.sort(key=lambda n: (int(n.split("-")[0]), n))
        return [self.get(cert, n) for n in names]

    def read_meta(self, release: Release) -> dict[str, Any]:
        """The raw meta.json of a version (extra facts such as the key fingerprint)."""
        try:
            doc = json.loads(release.file(META).read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{release.file(META)}: cannot read metadata: {exc}") from exc
        if not isinstance(doc, dict):
            raise StoreError(f"{release.file(META)}: invalid metadata: not an object")
        return doc

    def _last_number(self, cert: str) -> int:
        try:
            names = os.listdir(self._versions_dir(cert))
        except FileNotFoundError:
            return 0
        numbers = [int(m.group(1)) for n in names if (m := VERSION_RE.match(n))]
        return max(numbers, default=0)

    def _check_complete(self, release: Release) -> None:
        missing = [f for f in (*FILES, META) if not (release.path / f).is_file()]
        if missing:
            raise StoreError(f"{release.path}: incomplete version, missing {', '.join(missing)}")


def _meta_doc(release: Release, facts: crypto.CertFacts) -> dict[str, Any]:
    return {
        "cert": release.cert,
        "version": release.version,
        "sha256": release.sha256,
        "serial": release.serial,
        "names": list(release.names),
        "not_before": release.not_before.isoformat(),
        "not_after": release.not_after.isoformat(),
        "issuer": release.issuer,
        "order_url": release.order_url,
        "key_type": release.key_type,
        "public_key_sha256": facts.public_key_sha256,
        "stored_at": datetime.now(UTC).isoformat(),
    }


def _release_from_meta(cert: str, version: str, path: Path, doc: dict[str, Any]) -> Release:
    return Release(
        cert=cert,
        version=version,
        path=path,
        sha256=str(doc["sha256"]),
        serial=str(doc["serial"]),
        names=tuple(str(n) for n in doc["names"]),
        not_before=parse_utc(doc["not_before"]),
        not_after=parse_utc(doc["not_after"]),
        issuer=str(doc["issuer"]),
        order_url=doc.get("order_url"),
        key_type=str(doc["key_type"]),
    )


def parse_utc(text: str) -> datetime:
    """An ISO 8601 timestamp with a timezone, in UTC (the state files' format)."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without timezone: {text!r}")
    return value.astimezone(UTC)
