"""Keys, CSRs and certificate facts: pure functions on bytes.

Private keys are PKCS#8 PEM, unencrypted (they are protected by file mode in
the store). Nothing here logs, and nothing here touches the disk or network.
"""

from __future__ import annotations

import base64
import hashlib
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from certfan.config.model import KEY_TYPES
from certfan.errors import CryptoError

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True)
class CertFacts:
    """What certfan records about a leaf certificate."""

    names: tuple[str, ...]  # SAN dNSNames, in certificate order
    serial: str  # lower-case hex, no leading zeros
    sha256: str  # hex SHA-256 of the DER
    not_before: datetime  # tz-aware UTC
    not_after: datetime
    issuer: str  # RFC 4514 string
    public_key_sha256: str  # hex SHA-256 of the SubjectPublicKeyInfo DER
    subject: str = ""  # RFC 4514 string


def generate_key(key_type: str) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type.startswith("rsa-") and key_type in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    raise CryptoError(f"unknown key type {key_type!r} (one of {', '.join(KEY_TYPES)})")


def key_type_of(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}.get(
            key.curve.name, f"ec-{key.curve.name}"
        )
    if isinstance(key, rsa.RSAPrivateKey):
        return f"rsa-{key.key_size}"
    raise CryptoError(f"unsupported key algorithm {type(key).__name__}")


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # the library message never contains key bytes, but keep ours generic anyway
        raise CryptoError("cannot parse private key PEM") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CryptoError(f"unsupported key algorithm {type(key).__name__}")
    return key


def new_key_pem(key_type: str) -> bytes:
    return key_to_pem(generate_key(key_type))


def make_csr(key_pem: bytes, names: tuple[str, ...] | list[str]) -> bytes:
    """A PEM CSR for ``names`` (all in the SAN; the first also as CN if it fits)."""
    if not names:
        raise CryptoError("a CSR needs at least one name")
    key = load_key(key_pem)
    # ub-common-name is 64 (RFC 5280 appendix A); longer names live in the SAN only.
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, names[0])] if len(names[0]) <= 64 else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    builder = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
    )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """A PEM CSR as the object the ACME finalize message carries."""
    try:
        return x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise CryptoError(f"not a PEM certificate request: {exc}") from exc


def split_pem_chain(pem: bytes) -> list[bytes]:
    """Every certificate block in ``pem``, in order, each ending with a newline."""
    blocks = [m.group(0).replace(b"\r\n", b"\n") + b"\n" for m in _PEM_CERT.finditer(pem)]
    if not blocks:
        raise CryptoError("no certificate in PEM data")
    return blocks


def split_fullchain(fullchain_pem: bytes) -> tuple[bytes, bytes]:
    """(leaf PEM, chain PEM); the chain may be empty."""
    blocks = split_pem_chain(fullchain_pem)
    return blocks[0], b"".join(blocks[1:])


def load_cert(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(split_pem_chain(pem)[0])
    except ValueError as exc:
        raise CryptoError(f"cannot parse certificate: {exc}") from exc


def cert_facts(cert_pem: bytes) -> CertFacts:
    """Facts about the first certificate in ``cert_pem``."""
    return _facts(load_cert(cert_pem))


def cert_facts_der(der: bytes) -> CertFacts:
    """Facts about a DER certificate (what a TLS handshake presented)."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise CryptoError(f"cannot parse certificate: {exc}") from exc
    return _facts(cert)


def _facts(cert: x509.Certificate) -> CertFacts:
    der = cert.public_bytes(serialization.Encoding.DER)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CertFacts(
        names=cert_names(cert),
        serial=format(cert.serial_number, "x"),
        sha256=hashlib.sha256(der).hexdigest(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        issuer=cert.issuer.rfc4514_string(),
        public_key_sha256=hashlib.sha256(spki).hexdigest(),
        subject=cert.subject.rfc4514_string(),
    )


def cert_names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(san.value.get_values_for_type(x509.DNSName))


def public_key_sha256_of_key(key_pem: bytes) -> str:
    spki = load_key(key_pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def key_matches_cert(key_pem: bytes, cert_pem: bytes) -> bool:
    return public_key_sha256_of_key(key_pem) == cert_facts(cert_pem).public_key_sha256


def ari_cert_id(cert_pem: bytes) -> str:
    """RFC 9773 section 4.1: base64url(AKI keyIdentifier) "." base64url(serial DER)."""
    cert = load_cert(cert_pem)
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound as exc:
        raise CryptoError("certificate has no Authority Key Identifier (needed for ARI)") from exc
    if aki.key_identifier is None:
        raise CryptoError("certificate AKI has no keyIdentifier (needed for ARI)")
    return f"{_b64url(aki.key_identifier)}.{_b64url(_serial_der_bytes(cert.serial_number))}"


def _serial_der_bytes(serial: int) -> bytes:
    # The DER INTEGER content octets: two's complement, so a leading 0x00 when
    # the high bit is set (RFC 9773 section 4.1 example).
    length = serial.bit_length() // 8 + 1
    return serial.to_bytes(length, "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- chains and trust --------------------------------------------------------------
#
# A release is served as fullchain.pem: the leaf, then each intermediate, each
# signed by the next (RFC 8446 section 4.4.2), the last one signed by a root
# the clients trust. A leaf without its intermediate works in browsers that
# cache intermediates and fails in most other clients.


@dataclass(frozen=True)
class Anchors:
    """Trust anchors: root certificates a chain may end at (or end with)."""

    certs: tuple[x509.Certificate, ...]

    def find_issuer(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The anchor that ``cert`` is (the same name and key: a cross-signed copy of a
        root counts), or that signed it."""
        key = _spki(cert)
        for anchor in self.certs:
            if anchor == cert or (anchor.subject == cert.subject and _spki(anchor) == key):
                return anchor
        for anchor in self.certs:
            if anchor.subject == cert.issuer and _issued_by(cert, anchor):
                return anchor
        return None

    def reached_by(self, chain: Sequence[x509.Certificate]) -> bool:
        """Whether some certificate of ``chain`` is an anchor or signed by one (what
        follows it, such as a cross-sign by an older root, does not matter)."""
        return any(self.find_issuer(cert) is not None for cert in chain)


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_anchors(*pems: bytes) -> Anchors:
    """Every certificate in the PEM bundles; blocks that do not parse are skipped
    (a system store may hold what this library cannot read)."""
    certs: list[x509.Certificate] = []
    with warnings.catch_warnings():  # old roots with negative serials still anchor chains
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        for pem in pems:
            for block in _PEM_CERT.finditer(pem):
                try:
                    certs.append(x509.load_pem_x509_certificate(block.group(0)))
                except ValueError:
                    continue
    return Anchors(tuple(certs))


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "an empty subject"


KEY_MISMATCH = "the private key does not match the certificate"


def chain_problems(
    key_pem: bytes, fullchain_pem: bytes, names: Sequence[str], anchors: Anchors | None
) -> list[str]:
    """What keeps ``fullchain_pem`` (with ``key_pem``) from being served for ``names``.

    Empty when the key matches the leaf, the leaf covers every name, each
    certificate is signed by the next one, and the last one is, or is signed
    by, one of ``anchors`` (``None``: that last check is left out).
    """
    try:
        blocks = split_pem_chain(fullchain_pem)
        certs = [x509.load_pem_x509_certificate(b) for b in blocks]
    except (CryptoError, ValueError) as exc:
        return [f"cannot parse the certificates: {exc}"]
    leaves = [i for i, c in enumerate(certs) if not _is_ca(c)]
    if leaves and leaves[0] != 0:
        return [f"out of order: the leaf ({_subject(certs[leaves[0]])}) is certificate "
                f"{leaves[0] + 1}, it must come first, then each intermediate"]
    problems: list[str] = []
    try:
        if not key_matches_cert(key_pem, blocks[0]):
            problems.append(KEY_MISMATCH)
    except CryptoError as exc:
        problems.append(str(exc))
    missing = uncovered_names(cert_names(certs[0]), names)
    if missing:
        problems.append(f"the certificate does not cover {', '.join(missing)}")
    for i in range(len(certs) - 1):
        if not _issued_by(certs[i], certs[i + 1]):
            problems.append(
                f"certificate {i + 1} ({_subject(certs[i])}) is not signed by the next one, "
                f"{i + 2} ({_subject(certs[i + 1])}): intermediates wrong or out of order"
            )
            return problems
    last = certs[-1]
    if anchors is not None and not anchors.reached_by(certs):
        issuer = last.issuer.rfc4514_string()
        if len(certs) == 1:
            problems.append(
                f"the leaf alone, without the intermediate certificates of its issuer {issuer}"
            )
        else:
            problems.append(f"the chain does not end at a trusted root (last issuer {issuer})")
    return problems


def uncovered_names(sans: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """The names a certificate with ``sans`` is not valid for (RFC 6125 section 6.4.3:
    a wildcard covers exactly one leftmost label; a configured wildcard needs the same one)."""
    have = {s.lower().rstrip(".") for s in sans}
    missing = []
    for name in names:
        n = name.lower().rstrip(".")
        wildcard = "*." + n.split(".", 1)[1] if "." in n and not n.startswith("*.") else None
        if n not in have and wildcard not in have:
            missing.append(name)
    return tuple(missing)


def same_chain(served_ders: Sequence[bytes], fullchain_pem: bytes) -> str | None:
    """None when a handshake presented exactly ``fullchain_pem`` (leaf and intermediates,
    in order); else one line saying how the served chain differs."""
    try:
        expected = [load_cert(b).public_bytes(serialization.Encoding.DER)
                    for b in split_pem_chain(fullchain_pem)]
    except CryptoError as exc:
        return f"the deployed fullchain does not parse: {exc}"
    served = list(served_ders)
    if served == expected:
        return None
    if not served:
        return "no certificate served"
    if served[0] != expected[0]:
        return "serves another leaf certificate"
    if len(served) == 1:
        return f"serves the leaf only, without the {len(expected) - 1} intermediate(s) deployed"
    if len(served) < len(expected) and served == expected[: len(served)]:
        return f"serves {len(served) - 1} of the {len(expected) - 1} intermediate(s) deployed"
    return f"serves other intermediates than the {len(expected) - 1} deployed"


def pem_of_ders(ders: Sequence[bytes]) -> bytes:
    """PEM blocks of DER certificates, in order."""
    return b"".join(
        x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders
    )


def ssh_private_key_problem(data: bytes) -> str | None:
    """Why ``data`` is not an unencrypted private key SSH can log in with (OpenSSH or
    PEM format); None when it is one. Never quotes the data."""
    loaders = (serialization.load_ssh_private_key, serialization.load_pem_private_key)
    for load in loaders:
        try:
            load(data, password=None)
        except TypeError:
            return "is encrypted with a passphrase: certfan logs in unattended, without one"
        except (ValueError, UnsupportedAlgorithm):
            continue
        return None
    return "does not parse as a private key (OpenSSH or PEM)"
