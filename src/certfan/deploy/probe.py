"""Ask a host what it serves: a TLS handshake with SNI to the host's own address.

Verification is off on purpose: we do not ask "is this chain trusted" but
"is this exactly the leaf we deployed", answered by comparing SHA-256
fingerprints of the DER. A completed handshake also proves the server holds
the private key matching that leaf (it signed the handshake with it).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfan.config import Endpoint
from certfan.errors import ProbeError

PROBE_LABEL = "certfan-probe"


def sni_for(name: str) -> str:
    """The SNI to send for a certificate name: a concrete label for a wildcard."""
    if name.startswith("*."):
        return f"{PROBE_LABEL}.{name[2:]}"
    return name


def sha256_hex(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def leaf_sha256_from_pem(pem: bytes) -> str | None:
    """SHA-256 of the first certificate in a PEM bundle, None when there is none."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    if not certs:
        return None
    return sha256_hex(certs[0].public_bytes(Encoding.DER))


def served_leaf(endpoint: Endpoint, sni: str, timeout: float) -> bytes:
    """DER of the leaf certificate ``endpoint`` presents for ``sni``. Raises ProbeError."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((endpoint.address, endpoint.port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            with context.wrap_socket(sock, server_hostname=sni) as tls:
                der = tls.getpeercert(binary_form=True)
    except TimeoutError as exc:
        raise ProbeError(str(endpoint), sni, f"timed out after {timeout:g}s") from exc
    except ssl.SSLError as exc:
        raise ProbeError(str(endpoint), sni, f"TLS handshake failed: {exc.reason or exc}") from exc
    except OSError as exc:
        raise ProbeError(str(endpoint), sni, exc.strerror or str(exc)) from exc
    if not der:
        raise ProbeError(str(endpoint), sni, "no certificate presented")
    return der


@dataclass(frozen=True)
class ServedFacts:
    sha256: str
    not_after: datetime
    names: tuple[str, ...]
    serial: str
    issuer: str


def facts_of(der: bytes) -> ServedFacts:
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = tuple(san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    return ServedFacts(
        sha256=sha256_hex(der),
        not_after=cert.not_valid_after_utc,
        names=names,
        serial=format(cert.serial_number, "x"),
        issuer=cert.issuer.rfc4514_string(),
    )


def served_facts(endpoint: Endpoint, sni: str, timeout: float) -> ServedFacts:
    """What ``endpoint`` serves for ``sni``: fingerprint, expiry, names. Raises ProbeError."""
    der = served_leaf(endpoint, sni, timeout)
    try:
        return facts_of(der)
    except ValueError as exc:
        raise ProbeError(str(endpoint), sni, f"unparsable certificate: {exc}") from exc
