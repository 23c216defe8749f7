"""Extra things a test puts on the lab: trust for Pebble's roots, hand-made
certificates and nginx server blocks on nodes (the fleet certfan finds when it
adopts one: audit and doctor tests).

Everything here writes on this machine only, inside the lab's directory and
its nodes' roots.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfan_lab import pki
from certfan_lab.procs import LabError

if TYPE_CHECKING:
    from certfan_lab.core import Lab
    from certfan_lab.nodes import Node
    pass

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.DOTALL)


def add_to_bundle(bundle: Path, pem: str) -> None:
    """Append the certificates in ``pem`` to ``bundle`` (atomically) unless already there.

    The lab's ``acme.ca_bundle`` verifies Pebble's listener and, since certfan
    checks that every stored chain ends at a trusted root, also holds each
    issuing root Pebble made (a new one on every Pebble start; the old ones
    stay, so versions issued before a restart still check out)."""
    have = bundle.read_text() if bundle.exists() else ""
    new = [block for block in _PEM.findall(pem) if block.strip() not in have]
    if not new:
        return
    text = have if have.endswith("\n") or not have else have + "\n"
    tmp = bundle.with_name(bundle.name + ".tmp")
    tmp.write_text(text + "".join(b if b.endswith("\n") else b + "\n" for b in new))
    os.chmod(tmp, 0o644)
    os.replace(tmp, bundle)


# -- hand-made certificates and server blocks -----------------------------------------


@dataclass(frozen=True)
class HandMade:
    """A certificate made outside certfan, as an operator finds on an adopted fleet."""

    names: tuple[str, ...]
    cert: bytes  # PEM leaf
    chain: bytes  # PEM CA (self-signed)
    key: bytes  # PEM PKCS#8
    sha256: str  # of the leaf DER
    not_after: dt.datetime

    @property
    def fullchain(self) -> bytes:
        return self.cert + self.chain


def hand_made(names: list[str], *, days_left: float, lifetime_days: float = 90.0) -> HandMade:
    ca_key, ca = pki.new_ca(f"hand-made CA for {names[0]}")
    key, cert = pki.issue(ca_key, ca, names, dt.timedelta(days=lifetime_days),
                          left=dt.timedelta(days=days_left))
    der = cert.public_bytes(serialization.Encoding.DER)
    return HandMade(tuple(names), pki.cert_pem(cert), pki.cert_pem(ca), pki.key_pem(key),
                    hashlib.sha256(der).hexdigest(), cert.not_valid_after_utc)


def site_dir(node: Node) -> Path:
    return node.dir / "extra-sites"


def site_conf_path(node: Node, tag: str) -> Path:
    return node.nginx_prefix / "sites" / f"extra-{tag}.conf"


def add_site(lab: Lab, node: str | Node, tag: str, made: HandMade, *,
             cert_path: Path | None = None, key_path: Path | None = None,
             timeout: float = 10.0) -> Path:
    """A server block for ``made.names`` on the node, serving ``made`` from files in
    ``extra-sites/`` (or the paths given); nginx reloaded and seen serving it."""
    n = lab.node(node)
    folder = site_dir(n)
    folder.mkdir(mode=0o755, exist_ok=True)
    cert_path = cert_path or folder / f"{tag}.fullchain.pem"
    key_path = key_path or folder / f"{tag}.key"
    cert_path.write_bytes(made.fullchain)
    pki.write_private(key_path, made.key)
    for path in (cert_path, key_path):
        os.chown(path, lab.uid, lab.gid)
    conf = site_conf_path(n, tag)
    conf.write_text(f"""# certfan lab: a hand-made site ({tag})
server {{
    listen {n.address}:443 ssl;
    server_name {' '.join(made.names)};
    ssl_certificate {cert_path};
    ssl_certificate_key {key_path};
    location / {{ return 200 "{tag}\\n"; }}
}}
""")
    reload_nginx(lab, n)
    wait_served(lab, n, made.names[0], made.sha256, timeout)
    return conf


def remove_site(lab: Lab, node: str | Node, tag: str) -> None:
    n = lab.node(node)
    site_conf_path(n, tag).unlink(missing_ok=True)
    for stem in (f"{tag}.fullchain.pem", f"{tag}.key"):
        (site_dir(n) / stem).unlink(missing_ok=True)
    reload_nginx(lab, n)


def reload_nginx(lab: Lab, node: Node) -> None:
    done = lab.run_on(node, ["nginx", "-s", "reload"])
    if done.returncode != 0:
        raise LabError(f"{node.name}: nginx -s reload: {done.stderr.strip()}")


def wait_served(lab: Lab, node: Node, sni: str, sha256: str, timeout: float) -> None:
    """Until the node serves the leaf ``sha256`` for ``sni`` (workers pick up a reload
    a moment after the signal)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if hashlib.sha256(lab.served_leaf(node, sni)).hexdigest() == sha256:
                return
        except (OSError, LabError):
            pass
        if time.monotonic() > deadline:
            raise LabError(f"{node.name}: still not serving {sha256[:12]} for {sni}")
        time.sleep(0.05)


@contextlib.contextmanager
def sites(lab: Lab, placed: list[tuple[str, str, HandMade]]) -> Iterator[None]:
    """``add_site`` for each (node, tag, made), removed again afterwards."""
    done: list[tuple[str, str]] = []
    try:
        for node, tag, made in placed:
            add_site(lab, node, tag, made)
            done.append((node, tag))
        yield
    finally:
        for node, tag in done:
            remove_site(lab, node, tag)


# -- chains with an intermediate ---------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """root -> intermediate -> leaf, PEM each; and a foreign intermediate of another root."""

    root: bytes
    intermediate: bytes
    leaf: bytes
    key: bytes
    foreign: bytes  # an intermediate of the same name under another root
    sha256: str  # of the leaf DER


def intermediate_ca(root_key: pki.PrivateKey, root: x509.Certificate, cn: str,
                    ) -> tuple[pki.PrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root_key, hashes.SHA256())
    )
    return key, cert


def chain_of(names: list[str], *, days_left: float = 60.0) -> Chain:
    root_key, root = pki.new_ca("certfan lab chain root")
    int_key, intermediate = intermediate_ca(root_key, root, "certfan lab intermediate")
    other_key, other_root = pki.new_ca("certfan lab other root")
    _, foreign = intermediate_ca(other_key, other_root, "certfan lab intermediate")
    key, leaf = pki.issue(int_key, intermediate, names, dt.timedelta(days=90),
                          left=dt.timedelta(days=days_left))
    der = leaf.public_bytes(serialization.Encoding.DER)
    return Chain(pki.cert_pem(root), pki.cert_pem(intermediate), pki.cert_pem(leaf),
                 pki.key_pem(key), pki.cert_pem(foreign), hashlib.sha256(der).hexdigest())


@contextlib.contextmanager
def served_from_elsewhere(lab: Lab, node: str | Node) -> Iterator[Path]:
    """The node's certfan site points at copies of its certificate outside
    ``live/`` (what serves stays the same certificate); put back afterwards."""
    n = lab.node(node)
    live = n.root / "live" / "media"
    folder = site_dir(n)
    folder.mkdir(mode=0o755, exist_ok=True)
    copies = {}
    for stem in ("fullchain", "privkey"):
        copy = folder / f"elsewhere-{stem}.pem"
        pki.write_private(copy, (live / f"{stem}.pem").read_bytes())
        os.chown(copy, lab.uid, lab.gid)
        copies[stem] = copy
    original = n.site_conf.read_text()
    changed = original.replace(f"{live}/fullchain.pem", str(copies["fullchain"]))
    changed = changed.replace(f"{live}/privkey.pem", str(copies["privkey"]))
    n.site_conf.write_text(changed)
    try:
        reload_nginx(lab, n)
        yield copies["fullchain"]
    finally:
        n.site_conf.write_text(original)
        reload_nginx(lab, n)
        for copy in copies.values():
            copy.unlink(missing_ok=True)
