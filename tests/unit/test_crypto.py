"""Keys, CSRs and certificate facts (pure functions)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from certfan.issue import crypto


def _cert(
    key_pem: bytes,
    names: list[str],
    serial: int = 0x1234,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
) -> bytes:
    issuer_key = issuer_key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime(2030, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(crypto.load_key(key_pem).public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .sign(issuer_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "key_type,cls,size",
    [
        ("ec-p256", ec.EllipticCurvePrivateKey, 256),
        ("ec-p384", ec.EllipticCurvePrivateKey, 384),
        ("rsa-2048", rsa.RSAPrivateKey, 2048),
        ("rsa-3072", rsa.RSAPrivateKey, 3072),
    ],
)
def test_generate_key_types_and_pkcs8_pem(key_type: str, cls: type, size: int) -> None:
    pem = crypto.new_key_pem(key_type)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    key = crypto.load_key(pem)
    assert isinstance(key, cls) and key.key_size == size
    assert crypto.key_type_of(key) == key_type


def test_unknown_key_type() -> None:
    with pytest.raises(crypto.CryptoError, match="unknown key type"):
        crypto.generate_key("dsa-1024")


def test_csr_carries_all_names_and_matches_key() -> None:
    key = crypto.new_key_pem("ec-p256")
    names = ["lab.test", "*.lab.test"]
    csr = x509.load_pem_x509_csr(crypto.make_csr(key, names))
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == names
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "lab.test"
    assert csr.is_signature_valid
    assert csr.public_key() == crypto.load_key(key).public_key()


def test_long_first_name_goes_to_san_only() -> None:
    long_name = "a" * 60 + ".example.test"
    csr = x509.load_pem_x509_csr(crypto.make_csr(crypto.new_key_pem("ec-p256"), [long_name]))
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []


def test_cert_facts_and_fullchain_split() -> None:
    key = crypto.new_key_pem("ec-p256")
    leaf = _cert(key, ["a.test", "b.test"], serial=0xABCDEF)
    other = _cert(crypto.new_key_pem("ec-p256"), ["ca.test"])
    leaf_out, chain_out = crypto.split_fullchain(leaf + other)
    assert (leaf_out, chain_out) == (leaf, other)
    facts = crypto.cert_facts(leaf)
    der = x509.load_pem_x509_certificate(leaf).public_bytes(serialization.Encoding.DER)
    assert facts.sha256 == hashlib.sha256(der).hexdigest()
    assert facts.serial == "abcdef"
    assert facts.names == ("a.test", "b.test")
    assert facts.not_before == datetime(2030, 1, 1, tzinfo=UTC)
    assert facts.not_after - facts.not_before == timedelta(days=90)
    assert facts.issuer == "CN=issuer"
    assert crypto.key_matches_cert(key, leaf)
    assert not crypto.key_matches_cert(crypto.new_key_pem("ec-p256"), leaf)


def test_split_rejects_non_pem() -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.split_fullchain(b"hello")


def test_ari_cert_id_matches_rfc9773_example_shape() -> None:
    # RFC 9773 section 4.1: serial 0x0087654321 has its high bit set in the
    # first content octet after the leading zero, so the DER keeps the 0x00.
    issuer = ec.generate_private_key(ec.SECP256R1())
    leaf = _cert(crypto.new_key_pem("ec-p256"), ["a.test"], serial=0x87654321, issuer_key=issuer)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()).key_identifier
    expected_aki = base64.urlsafe_b64encode(aki).rstrip(b"=").decode()
    assert crypto.ari_cert_id(leaf) == f"{expected_aki}.AIdlQyE"


@given(st.integers(min_value=1, max_value=2**159 - 1))
def test_serial_der_bytes_is_der_integer_content(serial: int) -> None:
    data = crypto._serial_der_bytes(serial)
    assert int.from_bytes(data, "big", signed=True) == serial
    assert data[0] & 0x80 == 0  # positive
    assert not (len(data) > 1 and data[0] == 0 and data[1] & 0x80 == 0)  # minimal
