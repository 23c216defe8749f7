"""Ask a host what it serves: a TLS handshake with SNI to the host's own address.

Verification is off on purpose: we do not ask "is this chain trusted" but
"is this exactly the leaf we deployed", answered by comparing SHA-256
fingerprints of the DER. A completed handshake also proves the server holds
the private key matching that leaf (it signed the handshake with it).
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from certfan.config import Endpoint
from certfan.errors import CertfanError, ProbeError

if TYPE_CHECKING:
    from certfan.issue.crypto import CertFacts

PROBE_LABEL = "certfan-probe"


def sni_for(name: str) -> str:
    """The SNI to send for a certificate name: a concrete label for a wildcard."""
    if name.startswith("*."):
        return f"{PROBE_LABEL}.{name[2:]}"
    return name


def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def served_leaf(endpoint: Endpoint, sni: str, timeout: float) -> bytes:
    """DER of the leaf certificate ``endpoint`` presents for ``sni``. Raises ProbeError."""
    return leaf_and_chain(served_chain(endpoint, sni, timeout))[0]


def _peer_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """Every certificate the server sent, leaf first, as DER (unverified: the
    comparison with what was deployed is the check)."""
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    if public is not None:
        return [bytes(d) for d in public()]
    try:  # CPython 3.10-3.12 have it, unnamed; elsewhere the leaf alone is what we get
        chain = tls._sslobj.get_unverified_chain() or []  # type: ignore[attr-defined]
        return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in chain]  # type: ignore[attr-defined]
    except AttributeError:
        return []  # served_chain then answers with the leaf alone


ChainProber = Callable[[Endpoint, str, float], "Sequence[bytes] | bytes"]  # leaf first


def leaf_and_chain(answer: Sequence[bytes] | bytes) -> tuple[bytes, tuple[bytes, ...]]:
    """(leaf, whole chain) of a prober's answer; a leaf-only prober's (bytes) has no chain."""
    if isinstance(answer, bytes):
        return answer, ()
    chain = tuple(answer)
    return chain[0], chain


def served_chain(endpoint: Endpoint, sni: str, timeout: float) -> list[bytes] | bytes:
    """DER of every certificate ``endpoint`` presents for ``sni``, leaf first; the leaf
    alone (bytes, not a list) where this Python cannot tell the rest."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((endpoint.address, endpoint.port), timeout=timeout) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(timeout)
            with context.wrap_socket(sock, server_hostname=sni) as tls:
                ders = _peer_chain(tls)
                leaf = tls.getpeercert(binary_form=True) or b""
    except TimeoutError as exc:
        raise ProbeError(str(endpoint), sni, f"timed out after {timeout:g}s") from exc
    except ssl.SSLError as exc:
        raise ProbeError(str(endpoint), sni, f"TLS handshake failed: {exc.reason or exc}") from exc
    except OSError as exc:
        raise ProbeError(str(endpoint), sni, exc.strerror or str(exc)) from exc
    if not leaf:
        raise ProbeError(str(endpoint), sni, "no certificate presented")
    return ders or leaf


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def chain_ders(fullchain_pem: bytes) -> tuple[bytes, ...]:
    """DER of each certificate of a fullchain.pem, in order (stdlib: the cheap compare)."""
    return tuple(ssl.PEM_cert_to_DER_cert(m.group().decode("ascii"))
                 for m in _PEM_CERT.finditer(fullchain_pem))


def facts_of(der: bytes) -> CertFacts:
    """Expiry, serial and names of a served leaf. Raises ValueError when it does not parse."""
    from certfan.issue import crypto  # only status needs more than a fingerprint

    try:
        return crypto.cert_facts_der(der)
    except CertfanError as exc:
        raise ValueError(str(exc)) from exc
