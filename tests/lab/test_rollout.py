"""Rollout: the fleet policy with small fakes, then the real thing on the lab.

The first part hands ``rollout.push`` a fake ``connect`` and ``prober`` (no
network) to pin the policy down: canary first and alone, bounded concurrency,
halting, rollback on halt, an outcome for every host even when a host thread
raises or hangs. The second part pushes real releases to the lab's nodes over
SSH and checks what nginx serves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Self

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfan import config
from certfan.cli import app as cli
from certfan.config import Endpoint, Host, RolloutPolicy
from certfan.deploy import fleet as rollout
from certfan.deploy import hostrun
from certfan.deploy.ssh import Result
from certfan.errors import ProbeError, SshError
from certfan.state.deploy import DeployState, hosts_behind
from certfan.state.store import Release, Store
from certfan_lab import LabError, pki

# ---------------------------------------------------------------- releases


_CA = pki.new_ca("rollout test CA")


def make_release(store: Store, names: Sequence[str] = ("media.lab.test", "*.lab.test")) -> Release:
    """A new current version of "media", signed by a local CA."""
    ca_key, ca = _CA
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    release = store.save(
        "media",
        key_pem,
        leaf.public_bytes(pem) + ca.public_bytes(pem),
        order_url=None,
        key_type="ec-p256",
    )
    store.activate(release)
    return release


# ---------------------------------------------------------------- fakes


def _der(version: str) -> bytes:
    return f"der of {version}".encode()


class FakeNode:
    """Just enough of a node: a pointer, what nginx serves, and faults by step name."""

    def __init__(self, name: str, target: str | None = "../archive/media/0001-old"):
        self.name = name
        self.target = target
        self.served = Path(target).name if target else None
        self.fail: set[str] = set()  # step names that exit 1
        self.fail_once: set[str] = set()  # step names that exit 1 the first time
        self.raise_on_connect: BaseException | None = None
        self.hang_connect = 0.0
        self.log: list[str] = []


class FakeSession:
    def __init__(self, node: FakeNode, fleet: FakeFleet):
        self.node = node
        self.fleet = fleet

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> Result:
        step = argv[3].removeprefix("certfan-") if argv[0] == "sh" else argv[-1]
        step = {"nginx": "reload", "-t": "test", "unlink": "flip"}.get(step, step)
        self.node.log.append(step)
        if step in self.node.fail or step in self.node.fail_once:
            self.node.fail_once.discard(step)
            return Result(1, b"", f"{step} broke\n".encode())
        if step == "inspect":
            link = (
                f"live=link\ntarget={self.node.target}\n" if self.node.target else "live=missing\n"
            )
            return Result(0, f"root=present\n{link}".encode(), b"")
        if step == "flip":
            self.node.target = argv[6] if len(argv) > 6 else None
        if step == "reload":
            self.node.served = Path(self.node.target).name if self.node.target else None
        return Result(0, b"", b"")

    def close(self) -> None:
        with self.fleet.lock:
            self.fleet.open -= 1


class FakeFleet:
    def __init__(self, names: Sequence[str]):
        self.nodes = {n: FakeNode(n) for n in names}
        self.hosts = [
            Host(name=n, address=f"192.0.2.{i}", root="/srv/le") for i, n in enumerate(names, 1)
        ]
        self.lock = threading.Lock()
        self.open = 0
        self.max_open = 0
        self.order: list[str] = []

    def connect(self, host: Host, *, timeout: float) -> FakeSession:
        node = self.nodes[host.name]
        if node.hang_connect:
            time.sleep(node.hang_connect)
        if node.raise_on_connect is not None:
            raise node.raise_on_connect
        if "connect" in node.fail:
            raise SshError(host.name, "connect refused")
        with self.lock:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
            self.order.append(host.name)
        time.sleep(0.02)  # long enough for concurrent hosts to overlap
        return FakeSession(node, self)

    def prober(self, endpoint: Endpoint, sni: str, timeout: float) -> bytes:
        for host in self.hosts:
            if host.probe == endpoint:
                served = self.nodes[host.name].served
                if served is None:
                    raise ProbeError(str(endpoint), sni, "connection refused")
                return _der(served)
        raise AssertionError(endpoint)


def _fake_release(directory: Path, version: str = "0002-new") -> Release:
    directory.mkdir(exist_ok=True)
    for name in ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem"):
        (directory / name).write_bytes(name.encode())
    now = datetime.now(UTC)
    return Release(
        cert="media",
        version=version,
        path=directory,
        sha256=hashlib.sha256(_der(version)).hexdigest(),
        serial="2",
        names=("media.test",),
        not_before=now,
        not_after=now,
        issuer="CN=x",
        order_url=None,
        key_type="ec-p256",
    )


FAST = RolloutPolicy(connect_timeout=0.2, command_timeout=0.2, verify_timeout=0.3)


@pytest.fixture
def push_fake(tmp_path: Path):
    def push(fleet: FakeFleet, policy: RolloutPolicy = FAST, **kw: object) -> rollout.Report:
        release = _fake_release(tmp_path / "release")
        return rollout.push(
            [(release, fleet.hosts)], policy, connect=fleet.connect, prober=fleet.prober, **kw
        )

    return push


def _results(report: rollout.Report) -> dict[str, str]:
    return {o.host: o.result for o in report.outcomes}


















# ---------------------------------------------------------------- on the lab

ALL_SNIS = ("media.lab.test", "certfan-probe.lab.test", "static.lab.test")


def _sha(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _served(lab, node: str, sni: str = "media.lab.test") -> str:  # type: ignore[no-untyped-def]
    return _sha(lab.served_leaf(node, sni))


def _workers(master: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.add(int(entry))
    return children


def _nginx_pids(lab, node: str) -> tuple[int, frozenset[int]]:  # type: ignore[no-untyped-def]
    master = lab.nginx_master_pid(node)
    return master, frozenset(_workers(master))


def _wait_served(lab, node: str, sha: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Until the node serves ``sha`` and the workers of any earlier reload are gone."""
    deadline = time.monotonic() + timeout
    while _served(lab, node) != sha or len(_nginx_pids(lab, node)[1]) > 1:  # worker_processes 1
        assert time.monotonic() < deadline, f"{node} does not settle on {sha[:12]}"
        time.sleep(0.05)


def _restore_certbot(lab) -> None:  # type: ignore[no-untyped-def]
    """Put every node back on certbot's layout serving the seed certificate."""
    script = """
set -e
cd "$1"
if [ -d live/.media.certbot ]; then
  rm -f live/media && mv -T live/.media.certbot live/media
fi
rm -rf archive/media/certbot-* live/.media.tmp
"""
    for node in lab.default_node_names:
        root = str(lab.node(node).root)
        proc = lab.run_on(node, ["sh", "-c", script, "restore", root])
        assert proc.returncode == 0, proc.stderr
        if _served(lab, node) != lab.seed_sha256:
            assert lab.run_on(node, ["systemctl", "reload", "nginx"]).returncode == 0
        _wait_served(lab, node, lab.seed_sha256)


class Watcher:
    """Probe every node over and over during a rollout: every handshake must succeed
    (the server proved it holds the key of the leaf it sent) with an expected leaf."""

    def __init__(self, lab, allowed: set[str], skip: set[str] | None = None):  # type: ignore[no-untyped-def]
        self.lab = lab
        self.allowed = allowed
        self.skip = skip if skip is not None else set()
        self.seen: dict[str, set[str]] = {}
        self.problems: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for node in self.lab.default_node_names:
                if node in self.skip:
                    continue
                try:
                    sha = _sha(self.lab.served_leaf(node, "media.lab.test", timeout=2.0))
                except (OSError, LabError) as exc:
                    if node not in self.skip:
                        self.problems.append(f"{node}: handshake failed: {exc}")
                    continue
                self.count += 1
                self.seen.setdefault(node, set()).add(sha)
                if sha not in self.allowed:
                    self.problems.append(f"{node}: served unexpected leaf {sha[:12]}")
            self._stop.wait(0.01)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()
        assert self.count > 0
        assert not self.problems, self.problems[:5]


@pytest.fixture
def lab_push(lab, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A certfan config for the lab with its own state dir, and helpers around it."""

    class LabPush:
        state = tmp_path / "state"
        store = Store(tmp_path / "state")
        nodes = tuple(lab.default_node_names)

        def __init__(self) -> None:
            self.config_path = self.write()

        def write(self, **rollout_overrides: object) -> Path:
            policy = {"connect_timeout": 2.0, "command_timeout": 5.0, "verify_timeout": 5.0}
            policy.update(rollout_overrides)
            return lab.write_config(tmp_path / "certfan.toml", self.state, rollout=policy)

        @property
        def cfg(self) -> config.Config:
            return config.load(self.config_path)

        def release(self) -> Release:
            return make_release(self.store)

        def cli(self, *args: str) -> int:
            root = logging.getLogger()
            handlers, level = root.handlers[:], root.level
            try:
                return cli.main(["-c", str(self.config_path), "push", *args])
            finally:  # main() points logging at this test's captured stderr; undo that
                root.handlers[:], root.level = handlers, level

        def push(self, **kw: object) -> rollout.Report:
            cfg = self.cfg
            targets = rollout.select_targets(cfg, self.store)
            return rollout.push(targets, cfg.rollout, deploy_state=DeployState(self.state), **kw)

        def converge(self) -> Release:
            """Every node on a fresh release (the starting point of most tests)."""
            release = self.release()
            report = self.push()
            assert report.ok, report
            for node in self.nodes:
                _wait_served(lab, node, release.sha256)
            return release

    return LabPush()


def _json_report(capsys) -> dict:  # type: ignore[no-untyped-def]
    captured = capsys.readouterr()
    assert captured.out.startswith("{"), captured.err
    return json.loads(captured.out)


@pytest.mark.lab
def test_push_converts_certbot_nodes_and_serves_the_new_leaf_everywhere(lab, lab_push, capsys):
    _restore_certbot(lab)
    release = lab_push.release()
    with Watcher(lab, {lab.seed_sha256, release.sha256}):
        code = lab_push.cli("--json")
    doc = _json_report(capsys)
    assert code == 0, doc
    assert {o["host"]: o["result"] for o in doc["outcomes"]} == dict.fromkeys(
        lab_push.nodes, "deployed"
    )
    for node in lab_push.nodes:
        for sni in ALL_SNIS:
            assert _served(lab, node, sni) == release.sha256, (node, sni)
        root = lab.node(node).root
        assert os.readlink(root / "live" / "media") == f"../archive/media/{release.version}"
        key = root / "archive" / "media" / release.version / "privkey.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # certbot's directory is kept aside and its content copied for rollback.
        assert (root / "live" / ".media.certbot").is_dir()
        assert _sha_of_pem(root / "archive" / "media" / "certbot-1" / "cert.pem") == lab.seed_sha256

    # A second push changes nothing: no upload, no flip, no reload.
    for node in lab_push.nodes:
        _wait_served(lab, node, release.sha256)
    pids = {node: _nginx_pids(lab, node) for node in lab_push.nodes}
    assert lab_push.cli("--json") == 0
    doc = _json_report(capsys)
    assert {o["result"] for o in doc["outcomes"]} == {"unchanged"}
    assert {node: _nginx_pids(lab, node) for node in lab_push.nodes} == pids
    assert hosts_behind(lab_push.cfg, lab_push.store, DeployState(lab_push.state)) == {}


def _sha_of_pem(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return _sha(cert.public_bytes(serialization.Encoding.DER))


@pytest.mark.lab
def test_host_option_changes_only_that_node(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    others = [n for n in lab_push.nodes if n != "cdn-fremont-1"]
    pids = {node: _nginx_pids(lab, node) for node in others}
    code = lab_push.cli("--host", "cdn-fremont-1")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "cdn-fremont-1" in out and "deployed" in out and "sally" not in out
    assert _served(lab, "cdn-fremont-1") == new.sha256
    for node in others:
        assert _served(lab, node) == old.sha256
        assert os.readlink(lab.node(node).root / "live" / "media").endswith(old.version)
    assert {node: _nginx_pids(lab, node) for node in others} == pids


@pytest.mark.lab
def test_broken_nginx_keeps_its_old_certificate_and_halts_the_rollout(lab, lab_push, capsys):
    # From certbot's layout, so rolling back returns the nodes to certbot's certificate.
    _restore_certbot(lab)
    old_sha = lab.seed_sha256
    new = lab_push.release()
    before = _nginx_pids(lab, "sally")
    with lab.faults.break_nginx("sally"), Watcher(lab, {old_sha, new.sha256}):
        code = lab_push.cli("--json")
        assert _nginx_pids(lab, "sally") == before  # never reloaded onto the broken config
    doc = _json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 1, doc
    assert doc["halted_by"] == {"host": "sally", "cert": "media", "step": "test"}
    sally = results["sally"]
    assert sally["result"] == "failed" and sally["failed_step"] == "test"
    assert "lab_broken_directive" in sally["output_tail"] and sally["rollback"] == "ok"
    # The canary went through and was rolled back when sally halted the rollout; so was
    # any other node that finished; none is left on the new version.
    assert results["cdn-frankfurt-1"]["result"] == "rolled back"
    for node in lab_push.nodes:
        assert results[node]["result"] in ("rolled back", "failed", "skipped: halted")
        assert _served(lab, node) == old_sha
        if results[node]["result"] != "skipped: halted":
            assert (
                os.readlink(lab.node(node).root / "live" / "media") == "../archive/media/certbot-1"
            )


@pytest.mark.lab
def test_unreachable_and_impostor_nodes_are_reported_and_caught_up_later(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    lab_push.write(failure_budget=2)
    known_hosts = lab.known_hosts.read_bytes()
    with (
        lab.faults.cut("esme"),
        lab.faults.change_host_key("sally"),
        Watcher(lab, {old.sha256, new.sha256}, skip={"esme"}),
    ):
        code = lab_push.cli("--json")
    doc = _json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 3, doc  # partial: some nodes serve the version, some do not
    assert results["cdn-frankfurt-1"]["result"] == results["cdn-fremont-1"]["result"] == "deployed"
    sally, esme = results["sally"], results["esme"]
    assert sally["result"] == "failed" and sally["failed_step"] == "connect"
    assert "does not match known_hosts" in sally["error"] and "MITM" in sally["error"]
    assert esme["result"] == "failed" and esme["failed_step"] == "connect"
    assert "timed out" in esme["error"]
    assert lab.known_hosts.read_bytes() == known_hosts  # never trusted, never added
    assert _served(lab, "sally") == old.sha256 and _served(lab, "esme") == old.sha256

    state = DeployState(lab_push.state)
    assert hosts_behind(lab_push.cfg, lab_push.store, state) == {"media": ("sally", "esme")}
    assert "timed out" in (state.host("media", "esme").last_error or "")
    # Healed: the next run brings the two up to date and leaves the others alone.
    assert lab_push.cli("--json") == 0
    doc = _json_report(capsys)
    assert {o["host"]: o["result"] for o in doc["outcomes"]} == {
        "cdn-frankfurt-1": "unchanged",
        "cdn-fremont-1": "unchanged",
        "sally": "deployed",
        "esme": "deployed",
    }
    assert hosts_behind(lab_push.cfg, lab_push.store, state) == {}


@pytest.mark.lab
def test_node_cut_mid_rollout_is_reported_and_gets_the_version_next_run(lab, lab_push):
    old = lab_push.converge()
    new = lab_push.release()
    lab_push.config_path = lab_push.write(command_timeout=3.0)
    cut: set[str] = set()
    faults = []

    def on_event(event: hostrun.Event) -> None:
        if event.host == "esme" and event.step == "flip" and event.status == "start" and not cut:
            cut.add("esme")
            faults.append(lab.faults.cut("esme"))

    try:
        with Watcher(lab, {old.sha256, new.sha256}, skip=cut):
            report = lab_push.push(on_event=on_event)
    finally:
        for fault in faults:
            fault.heal()
    results = {o.host: o for o in report.outcomes}
    esme = results["esme"]
    assert cut and esme.result == hostrun.FAILED and esme.failed_step == "flip"
    assert "timed out" in esme.error and "ROLLBACK failed" in esme.error
    assert report.halted_by is not None and report.halted_by.host == "esme"
    for node in ("cdn-frankfurt-1", "cdn-fremont-1", "sally"):
        assert results[node].result == hostrun.ROLLED_BACK, results[node]
        assert _served(lab, node) == old.sha256
    assert _served(lab, "esme") == old.sha256  # the flip never reached it

    again = lab_push.push()
    assert again.ok and {o.result for o in again.outcomes} == {hostrun.DEPLOYED}
    for node in lab_push.nodes:
        assert _served(lab, node) == new.sha256


@pytest.mark.lab
def test_full_or_readonly_disk_fails_the_upload_and_changes_nothing(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    lab_push.write(failure_budget=2)
    with lab.faults.fill_disk("sally"), lab.faults.make_readonly("esme"):
        code = lab_push.cli("--json")
    doc = _json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 3, doc
    assert results["sally"]["failed_step"] == results["esme"]["failed_step"] == "upload"
    assert "No space left on device" in results["sally"]["output_tail"]
    assert "Read-only file system" in results["esme"]["output_tail"]
    for node in ("sally", "esme"):
        assert results[node]["rollback"] is None  # nothing was flipped
        assert _served(lab, node) == old.sha256
        archive = lab.node(node).root / "archive" / "media"
        assert not [p.name for p in archive.iterdir() if p.name.startswith(".")]
        assert not (archive / new.version).exists()


@pytest.mark.lab
def test_slow_link_still_deploys_within_the_deadlines(lab, lab_push):
    lab_push.converge()
    new = lab_push.release()
    with lab.faults.add_latency("sally", 50):
        report = lab_push.push()
    assert report.ok, report
    by_host = {o.host: o for o in report.outcomes}
    fast = max(by_host[n].seconds for n in lab_push.nodes if n != "sally")
    assert by_host["sally"].seconds > fast  # the latency was really there
    for node in lab_push.nodes:
        assert _served(lab, node) == new.sha256


@pytest.mark.lab
def test_dry_run_prints_the_plan_and_touches_nothing(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    pids = {node: _nginx_pids(lab, node) for node in lab_push.nodes}
    assert lab_push.cli("--dry-run") == 0
    out = capsys.readouterr().out
    assert "cdn-frankfurt-1 (canary)" in out and "dry run: nothing was changed" in out
    for word in ("upload", "flip", "test: nginx -t", "reload: systemctl reload nginx", "prove"):
        assert word in out
    for node in lab_push.nodes:
        root = lab.node(node).root
        assert os.readlink(root / "live" / "media").endswith(old.version)
        assert not (root / "archive" / "media" / new.version).exists()
        assert _served(lab, node) == old.sha256
    assert {node: _nginx_pids(lab, node) for node in lab_push.nodes} == pids


@pytest.mark.lab
def test_unknown_host_is_a_usage_error(lab_push, capsys):
    lab_push.release()
    assert lab_push.cli("--host", "cdn-nowhere-9") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cdn-nowhere-9" in err


@pytest.mark.lab
def test_push_refuses_to_run_while_another_run_holds_the_lock(lab_push, capsys):
    from certfan.state import lock

    lab_push.release()
    with lock.hold(lab_push.state, "renew"):
        assert lab_push.cli() == 75
    assert "another certfan run holds the lock" in capsys.readouterr().err
