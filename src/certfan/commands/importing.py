"""import: adopt a key and fullchain (what certbot left) as a new current version.
Nothing is deployed; the next renew or push rolls it out."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from certfan.config import Config
from certfan.errors import CertfanError, StoreError
from certfan.issue import crypto
from certfan.state.revocations import Holds
from certfan.state.store import Release, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Imported:
    release: Release
    warnings: tuple[str, ...] = field(default_factory=tuple)


def import_cert(cfg: Config, store: Store, cert_name: str, key_file: Path,
                fullchain_file: Path, *, now: datetime | None = None) -> Imported:
    """Store an existing key and fullchain as a new current version of ``cert_name``."""
    cert = cfg.certificate(cert_name)
    try:
        key_pem = Path(key_file).read_bytes()
    except OSError as exc:
        raise StoreError(f"{key_file}: cannot read the key: {exc.strerror or exc}") from exc
    try:
        fullchain_pem = Path(fullchain_file).read_bytes()
    except OSError as exc:
        raise StoreError(f"{fullchain_file}: cannot read the fullchain: "
                         f"{exc.strerror or exc}") from exc
    try:
        key_type = crypto.key_type_of(crypto.load_key(key_pem))
    except CertfanError as exc:
        raise StoreError(f"{key_file}: {exc}") from exc
    release = store.save(cert.name, key_pem, fullchain_pem, order_url=None, key_type=key_type)
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
