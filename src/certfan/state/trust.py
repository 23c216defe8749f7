"""The trust anchors a stored chain must end at, read from local disk.

The configured ``acme.ca_bundle``, the system store (OpenSSL's default CA
file, as Python's ``ssl`` finds it), and for ``import`` the files given with
``--trust``. A file that is named but cannot be read is an error naming it;
a system store that is missing is simply empty.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from certfan.errors import CryptoError, StoreError
from certfan.issue import crypto

log = logging.getLogger(__name__)


def system_store() -> Path | None:
    paths = ssl.get_default_verify_paths()
    for name in (paths.cafile, paths.openssl_cafile):
        if name and Path(name).is_file():
            return Path(name)
    return None


def anchors(ca_bundle: Path | None, extra: Sequence[Path] = (), *,
            system: Path | None = None) -> crypto.Anchors:
    """Anchors from ``ca_bundle``, the ``extra`` files and the system store
    (``system``, default :func:`system_store`)."""
    pems: list[bytes] = []
    for path in (*([ca_bundle] if ca_bundle else []), *extra):
        try:
            pems.append(path.read_bytes())
        except OSError as exc:
            raise StoreError(f"{path}: cannot read trust anchors: {exc.strerror or exc}") from exc
    store = system or system_store()
    if store is not None:
        try:
            pems.append(store.read_bytes())
        except OSError as exc:  # a system store we cannot read adds nothing
            log.debug("%s: cannot read the system store: %s", store, exc)
    return crypto.load_anchors(*pems)


def with_intermediates(fullchain_pem: bytes, chain_pem: bytes) -> bytes:
    """``fullchain_pem`` followed by the blocks of ``chain_pem`` it does not hold yet
    (``import --chain``: certbot's cert.pem and chain.pem, or a leaf-only fullchain)."""
    have = crypto.split_pem_chain(fullchain_pem) if fullchain_pem.strip() else []
    try:
        more = crypto.split_pem_chain(chain_pem)
    except CryptoError as exc:
        raise StoreError(f"the chain file: {exc}") from exc
    return b"".join(have + [b for b in more if b not in have])


def refusal(problems: Sequence[str], key_file: Path, cert_file: Path) -> str:
    """One line: each problem after the file it is about, and what to do."""
    parts = []
    for problem in problems:
        if problem == crypto.KEY_MISMATCH:
            parts.append(f"{key_file}: {problem} in {cert_file}")
        elif problem.startswith("the leaf alone"):
            parts.append(f"{cert_file}: {problem} (give them with --chain FILE)")
        elif "trusted root" in problem:
            parts.append(f"{cert_file}: {problem} (name the root with --trust FILE)")
        else:
            parts.append(f"{cert_file}: {problem}")
    return "refusing to import: " + "; ".join(parts)
