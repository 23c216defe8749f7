"""Rollout on the lab: real releases pushed to the lab's nodes over SSH, then what
nginx serves is asked by TLS handshake. The fleet policy's cases are in
test_policy.py; the policy itself, on local stand-ins, in tests/unit."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfan.config import Endpoint
from certfan.deploy import hostrun, probe
from certfan.state.deploy import DeployState, hosts_behind
from certfan_lab import extra
from helpers.rollout import (
    ALL_SNIS,
    Watcher,
    json_report,
    lab_push_for,
    nginx_pids,
    restore_certbot,
    served,
    sha_of,
    wait_served,
)


@pytest.fixture
def lab_push(lab, tmp_path: Path):  # type: ignore[no-untyped-def]
    return lab_push_for(lab, tmp_path)


@pytest.mark.lab
def test_push_converts_certbot_nodes_and_serves_the_new_leaf_everywhere(lab, lab_push, capsys):
    restore_certbot(lab)
    release = lab_push.release()
    with Watcher(lab, {lab.seed_sha256, release.sha256}):
        code = lab_push.cli("--json")
    doc = json_report(capsys)
    assert code == 0, doc
    assert {o["host"]: o["result"] for o in doc["outcomes"]} == dict.fromkeys(
        lab_push.nodes, "deployed"
    )
    for node in lab_push.nodes:
        for sni in ALL_SNIS:
            assert served(lab, node, sni) == release.sha256, (node, sni)
        root = lab.node(node).root
        assert os.readlink(root / "live" / "media") == f"../archive/media/{release.version}"
        key = root / "archive" / "media" / release.version / "privkey.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        # certbot's directory is kept aside and its content copied for rollback.
        assert (root / "live" / ".media.certbot").is_dir()
        copy = root / "archive" / "media" / "certbot-1" / "cert.pem"
        assert _sha_of_pem(copy) == lab.seed_sha256

    # A second push changes nothing: no upload, no flip, no reload.
    for node in lab_push.nodes:
        wait_served(lab, node, release.sha256)
    pids = {node: nginx_pids(lab, node) for node in lab_push.nodes}
    assert lab_push.cli("--json") == 0
    doc = json_report(capsys)
    assert {o["result"] for o in doc["outcomes"]} == {"unchanged"}
    assert {node: nginx_pids(lab, node) for node in lab_push.nodes} == pids
    assert hosts_behind(lab_push.cfg, lab_push.store, DeployState(lab_push.state)) == {}


def _sha_of_pem(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return sha_of(cert.public_bytes(serialization.Encoding.DER))


@pytest.mark.lab
def test_host_option_changes_only_that_node(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    others = [n for n in lab_push.nodes if n != "cdn-fremont-1"]
    pids = {node: nginx_pids(lab, node) for node in others}
    code = lab_push.cli("--host", "cdn-fremont-1")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "cdn-fremont-1" in out and "deployed" in out and "sally" not in out
    assert served(lab, "cdn-fremont-1") == new.sha256
    for node in others:
        assert served(lab, node) == old.sha256
        assert os.readlink(lab.node(node).root / "live" / "media").endswith(old.version)
    assert {node: nginx_pids(lab, node) for node in others} == pids


@pytest.mark.lab
def test_broken_nginx_keeps_its_old_certificate_and_halts_the_rollout(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    before = nginx_pids(lab, "sally")
    with lab.faults.break_nginx("sally"), Watcher(lab, {old.sha256, new.sha256}):
        code = lab_push.cli("--json")
        assert nginx_pids(lab, "sally") == before  # never reloaded onto the broken config
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 1, doc
    assert doc["halted_by"] == {"host": "sally", "cert": "media", "step": "test"}
    sally = results["sally"]
    assert sally["result"] == "failed" and sally["failed_step"] == "test"
    assert sally["failure"] == "rejected"
    assert "lab_broken_directive" in sally["output_tail"] and sally["rollback"] == "ok"
    # The canary went through and was rolled back when sally spent the budget; so was
    # any other node that finished; none is left on the new version.
    assert results["cdn-frankfurt-1"]["result"] == "rolled back"
    for node in lab_push.nodes:
        assert results[node]["result"] in ("rolled back", "failed", "skipped: halted")
        assert served(lab, node) == old.sha256
        assert os.readlink(lab.node(node).root / "live" / "media").endswith(old.version)


@contextlib.contextmanager
def _serving_the_leaf_alone(lab, node: str) -> Iterator[None]:  # type: ignore[no-untyped-def]
    """The node's site points nginx at live/media/cert.pem (the leaf without its
    intermediate, a common slip) instead of fullchain.pem; put back afterwards."""
    n = lab.node(node)
    live = n.root / "live" / "media"
    original = n.site_conf.read_text()
    n.site_conf.write_text(original.replace(f"{live}/fullchain.pem", f"{live}/cert.pem"))
    try:
        extra.reload_nginx(lab, n)
        _wait_chain_length(n.address, 1)
        yield
    finally:
        n.site_conf.write_text(original)
        extra.reload_nginx(lab, n)
        _wait_chain_length(n.address, 2)


def _wait_chain_length(address: str, count: int, timeout: float = 10.0) -> None:
    """Until the node presents ``count`` certificate(s) (new workers take over a moment
    after the reload signal)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe.served_chain(Endpoint(address, 443), "media.lab.test", 2.0)
        if isinstance(answer, list) and len(answer) == count:
            return
        assert time.monotonic() < deadline, f"{address} still presents {len(answer)}"
        time.sleep(0.05)


@pytest.mark.lab
def test_a_node_serving_the_leaf_without_its_intermediate_fails_the_proof_and_rolls_back(
        lab, lab_push, capsys):
    old = lab_push.converge()  # proven whole everywhere: leaf and intermediate
    new = lab_push.release()
    with _serving_the_leaf_alone(lab, "sally"):
        code = lab_push.cli("--json")
        doc = json_report(capsys)
        assert served(lab, "sally") == old.sha256  # back on the old leaf (served as it was)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 1, doc
    sally = results["sally"]
    assert sally["result"] == "failed" and sally["failed_step"] == "prove", sally
    assert sally["failure"] == "rejected" and sally["rollback"] == "ok", sally
    assert sally["error"].startswith("sally "), sally["error"]
    assert (f"not the deployed fullchain.pem of {new.version} (sha256 {new.sha256[:16]}...): "
            "serves the leaf only, without the 1 intermediate(s) deployed") in sally["error"]
    assert os.readlink(lab.node("sally").root / "live" / "media").endswith(old.version)
    assert doc["halted_by"] == {"host": "sally", "cert": "media", "step": "prove"}
    for node in lab_push.nodes:  # the budget spent: none is left on the new version
        assert results[node]["result"] in ("rolled back", "failed", "skipped: halted"), doc
        assert served(lab, node) == old.sha256


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
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 3, doc  # partial: some nodes serve the version, some do not
    assert results["cdn-frankfurt-1"]["result"] == results["cdn-fremont-1"]["result"] == "deployed"
    sally, esme = results["sally"], results["esme"]
    assert sally["result"] == "failed" and sally["failed_step"] == "connect"
    assert "does not match known_hosts" in sally["error"] and "MITM" in sally["error"]
    assert esme["result"] == "failed" and esme["failed_step"] == "connect"
    assert "timed out" in esme["error"]
    assert lab.known_hosts.read_bytes() == known_hosts  # never trusted, never added
    assert served(lab, "sally") == old.sha256 and served(lab, "esme") == old.sha256

    state = DeployState(lab_push.state)
    assert hosts_behind(lab_push.cfg, lab_push.store, state) == {"media": ("sally", "esme")}
    assert "timed out" in (state.host("media", "esme").last_error or "")
    # Healed: the next run brings the two up to date and leaves the others alone.
    assert lab_push.cli("--json") == 0
    doc = json_report(capsys)
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
        if event.host == "esme" and event.step == "upload" and event.status == "start" and not cut:
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
    assert cut and esme.result == hostrun.FAILED and esme.failed_step == "upload"
    assert esme.failure is hostrun.Failure.UNREACHABLE and esme.rollback is None
    assert "timed out" in (esme.error or "")
    assert report.halted_by is None  # a node out of reach never rolls the others back
    for node in ("cdn-frankfurt-1", "cdn-fremont-1", "sally"):
        assert results[node].result == hostrun.DEPLOYED, results[node]
        assert served(lab, node) == new.sha256
    assert served(lab, "esme") == old.sha256  # nothing live changed on it

    again = lab_push.push()
    assert again.ok
    assert {o.host: o.result for o in again.outcomes} == {
        "cdn-frankfurt-1": hostrun.UNCHANGED, "cdn-fremont-1": hostrun.UNCHANGED,
        "sally": hostrun.UNCHANGED, "esme": hostrun.DEPLOYED}
    for node in lab_push.nodes:
        assert served(lab, node) == new.sha256


@pytest.mark.lab
def test_full_or_readonly_disk_fails_the_upload_and_changes_nothing(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    lab_push.write(failure_budget=2)
    with lab.faults.fill_disk("sally"), lab.faults.make_readonly("esme"):
        code = lab_push.cli("--json")
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 3, doc
    assert results["sally"]["failed_step"] == results["esme"]["failed_step"] == "upload"
    assert "No space left on device" in results["sally"]["output_tail"]
    assert "Read-only file system" in results["esme"]["output_tail"]
    for node in ("sally", "esme"):
        assert results[node]["rollback"] is None  # nothing was flipped
        assert served(lab, node) == old.sha256
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
        assert served(lab, node) == new.sha256


@pytest.mark.lab
def test_dry_run_prints_the_plan_and_touches_nothing(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    pids = {node: nginx_pids(lab, node) for node in lab_push.nodes}
    assert lab_push.cli("--dry-run") == 0
    out = capsys.readouterr().out
    assert "cdn-frankfurt-1 (canary)" in out and "dry run: nothing was changed" in out
    for word in ("upload", "flip", "test: nginx -t", "reload: systemctl reload nginx", "prove"):
        assert word in out
    for node in lab_push.nodes:
        root = lab.node(node).root
        assert os.readlink(root / "live" / "media").endswith(old.version)
        assert not (root / "archive" / "media" / new.version).exists()
        assert served(lab, node) == old.sha256
    assert {node: nginx_pids(lab, node) for node in lab_push.nodes} == pids


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
