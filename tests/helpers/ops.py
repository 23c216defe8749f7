"""Helpers for the operations tests (renew, reissue, status, ...) on the lab.

``Ops`` is a certfan config for the lab with its own state directory (the
lab's nodes are shared by every test, their state is not), and only the
certificate the nodes serve (``media``): ``wild`` and ``static`` would
otherwise be "due" (never issued) in every renew.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfan import cli, config
from certfan.state.store import Release, Store
from certfan_lab import Lab, pki

PEM = serialization.Encoding.PEM


CA = pki.new_ca("certbot-era test CA")


def cert_files(directory: Path, tag: str, *, days_left: float, lifetime_days: float = 90.0,
               names: tuple[str, ...] = ("media.lab.test",)) -> tuple[Path, Path]:
    """(key file, fullchain file) of a certificate like certbot leaves, ``days_left`` to live."""
    ca_key, ca = CA
    key, leaf = pki.issue(ca_key, ca, names, timedelta(days=lifetime_days),
                          left=timedelta(days=days_left))
    key_path, chain_path = directory / f"{tag}.key", directory / f"{tag}.fullchain.pem"
    key_path.write_bytes(key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    chain_path.write_bytes(leaf.public_bytes(PEM) + ca.public_bytes(PEM))
    return key_path, chain_path


def ca_file(directory: Path) -> Path:
    """The test CA's certificate as a file: ``import --trust`` takes it as the root."""
    path = directory / "test-ca.pem"
    path.write_bytes(CA[1].public_bytes(PEM))
    return path


def import_args(cert: str, key: Path, fullchain: Path) -> list[str]:
    """``import CERT --key K --fullchain F --trust <the test CA>`` for cert_files' output."""
    return ["import", cert, "--key", str(key), "--fullchain", str(fullchain),
            "--trust", str(ca_file(fullchain.parent))]


def restore_logging() -> Iterator[None]:
    """cli.main points the root logger at this test's stderr; put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def sha256(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def public_key_sha256(der: bytes) -> str:
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


class Ops:
    def __init__(self, lab: Lab, tmp_path: Path):
        self.lab = lab
        self.dir = tmp_path
        self.state = tmp_path / "state"
        self.store = Store(self.state)
        self.nodes = tuple(lab.default_node_names)
        self._imports = 0
        self.config_path = self.write()

    def write(self, **rollout: object) -> Path:
        policy: dict[str, object] = {"connect_timeout": 2.0, "command_timeout": 5.0,
                                     "verify_timeout": 5.0}
        policy.update(rollout)
        return self.lab.write_config(self.dir / "certfan.toml", self.state, rollout=policy,
                                     certificates={"wild": None, "static": None})

    @property
    def cfg(self) -> config.Config:
        return config.load(self.config_path)

    def cli(self, *args: str) -> int:
        return cli.main(["-c", str(self.config_path), *args])

    def import_files(self, key: Path, fullchain: Path) -> Release:
        assert self.cli(*import_args("media", key, fullchain)) == 0
        current = self.store.current("media")
        assert current is not None
        return current

    def import_cert(self, days_left: float = 60.0, lifetime_days: float = 90.0) -> Release:
        """A certbot-style certificate for media.lab.test as the new current version."""
        self._imports += 1
        key, chain = cert_files(self.dir, f"import{self._imports}", days_left=days_left,
                                lifetime_days=lifetime_days)
        return self.import_files(key, chain)

    def served_der(self, node: str, sni: str = "media.lab.test") -> bytes:
        return self.lab.served_leaf(node, sni)

    def served(self, node: str, sni: str = "media.lab.test") -> str:
        return sha256(self.served_der(node, sni))

    def versions(self) -> list[str]:
        return [r.version for r in self.store.versions("media")]
