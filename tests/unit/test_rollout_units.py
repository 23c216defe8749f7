"""Rollout: the fleet policy with small fakes, then the real thing on the lab.

The first part hands ``rollout.push`` a fake ``connect`` and ``prober`` (no
network) to pin the policy down: canary first and alone, bounded concurrency,
halting, rollback on halt, an outcome for every host even when a host thread
raises or hangs. The second part pushes real releases to the lab's nodes over
SSH and checks what nginx serves.
"""

from __future__ import annotations

import dataclasses
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


def test_canary_goes_first_and_alone_then_bounded_concurrency(push_fake):
    fleet = FakeFleet([f"h{i}" for i in range(1, 8)])
    events: list[hostrun.Event] = []
    report = push_fake(
        fleet, dataclasses.replace(FAST, canary=2, concurrency=3), on_event=events.append
    )
    assert report.ok and set(_results(report).values()) == {hostrun.DEPLOYED}
    assert fleet.order[:2] == ["h1", "h2"]
    assert fleet.max_open == 3
    done = [e.host for e in events if e.step == "done"]
    assert done[:2] == ["h1", "h2"] and sorted(done) == sorted(n.name for n in fleet.hosts)
    # h2 (a canary) finished before any non-canary connected.
    first_rest = min(i for i, e in enumerate(events) if e.host not in ("h1", "h2"))
    last_canary = max(i for i, e in enumerate(events) if e.host == "h2")
    assert last_canary < first_rest


def test_failure_halts_skips_the_rest_and_rolls_back_the_flipped(push_fake):
    fleet = FakeFleet(["h1", "h2", "h3", "h4"])
    fleet.nodes["h2"].fail.add("test")
    report = push_fake(fleet, dataclasses.replace(FAST, concurrency=1))
    assert _results(report) == {
        "h1": hostrun.ROLLED_BACK,
        "h2": hostrun.FAILED,
        "h3": hostrun.SKIPPED,
        "h4": hostrun.SKIPPED,
    }
    h2 = report.outcomes[1]
    assert h2.failed_step == "test" and h2.rollback == "ok" and "test broke" in h2.output_tail
    assert report.halted_by == h2
    # h2 flipped back without a reload; h1 flipped back, tested, reloaded, proven.
    assert fleet.nodes["h2"].log == ["inspect", "upload", "flip", "test", "flip"]
    assert fleet.nodes["h1"].served == "0001-old" and fleet.nodes["h1"].target.endswith("0001-old")
    assert fleet.nodes["h3"].log == [] and fleet.nodes["h4"].log == []


def test_no_rollback_on_halt_when_disabled_and_budget_allows_failures(push_fake):
    fleet = FakeFleet(["h1", "h2", "h3", "h4"])
    fleet.nodes["h2"].fail.add("connect")
    report = push_fake(fleet, dataclasses.replace(FAST, failure_budget=1, concurrency=1))
    assert _results(report)["h2"] == hostrun.FAILED and report.halted_by is None
    assert [o.result for o in report.outcomes].count(hostrun.DEPLOYED) == 3

    fleet = FakeFleet(["h1", "h2", "h3"])
    fleet.nodes["h2"].fail_once.add("reload")
    report = push_fake(fleet, dataclasses.replace(FAST, rollback_on_halt=False, concurrency=1))
    assert _results(report) == {"h1": hostrun.DEPLOYED, "h2": hostrun.FAILED, "h3": hostrun.SKIPPED}
    # h2 failed at its reload (which may have happened): flip back, test, reload, prove old.
    assert fleet.nodes["h2"].log == [
        "inspect",
        "upload",
        "flip",
        "test",
        "reload",
        "flip",
        "test",
        "reload",
    ]
    assert report.outcomes[1].rollback == "ok" and report.outcomes[1].serving == "0001-old"


def test_failed_prove_rolls_back_and_reports_the_step(push_fake):
    fleet = FakeFleet(["h1"])
    node = fleet.nodes["h1"]
    real_reload_served = FakeSession.run

    def never_serves_new(self, argv, *, timeout, stdin=None):  # type: ignore[no-untyped-def]
        result = real_reload_served(self, argv, timeout=timeout, stdin=stdin)
        if self.node.served == "0002-new":
            self.node.served = "0001-old"  # nginx kept the old certificate
        return result

    FakeSession.run = never_serves_new  # type: ignore[method-assign]
    try:
        report = push_fake(fleet)
    finally:
        FakeSession.run = real_reload_served  # type: ignore[method-assign]
    (outcome,) = report.outcomes
    assert outcome.result == hostrun.FAILED and outcome.failed_step == "prove"
    assert outcome.rollback == "ok" and outcome.serving == "0001-old"
    assert node.log == ["inspect", "upload", "flip", "test", "reload", "flip", "test", "reload"]


def test_every_host_gets_an_outcome_even_when_its_thread_raises_or_hangs(push_fake):
    fleet = FakeFleet(["h1", "h2", "h3", "h4"])
    fleet.nodes["h2"].raise_on_connect = RuntimeError("bug in a collaborator")
    fleet.nodes["h3"].hang_connect = 4.0  # past the host deadline below
    policy = RolloutPolicy(
        failure_budget=3,
        concurrency=3,
        connect_timeout=0.1,
        command_timeout=0.1,
        verify_timeout=0.1,
    )
    assert rollout.host_deadline(policy) < 3.0
    started = time.monotonic()
    report = push_fake(fleet, policy)
    assert time.monotonic() - started < 4.0  # nobody waited for the hung thread
    results = {o.host: o for o in report.outcomes}
    assert [o.host for o in report.outcomes] == ["h1", "h2", "h3", "h4"]
    assert results["h2"].result == hostrun.FAILED and "internal error" in results["h2"].error
    assert results["h3"].result == hostrun.FAILED and "no result within" in results["h3"].error
    assert results["h1"].ok and results["h4"].ok


def test_a_host_not_flipped_by_this_rollout_is_not_moved_back_on_halt(push_fake):
    fleet = FakeFleet(["h1", "h2"])
    # h1's pointer is already at the version (an earlier run stopped after its flip).
    fleet.nodes["h1"].target = "../archive/media/0002-new"
    fleet.nodes["h2"].fail.add("test")
    report = push_fake(fleet)
    assert _results(report) == {"h1": hostrun.DEPLOYED, "h2": hostrun.FAILED}
    assert fleet.nodes["h1"].log == ["inspect", "upload", "test", "reload"]
    assert fleet.nodes["h1"].target == "../archive/media/0002-new"


def test_already_serving_is_left_alone(push_fake):
    fleet = FakeFleet(["h1", "h2"])
    fleet.nodes["h1"].target = "../archive/media/0002-new"
    fleet.nodes["h1"].served = "0002-new"
    # h2's pointer is there but nginx was never reloaded: it is not "serving".
    fleet.nodes["h2"].target = "../archive/media/0002-new"
    report = push_fake(fleet)
    assert _results(report) == {"h1": hostrun.UNCHANGED, "h2": hostrun.DEPLOYED}
    assert fleet.nodes["h1"].log == ["inspect"]
    assert fleet.nodes["h2"].log == ["inspect", "upload", "test", "reload"]


def test_deploy_state_and_hosts_behind(tmp_path):
    store = Store(tmp_path)
    release = make_release(store, ["media.example.test"])
    cfg = config.Config(
        path=tmp_path / "c.toml",
        state_dir=tmp_path,
        acme=config.AcmeConfig("https://ca"),
        dns=config.DnsConfig(),
        rollout=RolloutPolicy(),
        hosts={n: Host(name=n, address="192.0.2.1") for n in ("a", "b", "c")},
        certificates={
            "media": config.Certificate("media", ("media.example.test",), hosts=("a", "b", "c"))
        },
    )
    state = DeployState(tmp_path)
    assert hosts_behind(cfg, store, state) == {"media": ("a", "b", "c")}
    state.set_desired("media", ["a", "b", "c"], release.version)
    state.record("media", "a", deployed=release.version)
    state.record("media", "b", error="connect: timed out")
    assert hosts_behind(cfg, store, state) == {"media": ("b", "c")}
    b = state.host("media", "b")
    assert b.desired == release.version and b.deployed is None and b.last_error
    doc = json.loads((tmp_path / "deploy" / "media.json").read_text())
    assert doc["hosts"]["a"]["deployed"] == release.version
    assert stat.S_IMODE((tmp_path / "deploy" / "media.json").stat().st_mode) == 0o600


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




def _sha_of_pem(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return _sha(cert.public_bytes(serialization.Encoding.DER))


















