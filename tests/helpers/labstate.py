"""What the lab looked like before a reliability case, a watcher of what the nodes
serve during it, and the four invariants every case ends with (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfan import config
from certfan.issue import crypto, dns01
from certfan.state.deploy import DeployState
from certfan.state.store import Release, Store
from certfan_lab import Lab, LabError

CERT = "media"
# Every name DNS-01 for the lab's certificates writes to (CNAME targets included).
CHALLENGE_NAMES = (
    "_acme-challenge.media.lab.test",
    "_acme-challenge.lab.test",
    "_acme-challenge.static.lab.test",
    "static.delegated.test",
    "chain.delegated.test",
)
FAST_ROLLOUT = {"connect_timeout": 1.5, "command_timeout": 4.0, "verify_timeout": 4.0}
_ISSUED = re.compile(r"Issued certificate serial ([0-9a-fA-F]+) for order")
_FAILED_RELOAD = r"\[(emerg|alert|crit)\] {pid}#"


def _sha(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def spki_of_cert(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_of_key(pem: bytes) -> bytes:
    return crypto.load_key(pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---------------------------------------------------------------- what the lab looked like


@dataclass
class Baseline:
    """The lab before a case: what the invariants compare against."""

    pebble_offset: int
    error_log_offsets: dict[str, int]
    masters: dict[str, int]
    txt: dict[str, set[str]]
    served: dict[str, str]  # node -> sha256 of the leaf it served

    @classmethod
    def take(cls, lab: Lab) -> Baseline:
        nodes = lab.default_node_names
        return cls(
            pebble_offset=_size(lab.log_dir / "pebble.log"),
            error_log_offsets={n: _size(_error_log(lab, n)) for n in nodes},
            masters={n: lab.nginx_master_pid(n) for n in nodes},
            txt=txt_snapshot(lab),
            served={n: _sha(lab.served_leaf(n, "media.lab.test")) for n in nodes},
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _error_log(lab: Lab, node: str) -> Path:
    return lab.node(node).nginx_prefix / "logs" / "error.log"


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def txt_snapshot(lab: Lab) -> dict[str, set[str]]:
    return {name: set(lab.dns_query(name, "TXT")) for name in CHALLENGE_NAMES}


def pebble_serials_since(lab: Lab, offset: int) -> list[int]:
    """Serials Pebble issued since ``offset`` of its log."""
    text = _read_from(lab.log_dir / "pebble.log", offset)
    return [int(m.group(1), 16) for m in _ISSUED.finditer(text)]


# ---------------------------------------------------------------- watching the nodes


class Watcher:
    """Handshakes with every node, over and over, while a case runs.

    A completed handshake proves the node holds the key of the leaf it sent.
    Every one must complete, except with nodes in ``skip`` (cut off on purpose);
    what was seen is checked against the stored versions at the end.
    """

    def __init__(self, lab: Lab, skip: set[str] | None = None, *,
                 allowed: set[str] | None = None, interval: float = 0.03):
        self.lab = lab
        self.skip = skip if skip is not None else set()
        self.allowed = allowed  # leaves that may be served; None: checked later instead
        self.interval = interval
        self.seen: dict[str, set[str]] = {}
        self.problems: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="watcher")

    def _loop(self) -> None:
        while not self._stop.is_set():
            for node in self.lab.default_node_names:
                if node in self.skip:
                    continue
                try:
                    sha = _sha(self.lab.served_leaf(node, "media.lab.test", timeout=2.0))
                except (OSError, LabError) as exc:
                    if node not in self.skip:  # it may have been cut while we asked
                        self.problems.append(f"{node}: handshake failed: {exc}")
                    continue
                self.count += 1
                self.seen.setdefault(node, set()).add(sha)
                if self.allowed is not None and sha not in self.allowed:
                    self.problems.append(f"{node}: served unexpected leaf {sha[:12]}")
            self._stop.wait(self.interval)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the watcher hung"


def assert_invariants(
    lab: Lab,
    cfg: config.Config,
    store: Store,
    expected_version: str | None,
    issued_before: set[str],
    *,
    baseline: Baseline,
    issued: int,
    watcher: Watcher | None = None,
) -> None:
    """The four invariants of docs/reliability.md, after the healing run."""
    current = store.current(CERT)
    assert current is not None, "no current version"
    if expected_version is not None:
        assert current.version == expected_version, (current.version, expected_version)
    hosts = cfg.certificates[CERT].hosts
    _assert_nodes_serve(lab, cfg, current, hosts, baseline)
    _assert_watched(watcher, store, baseline)
    _assert_issuance(lab, store, current, issued_before, baseline, issued)
    _assert_deploy_state(cfg, current, hosts)
    _assert_dns_clean(lab, cfg, baseline)
    _assert_state_readable(cfg.state_dir, store)


def _assert_nodes_serve(lab: Lab, cfg: config.Config, current: Release,
                        hosts: Sequence[str], baseline: Baseline) -> None:
    """(1) and (2): the served leaf matches the key the pointer holds; config tests; no
    failed reconfiguration; every node on the current version, file for file."""
    snis = dict.fromkeys(["media.lab.test", *(n.replace("*", "certfan-probe") for n in
                                              current.names)])
    for node in hosts:
        root = Path(cfg.hosts[node].root)
        live = root / "live" / CERT
        assert live.is_symlink(), f"{node}: live/{CERT} is not certfan's pointer"
        assert os.readlink(live) == f"../archive/{CERT}/{current.version}", node
        key_pem = (live / "privkey.pem").read_bytes()
        for sni in snis:
            der = lab.served_leaf(node, sni)
            assert spki_of_cert(der) == spki_of_key(key_pem), f"{node} ({sni}): key mismatch"
            assert _sha(der) == current.sha256, f"{node} ({sni}) does not serve {current.version}"
        for name in ("privkey.pem", "fullchain.pem", "cert.pem", "chain.pem"):
            assert (live / name).read_bytes() == current.file(name).read_bytes(), (node, name)
        test = lab.run_on(node, ["nginx", "-t"])
        assert test.returncode == 0, f"{node}: nginx -t: {test.stderr}"
        master = lab.nginx_master_pid(node)
        assert master == baseline.masters[node], f"{node}: nginx master restarted"
        log = _read_from(_error_log(lab, node), baseline.error_log_offsets[node])
        failed = re.findall(_FAILED_RELOAD.format(pid=master) + ".*", log)
        assert not failed, f"{node}: nginx reloaded onto a broken config: {failed}"
        for directory in (root / "archive" / CERT, root / "live"):
            stray = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
            assert not stray, f"{node}: leftovers in {directory}: {stray}"


def _assert_watched(watcher: Watcher | None, store: Store, baseline: Baseline) -> None:
    if watcher is None:
        return
    assert watcher.count > 0, "the watcher made no handshake"
    assert not watcher.problems, watcher.problems[:5]
    known = {r.sha256 for r in store.versions(CERT)} | set(baseline.served.values())
    for node, seen in watcher.seen.items():
        assert seen <= known, f"{node} served a leaf that is no stored version: {seen - known}"


def _assert_issuance(lab: Lab, store: Store, current: Release, issued_before: set[str],
                     baseline: Baseline, issued: int) -> None:
    """(2) nothing issued is lost, nothing needlessly reissued."""
    serials = pebble_serials_since(lab, baseline.pebble_offset)
    assert len(serials) == issued, f"the CA issued {len(serials)} certificate(s), expected {issued}"
    new = [r for r in store.versions(CERT) if r.version not in issued_before]
    assert sorted(int(r.serial, 16) for r in new) == sorted(serials), (
        "stored versions and issued certificates differ: "
        f"{[r.version for r in new]} vs serials {[format(s, 'x') for s in serials]}")
    assert issued == 0 or current in new


def _assert_deploy_state(cfg: config.Config, current: Release, hosts: Sequence[str]) -> None:
    recorded = DeployState(cfg.state_dir).get(CERT)
    for host in hosts:
        entry = recorded.get(host)
        assert entry is not None and entry.deployed == current.version, (host, entry)
        assert entry.last_error is None, (host, entry)


def _assert_dns_clean(lab: Lab, cfg: config.Config, baseline: Baseline) -> None:
    """(3) every TXT value certfan added is gone, and it knows of none pending."""
    assert txt_snapshot(lab) == baseline.txt
    pending = Path(cfg.state_dir) / dns01.PENDING_FILE
    if pending.exists():
        assert json.loads(pending.read_text()) == [], pending.read_text()


def _assert_state_readable(state_dir: Path, store: Store) -> None:
    """(4) every file parses, every version is whole, nothing half-written is left."""
    for path in state_dir.rglob("*"):
        assert ".tmp" not in path.name, f"left over: {path}"
        if path.suffix == ".json":
            json.loads(path.read_text())
    for release in store.versions(CERT):
        store._check_complete(release)
        meta = store.read_meta(release)
        assert meta["version"] == release.version
        assert crypto.key_matches_cert(release.file("privkey.pem").read_bytes(),
                                       release.file("cert.pem").read_bytes())
    DeployState(state_dir).get(CERT)
