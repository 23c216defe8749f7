"""Keys and certificates the lab makes for itself.

A lab root CA signs Pebble's listener certificate (its PEM is certfan's
``acme.ca_bundle``); a separate "old CA" signs the certificate seeded on every
node, which expires in three days, like the one in the incident. SSH keys are
ed25519 in OpenSSH format.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey
SEED_DOMAIN = "media.lab.test"
# Like a Let's Encrypt certificate nobody renewed: 90 days long, 3 days left.
SEED_LIFETIME = dt.timedelta(days=90)
SEED_LEFT = dt.timedelta(days=3)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create `path` with `mode` from the start: secrets never exist world-readable."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certfan lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def new_ca(cn: str, days: int = 3650) -> tuple[PrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    names: list[str],
    lifetime: dt.timedelta,
    ips: Sequence[str] = (),
    left: dt.timedelta | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """A TLS server certificate for `names` (first is the CN) and `ips`, valid for
    `lifetime`, of which `left` remains (default: all of it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    if left is not None:
        now -= lifetime - left
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + lifetime)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def ssh_keypair() -> tuple[bytes, str]:
    """(OpenSSH private key, "ssh-ed25519 AAAA..." public line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


@dataclass(frozen=True)
class Seed:
    """The certificate every node serves when the lab starts (certbot layout)."""

    cert: bytes  # PEM leaf
    chain: bytes  # PEM old CA
    key: bytes  # PEM PKCS#8
    sha256: str  # hex SHA-256 of the leaf DER
    not_after: dt.datetime

    @property
    def fullchain(self) -> bytes:
        return self.cert + self.chain


@dataclass(frozen=True)
class LabPki:
    ca_pem: Path  # acme.ca_bundle: verifies Pebble's listener
    listener_cert: Path
    listener_key: Path
    seed: Seed


def build(pki_dir: Path) -> LabPki:
    """Make the lab CA, Pebble's listener certificate and the seed certificate."""
    pki_dir.mkdir(mode=0o755, exist_ok=True)
    ca_key, ca = new_ca("certfan lab root CA")
    lkey, lcert = issue(ca_key, ca, ["localhost"], dt.timedelta(days=365), ips=["127.0.0.1"])
    old_key, old_ca = new_ca("certfan lab old CA")
    skey, scert = issue(old_key, old_ca, [SEED_DOMAIN], SEED_LIFETIME, left=SEED_LEFT)
    ca_pem = pki_dir.parent / "lab-ca.pem"
    ca_pem.write_bytes(cert_pem(ca))
    (pki_dir / "old-ca.pem").write_bytes(cert_pem(old_ca))
    listener_cert, listener_key = pki_dir / "pebble-listener.pem", pki_dir / "pebble-listener.key"
    listener_cert.write_bytes(cert_pem(lcert))
    write_private(listener_key, key_pem(lkey))
    der = scert.public_bytes(serialization.Encoding.DER)
    seed = Seed(
        cert=cert_pem(scert),
        chain=cert_pem(old_ca),
        key=key_pem(skey),
        sha256=hashlib.sha256(der).hexdigest(),
        not_after=scert.not_valid_after_utc,
    )
    return LabPki(ca_pem, listener_cert, listener_key, seed)
