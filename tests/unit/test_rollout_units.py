"""The fleet policy, on local stand-ins for nodes (no root, no network).

Each node is a directory: the real DEPLOY script runs on it with ``sh`` (a
session that runs argv locally instead of over SSH), its "nginx" is a config
test that fails while ``broken`` exists and a reload that copies the live
fullchain to ``served``, and the prober reads ``served``. What is asserted is
what each node's live pointer names and serves afterwards.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import ssl
import subprocess
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certfan.config import Endpoint, Host, RolloutPolicy
from certfan.deploy import fleet, hostrun
from certfan.deploy.model import Event, Failure, Hold, Result
from certfan.errors import ProbeError, SshError
from certfan.state.deploy import DeployState
from certfan.state.store import Release

POLICY = RolloutPolicy(connect_timeout=1.0, command_timeout=5.0, verify_timeout=1.0)
OLD, NEW = "0001-aaaaaaaaaaaa", "0002-bbbbbbbbbbbb"
FILES = ("privkey.pem", "fullchain.pem", "cert.pem", "chain.pem")

_TEST = 'test ! -e "$0/broken" || { echo "broken config" >&2; exit 1; }'
_RELOAD = (
    'if [ -e "$0/hold" ]; then i=0; while [ ! -e "$0/go" ] && [ $i -lt 200 ]; do '
    'sleep 0.05; i=$((i+1)); done; fi; '
    'cp "$0/root/live/media/fullchain.pem" "$0/served" && echo x >> "$0/reloads"'
)


def _pem(version: str) -> bytes:
    return (b"-----BEGIN CERTIFICATE-----\n" + base64.b64encode(f"der of {version}".encode())
            + b"\n-----END CERTIFICATE-----\n")


def _sha(version: str) -> str:
    return hashlib.sha256(f"der of {version}".encode()).hexdigest()


def _files(version: str) -> dict[str, bytes]:
    return {"privkey.pem": f"key {version}\n".encode(), "fullchain.pem": _pem(version),
            "cert.pem": _pem(version), "chain.pem": b""}


def _release(base: Path, version: str) -> Release:
    directory = base / "certs" / "media" / "versions" / version
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in _files(version).items():
        (directory / name).write_bytes(data)
    now = datetime.now(UTC)
    return Release(cert="media", version=version, path=directory, sha256=_sha(version),
                   serial="2", names=("media.test", "*.media.test"), not_before=now,
                   not_after=now, issuer="CN=x", order_url=None, key_type="ec-p256")


class Node:
    def __init__(self, base: Path, name: str, index: int):
        self.dir = base / name
        self.root = self.dir / "root"
        self.host = Host(name=name, address=f"192.0.2.{index}", root=str(self.root),
                         config_test=("sh", "-c", _TEST, str(self.dir)),
                         reload=("sh", "-c", _RELOAD, str(self.dir)), probe_port=1)
        self.unreachable = False
        self.raise_on_connect: BaseException | None = None
        version = self.root / "archive" / "media" / OLD
        version.mkdir(parents=True)
        for name_, data in _files(OLD).items():
            (version / name_).write_bytes(data)
        (self.root / "live").mkdir()
        (self.root / "live" / "media").symlink_to(f"../archive/media/{OLD}")
        (self.dir / "served").write_bytes(_pem(OLD))

    def live(self) -> str:
        return Path(os.readlink(self.root / "live" / "media")).name

    def serves(self) -> str:
        der = ssl.PEM_cert_to_DER_cert((self.dir / "served").read_text())
        return {_sha(OLD): OLD, _sha(NEW): NEW}.get(hashlib.sha256(der).hexdigest(), "?")

    def reloads(self) -> int:
        path = self.dir / "reloads"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def staged(self, version: str) -> bool:
        return (self.root / "archive" / "media" / version / "privkey.pem").exists()


class LocalSession:
    """Runs argv on this machine, as sshd would run it on the node."""

    def __init__(self, fleet_: LocalFleet):
        self.fleet = fleet_

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
            hold: Hold | None = None) -> Result:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        out = b""
        try:
            if hold is not None:  # stdin, then the answer once stdout shows the marker
                proc.stdin.write(stdin or b"")
                proc.stdin.flush()
                while hold[0] not in out and (line := proc.stdout.readline()):
                    out += line
                if hold[0] in out:
                    proc.stdin.write(hold[1](out))
                proc.stdin.close()
                proc.stdin = None  # closed: communicate() must not flush it
                rest, err = proc.communicate(timeout=timeout)
            else:
                rest, err = proc.communicate(stdin or b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, err = proc.communicate()
            return Result(-1, out + rest, err, lost="no end in time")
        except BrokenPipeError:
            rest, err = proc.communicate()
        return Result(proc.returncode, out + rest, err)

    def close(self) -> None:
        with self.fleet.lock:
            self.fleet.open -= 1


class LocalFleet:
    def __init__(self, base: Path, names: Sequence[str]):
        self.nodes = {n: Node(base, n, i) for i, n in enumerate(names, 1)}
        self.hosts = [node.host for node in self.nodes.values()]
        self.lock = threading.Lock()
        self.open = self.max_open = 0
        self.connects: list[str] = []

    def connect(self, host: Host, *, timeout: float) -> LocalSession:
        node = self.nodes[host.name]
        if node.raise_on_connect is not None:
            raise node.raise_on_connect
        if node.unreachable:
            raise SshError(host.name, f"connect to {host.address}:22 timed out after {timeout:g}s")
        with self.lock:
            self.open += 1
            self.max_open = max(self.max_open, self.open)
            self.connects.append(host.name)
        return LocalSession(self)

    def prober(self, endpoint: Endpoint, sni: str, timeout: float) -> bytes:
        for node in self.nodes.values():
            if node.host.probe == endpoint:
                return ssl.PEM_cert_to_DER_cert((node.dir / "served").read_text())
        raise ProbeError(str(endpoint), sni, "connection refused")


@pytest.fixture
def lab(tmp_path: Path):  # type: ignore[no-untyped-def]
    class Setup:
        release = _release(tmp_path / "state", NEW)

        def fleet(self, n: int = 4) -> LocalFleet:
            return LocalFleet(tmp_path / "nodes", [f"h{i}" for i in range(1, n + 1)])

        def push(self, f: LocalFleet, policy: RolloutPolicy = POLICY,
                 **kw: object) -> fleet.Report:
            return fleet.push([(self.release, f.hosts)], policy, connect=f.connect,
                              prober=f.prober, **kw)  # type: ignore[arg-type]

    return Setup()


def _results(report: fleet.Report) -> dict[str, str]:
    return {o.host: o.result.value for o in report.outcomes}


def test_canary_is_proven_while_the_others_stage_then_they_only_flip(lab) -> None:
    f = lab.fleet(5)
    canary = f.nodes["h1"]
    (canary.dir / "hold").touch()  # its reload waits until every other host has staged
    events: list[Event] = []
    staged: set[str] = set()

    def on_event(event: Event) -> None:
        events.append(event)
        if event.step == "upload" and event.status == "ok" and event.host != "h1":
            staged.add(event.host)
            if len(staged) == 4:
                (canary.dir / "go").touch()

    report = lab.push(f, on_event=on_event)
    assert set(_results(report).values()) == {"deployed"}, report
    assert staged == {"h2", "h3", "h4", "h5"}
    proven = next(i for i, e in enumerate(events) if e.host == "h1" and e.step == "prove"
                  and e.status == "ok")
    flips = [i for i, e in enumerate(events) if e.host != "h1" and e.step == "flip"]
    assert flips and min(flips) > proven  # nothing live moved before the canary was proven
    for node in f.nodes.values():
        assert node.live() == NEW and node.serves() == NEW and node.reloads() == 1


def test_concurrency_bounds_the_open_connections(lab) -> None:
    f = lab.fleet(6)
    report = lab.push(f, dataclasses.replace(POLICY, concurrency=2))
    assert report.ok and f.max_open <= 2


def test_a_failing_canary_leaves_every_live_pointer_where_it_was(lab) -> None:
    f = lab.fleet(4)
    (f.nodes["h1"].dir / "broken").touch()
    report = lab.push(f)
    results = {o.host: o for o in report.outcomes}
    assert results["h1"].result is hostrun.FAILED and results["h1"].failed_step == "test"
    assert results["h1"].failure is Failure.REJECTED and results["h1"].rollback == "ok"
    assert report.halted_by is not None and report.halted_by.host == "h1"
    for name in ("h2", "h3", "h4"):
        assert results[name].result is hostrun.SKIPPED
        assert f.nodes[name].staged(NEW)  # staged, left for prune
    for node in f.nodes.values():
        assert node.live() == OLD and node.serves() == OLD and node.reloads() == 0


def test_an_unreachable_canary_hands_over_and_nothing_is_rolled_back(lab) -> None:
    f = lab.fleet(4)
    f.nodes["h1"].unreachable = True
    report = lab.push(f)
    results = {o.host: o for o in report.outcomes}
    assert results["h1"].failure is Failure.UNREACHABLE and results["h1"].failed_step == "connect"
    assert report.halted_by is None
    assert _results(report) == {"h1": "failed", "h2": "deployed", "h3": "deployed",
                                "h4": "deployed"}
    assert f.nodes["h1"].live() == OLD
    for name in ("h2", "h3", "h4"):
        assert f.nodes[name].serves() == NEW


def test_a_rejected_host_within_a_percentage_budget(lab) -> None:
    f = lab.fleet(4)
    (f.nodes["h3"].dir / "broken").touch()
    report = lab.push(f, dataclasses.replace(POLICY, failure_budget="25%"))
    assert _results(report) == {"h1": "deployed", "h2": "deployed", "h3": "failed",
                                "h4": "deployed"}
    assert report.halted_by is None
    assert f.nodes["h3"].live() == OLD and f.nodes["h3"].serves() == OLD
    assert [f.nodes[n].serves() for n in ("h1", "h2", "h4")] == [NEW] * 3


def test_rejected_hosts_beyond_the_budget_halt_and_roll_the_flipped_back(lab) -> None:
    f = lab.fleet(5)
    for name in ("h3", "h4"):
        (f.nodes[name].dir / "broken").touch()
    report = lab.push(f, dataclasses.replace(POLICY, failure_budget="25%", concurrency=1))
    assert _results(report) == {"h1": "rolled back", "h2": "rolled back", "h3": "failed",
                                "h4": "failed", "h5": "skipped: halted"}
    assert report.halted_by is not None and report.halted_by.host == "h4"
    for node in f.nodes.values():
        assert node.live() == OLD and node.serves() == OLD


def test_too_many_unreachable_hosts_halt_without_rolling_back(lab) -> None:
    f = lab.fleet(5)
    for name in ("h2", "h3", "h4"):
        f.nodes[name].unreachable = True
    report = lab.push(f, dataclasses.replace(POLICY, concurrency=1))
    assert _results(report) == {"h1": "deployed", "h2": "failed", "h3": "failed",
                                "h4": "failed", "h5": "skipped: halted"}
    assert report.halted_by is not None and report.halted_by.failure is Failure.UNREACHABLE
    assert f.nodes["h1"].serves() == NEW and f.nodes["h5"].live() == OLD


def test_the_host_that_failed_last_time_is_retried_first_as_the_canary(lab, tmp_path) -> None:
    f = lab.fleet(4)
    state = DeployState(tmp_path / "state")
    (f.nodes["h3"].dir / "broken").touch()
    first = lab.push(f, deploy_state=state)
    assert _results(first)["h3"] == "failed" and first.halted_by is not None
    moved = {n: f.nodes[n].reloads() for n in f.nodes}
    f.connects.clear()
    again = lab.push(f, deploy_state=state)  # the same failure again
    assert f.connects[0] == "h3"  # the canary now
    assert again.halted_by is not None and again.halted_by.host == "h3"
    # No healthy host is flipped and reloaded back and forth a second time.
    assert {n: f.nodes[n].reloads() for n in f.nodes if n != "h3"} == {
        n: moved[n] for n in f.nodes if n != "h3"}
    assert {o.host: o.result.value for o in again.outcomes if o.host != "h3"} == dict.fromkeys(
        ("h1", "h2", "h4"), "skipped: halted")


def test_a_host_already_serving_the_version_is_only_looked_at(lab) -> None:
    f = lab.fleet(2)
    assert lab.push(f).ok
    before = {n: f.nodes[n].reloads() for n in f.nodes}
    report = lab.push(f)
    assert _results(report) == {"h1": "unchanged", "h2": "unchanged"}
    assert {n: f.nodes[n].reloads() for n in f.nodes} == before


def test_a_pointer_at_the_version_that_is_not_served_gets_reloaded(lab) -> None:
    f = lab.fleet(1)
    node = f.nodes["h1"]
    assert lab.push(f).ok
    (node.dir / "served").write_bytes(_pem(OLD))  # as if a run stopped between flip and reload
    report = lab.push(f)
    assert _results(report) == {"h1": "deployed"} and node.serves() == NEW


def test_every_host_gets_an_outcome_even_when_its_thread_raises(lab) -> None:
    f = lab.fleet(3)
    f.nodes["h2"].raise_on_connect = RuntimeError("boom")
    report = lab.push(f, dataclasses.replace(POLICY, failure_budget=1))
    results = {o.host: o for o in report.outcomes}
    assert len(results) == 3 and "boom" in (results["h2"].error or "")
    assert results["h1"].ok and results["h3"].ok
