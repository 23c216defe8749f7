"""The versioned local store: layout, modes, atomicity, the current pointer."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfan.errors import StoreError
from certfan.issue import crypto
from certfan.state import fsutil
from certfan.state.store import FILES, Store


def _issue(names: list[str], key_pem: bytes, days: int = 90) -> bytes:
    """A tiny local CA: leaf for ``key_pem`` plus one intermediate, as a fullchain."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test intermediate")])
    now = datetime.now(UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = crypto.load_key(key_pem)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return leaf.public_bytes(pem) + ca.public_bytes(pem)


def _save(store: Store, cert: str = "media", names: list[str] | None = None):
    key = crypto.new_key_pem("ec-p256")
    full = _issue(names or ["media.example.test"], key)
    return store.save(cert, key, full, order_url="https://ca.test/order/1", key_type="ec-p256")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_save_writes_complete_version_with_modes_and_is_not_current(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    key = crypto.new_key_pem("ec-p256")
    full = _issue(["media.example.test", "www.example.test"], key)
    rel = store.save("media", key, full, order_url="https://ca.test/o/1", key_type="ec-p256")

    assert rel.path == tmp_path / "state" / "certs" / "media" / "versions" / rel.version
    assert rel.version.startswith("0001-") and rel.version[5:] == rel.sha256[:12]
    assert rel.names == ("media.example.test", "www.example.test")
    assert rel.not_after.tzinfo is not None and rel.order_url == "https://ca.test/o/1"
    assert rel.file("privkey.pem").read_bytes() == key
    leaf, chain = crypto.split_fullchain(full)
    assert rel.file("cert.pem").read_bytes() == leaf
    assert rel.file("chain.pem").read_bytes() == chain
    assert rel.file("fullchain.pem").read_bytes() == full
    assert crypto.cert_facts(leaf).sha256 == rel.sha256

    assert _mode(rel.file("privkey.pem")) == 0o600
    for d in (
        tmp_path / "state",
        rel.path.parent.parent.parent,
        rel.path.parent.parent,
        rel.path.parent,
        rel.path,
    ):
        assert _mode(d) == 0o700, d
    assert store.current("media") is None  # save never flips
    assert store.get("media", rel.version) == rel


def test_private_key_created_with_0600_even_under_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        rel = _save(Store(tmp_path))
    finally:
        os.umask(old)
    assert _mode(rel.file("privkey.pem")) == 0o600
    assert _mode(rel.path) == 0o700


def test_activate_flips_symlink_and_previous(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first, second = _save(store), _save(store)
    assert second.version.startswith("0002-")
    store.activate(first)
    assert store.current("media") == first and store.previous("media") is None
    link = tmp_path / "certs" / "media" / "current"
    assert os.readlink(link) == f"versions/{first.version}"
    store.activate(second)
    assert store.current("media") == second
    assert store.previous("media") == first
    assert [r.version for r in store.versions("media")] == [first.version, second.version]
    assert (link / "fullchain.pem").read_bytes() == second.file("fullchain.pem").read_bytes()
    leftovers = [n for n in os.listdir(link.parent) if n.startswith(".")]
    assert leftovers == []


def test_crash_before_flip_leaves_new_version_and_old_current(tmp_path: Path) -> None:
    store = Store(tmp_path)
    old = _save(store)
    store.activate(old)
    new = _save(store)  # the "crash" happens here: activate() never runs
    store = Store(tmp_path)  # a fresh process
    assert store.current("media") == old
    assert new in store.versions("media")
    assert new.file("privkey.pem").is_file()


def test_half_written_version_is_ignored(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rel = _save(store)
    half = rel.path.parent / ".tmp-deadbeef"
    half.mkdir()
    (half / "privkey.pem").write_text("partial")
    assert store.versions("media") == [rel]
    nxt = _save(store)
    assert nxt.version.startswith("0002-")


def test_delete_refuses_current(tmp_path: Path) -> None:
    store = Store(tmp_path)
    a, b = _save(store), _save(store)
    store.activate(b)
    with pytest.raises(StoreError, match="current"):
        store.delete(b)
    store.delete(a)
    assert store.versions("media") == [b]
    assert not a.path.exists()


def test_refuses_mismatched_key_and_bad_names(tmp_path: Path) -> None:
    store = Store(tmp_path)
    full = _issue(["a.example.test"], crypto.new_key_pem("ec-p256"))
    with pytest.raises(StoreError, match="does not match"):
        store.save("a", crypto.new_key_pem("ec-p256"), full, order_url=None, key_type="ec-p256")
    with pytest.raises(StoreError, match="invalid certificate name"):
        store.current("../etc")
    with pytest.raises(StoreError, match="no such version"):
        store.get("a", "0001-000000000000")
    assert not (tmp_path / "certs" / "a" / "versions").exists() or not [
        n for n in os.listdir(tmp_path / "certs" / "a" / "versions")
    ]


def test_corrupt_meta_names_the_path(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rel = _save(store)
    rel.file("meta.json").write_text("{not json")
    with pytest.raises(StoreError, match=str(rel.path)):
        store.get("media", rel.version)


def test_atomic_write_replaces_and_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    fsutil.atomic_write(target, b"one", 0o600)
    fsutil.atomic_write(target, b"two", 0o600)
    assert target.read_bytes() == b"two" and _mode(target) == 0o600
    assert os.listdir(tmp_path) == ["f"]


def test_release_file_rejects_unknown_names(tmp_path: Path) -> None:
    rel = _save(Store(tmp_path))
    assert set(FILES) <= set(os.listdir(rel.path))
    with pytest.raises(StoreError):
        rel.file("../../etc/passwd")
