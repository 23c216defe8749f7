"""import: adopt a key and fullchain (what certbot left) as a new current version.
Nothing is deployed; the next renew or push rolls it out."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from certfan.config import Config
from certfan.errors import CertfanError, StoreError
from certfan.issue import crypto
from certfan.state import trust
from certfan.state.revocations import Holds
from certfan.state.store import Release, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Imported:
    release: Release
    warnings: tuple[str, ...] = field(default_factory=tuple)
    unchanged: bool = False  # the same key and fullchain were already current


def import_cert(cfg: Config, store: Store, cert_name: str, key_file: Path,
                fullchain_file: Path, *, chain_file: Path | None = None,
                trust_files: Sequence[Path] = (), now: datetime | None = None) -> Imported:
    """Store an existing key and fullchain as a new current version of ``cert_name``.

    Refused, in one line naming the file and what it lacks, unless the key
    matches, the leaf covers the configured names and the chain (the
    fullchain's intermediates, or ``chain_file``'s) ends at a trusted root
    (``acme.ca_bundle``, the system store or ``trust_files``). The very key
    and fullchain of the current version store nothing (``unchanged``).
    """
    cert = cfg.certificate(cert_name)
    key_pem = _read(key_file, "the key")
    fullchain_pem = _read(fullchain_file, "the fullchain")
    if chain_file is not None:
        fullchain_pem = trust.with_intermediates(fullchain_pem, _read(chain_file, "the chain"))
    try:
        key_type = crypto.key_type_of(crypto.load_key(key_pem))
    except CertfanError as exc:
        raise StoreError(f"{key_file}: {exc}") from exc
    same = store.same_as_current(cert.name, key_pem, fullchain_pem)
    if same is not None:
        log.info("%s: %s is already the current version %s", cert.name, fullchain_file,
                 same.version, extra={"cert": cert.name})
        return Imported(same, unchanged=True)
    anchors = trust.anchors(cfg.acme.ca_bundle, trust_files)
    problems = crypto.chain_problems(key_pem, fullchain_pem, cert.domains, anchors)
    if problems:
        raise StoreError(trust.refusal(problems, key_file, chain_file or fullchain_file))
    release = store.save(cert.name, key_pem, fullchain_pem, order_url=None, key_type=key_type,
                         names=cert.domains, anchors=anchors)
    store.activate(release)
    Holds(cfg.state_dir).clear(cert.name)
    warnings = []
    wanted = {d.lower() for d in cert.domains}
    if set(release.names) != wanted:
        warnings.append(f"it names {', '.join(release.names)}, the config "
                        f"{', '.join(cert.domains)}: the next renew replaces it")
    if key_type != cert.key_type:
        warnings.append(f"its key is {key_type}, the config says {cert.key_type}: "
                        "the next renew replaces it")
    if release.not_after <= (now or datetime.now(UTC)):
        warnings.append(f"it expired on {release.not_after:%Y-%m-%d %H:%M}Z")
    log.info("%s: imported %s as %s (serial %s)", cert.name, fullchain_file, release.version,
             release.serial, extra={"cert": cert.name})
    return Imported(release, tuple(warnings))


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise StoreError(f"{path}: cannot read {what}: {exc.strerror or exc}") from exc
