"""renew, reissue, rollback, prune and import on the lab: Pebble issuing over DNS-01,
nginx nodes over SSH, and the lab's faults (Pebble and BIND stopped, a node cut off,
latency). The parts that need no lab are tests/unit/test_operations_units.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certfan.cli import render
from certfan.commands import prune, reissue
from certfan.commands import renew as renew_mod
from certfan.commands.tools import Tools
from certfan.deploy import hostrun
from certfan_lab import pebble
from helpers.ops import Ops, cert_files, import_args, public_key_sha256, restore_logging

SRC = Path(__file__).resolve().parents[2] / "src"

_logging = pytest.fixture(autouse=True)(restore_logging)

# ---------------------------------------------------------------- on the lab


@pytest.fixture
def ops(lab, tmp_path: Path) -> Ops:  # type: ignore[no-untyped-def]
    return Ops(lab, tmp_path)


def _env() -> dict[str, str]:
    """The environment for certfan as a separate process, importing this checkout."""
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _one_line(capsys) -> str:  # type: ignore[no-untyped-def]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_renew_renews_what_is_due_rolls_it_out_then_has_nothing_to_do(lab, ops, capsys):  # type: ignore[no-untyped-def]
    adopted = ops.import_cert(days_left=2, lifetime_days=90)  # inside the last third
    capsys.readouterr()
    started = time.monotonic()
    assert ops.cli("renew") == 0
    renew_seconds = time.monotonic() - started
    line = _one_line(capsys)
    assert line.startswith("renew: renewed media") and "4 of 4" in line
    [old, new] = ops.store.versions("media")
    assert old == adopted and "Pebble" in new.issuer
    for node in ops.nodes:
        assert ops.served(node) == new.sha256

    # Nothing to do now: prove it needs no CA, no DNS and no SSH by taking them all away,
    # and time the whole command as cron runs it (a new process).
    faults = [lab.faults.stop_pebble(), lab.faults.stop_dns()]
    try:
        faults += [lab.faults.cut(node) for node in ops.nodes]
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "certfan", "-c", str(ops.config_path),
                               "renew"], env=_env(), capture_output=True, text=True,
                              timeout=60, check=False)
        noop_seconds = time.monotonic() - started
    finally:
        for fault in reversed(faults):
            fault.heal()
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.splitlines()
    assert "nothing due, every host current" in line and done.stderr == ""
    assert ops.versions() == [old.version, new.version]
    print(f"renew + rollout to 4 nodes: {renew_seconds:.2f}s; no-op renew: {noop_seconds:.3f}s",
          file=sys.stderr)


def test_a_node_cut_off_during_renew_is_reported_and_caught_up_without_reissuing(lab, ops, capsys):  # type: ignore[no-untyped-def]
    ops.write(failure_budget=1)
    ops.import_cert(days_left=2)
    cut = []

    def on_event(event: hostrun.Event) -> None:
        if event.host == "esme" and event.step == "connect" and event.status == "start":
            cut.append(lab.faults.cut("esme"))

    try:
        report = renew_mod.renew(ops.cfg, ops.store, Tools(on_event=on_event))
    finally:
        for fault in cut:
            fault.heal()
    assert cut and not report.ok and report.rollout is not None
    results = {o.host: o for o in report.rollout.outcomes}
    assert results["esme"].result == hostrun.FAILED and results["esme"].failed_step == "connect"
    assert "timed out" in (results["esme"].error or "")
    assert "3 of 4 host rollout(s)" in render.renew_summary(report)
    new = ops.store.current("media")
    assert new is not None and len(ops.versions()) == 2
    assert ops.served("esme") != new.sha256

    # Healed: the next run updates esme, and only esme, without ordering anything.
    capsys.readouterr()
    assert ops.cli("renew", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["issued"] == [] and doc["rolled_out"] == [
        {"cert": "media", "version": new.version, "hosts": ["esme"]}]
    assert len(ops.versions()) == 2
    for node in ops.nodes:
        assert ops.served(node) == new.sha256


def test_an_overlapping_renew_exits_with_the_lock_message(lab, ops, capsys):  # type: ignore[no-untyped-def]
    ops.import_cert(days_left=60)  # not due; the hosts are behind, so the first run pushes
    env = _env()
    lock_file = ops.state / "lock"
    with lab.faults.add_latency("sally", 100):
        first = subprocess.Popen(
            [sys.executable, "-m", "certfan", "-c", str(ops.config_path), "renew"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while f"pid={first.pid} " not in (lock_file.read_text() if lock_file.exists() else ""):
                assert first.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            assert ops.cli("renew") == 75
            assert first.poll() is None  # refused while the first still runs: it did not wait
            err = capsys.readouterr().err.strip()
            assert str(lock_file) in err and f"pid {first.pid}" in err and "certfan renew" in err
            out, err = first.communicate(timeout=90)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate()
    assert first.returncode == 0, (out, err)
    assert "4 of 4 host rollout(s)" in out
    assert ops.cli("renew") == 0  # the lock is free again


def _pebble_status(lab, serial: str) -> dict:  # type: ignore[no-untyped-def]
    url = f"https://127.0.0.1:{lab.mgmt_port}/cert-status-by-serial/{serial}"
    return json.loads(pebble.get(url, lab.ca_bundle))


def test_reissue_revoke_old_gives_every_node_a_new_key_and_revokes_the_old(lab, ops, capsys):  # type: ignore[no-untyped-def]
    assert ops.cli("issue", "media") == 0
    assert ops.cli("renew") == 0  # rolls it out (hosts behind)
    old = ops.store.current("media")
    assert old is not None and _pebble_status(lab, old.serial)["Status"] == "Valid"
    old_key = ops.store.read_meta(old)["public_key_sha256"]
    for node in ops.nodes:
        assert public_key_sha256(ops.served_der(node)) == old_key
    capsys.readouterr()

    assert ops.cli("reissue", "media", "--revoke-old", "--reason", "keyCompromise") == 0
    out = capsys.readouterr().out
    new = ops.store.current("media")
    assert new is not None and new.version != old.version
    new_key = ops.store.read_meta(new)["public_key_sha256"]
    assert new_key != old_key and f"revoked the previous certificate {old.version}" in out
    for node in ops.nodes:
        served = ops.served_der(node)
        assert public_key_sha256(served) == new_key != old_key, node
    status = _pebble_status(lab, old.serial)
    assert status["Status"] == "Revoked" and status["Reason"] == 1, status
    assert _pebble_status(lab, new.serial)["Status"] == "Valid"

    # The revoked version is never rolled back to.
    assert ops.cli("rollback", "--cert", "media") == 1
    assert "was revoked (keyCompromise)" in capsys.readouterr().err
    assert all(public_key_sha256(ops.served_der(n)) == new_key for n in ops.nodes)


def test_reissue_without_canary_and_usage_errors(lab, ops, capsys):  # type: ignore[no-untyped-def]
    assert ops.cli("reissue", "media", "--reason", "superseded") == 2  # needs --revoke-old
    assert "--reason needs --revoke-old" in capsys.readouterr().err
    ops.import_cert(days_left=60)  # from another CA: nothing Pebble could revoke by account
    events: list[hostrun.Event] = []
    cfg = ops.cfg
    report = reissue.reissue(cfg, ops.store, "media", Tools(on_event=events.append),
                                canary=False)
    assert report.rollout.ok and not report.revoke_requested
    # Without a canary stage all four start before the first is done (concurrency 4).
    first_done = next(i for i, e in enumerate(events) if e.step == "done")
    started = {e.host for e in events[:first_done] if e.step == "connect" and e.status == "start"}
    assert started == set(ops.nodes)


def test_rollback_some_hosts_then_all_and_prune(lab, ops, capsys):  # type: ignore[no-untyped-def]
    v1, v2, v3 = (ops.import_cert(days_left=60) for _ in range(3))
    assert ops.cli("renew") == 0
    assert all(ops.served(n) == v3.sha256 for n in ops.nodes)

    # One host back: it is held there, and renew leaves it alone.
    assert ops.cli("rollback", "--cert", "media", "--host", "sally") == 0
    out = capsys.readouterr().out
    assert "held on" in out and "sally" in out
    assert ops.served("sally") == v2.sha256
    assert all(ops.served(n) == v3.sha256 for n in ops.nodes if n != "sally")
    assert ops.cli("renew") == 0
    assert "held back by a rollback: sally" in _one_line(capsys)
    assert ops.served("sally") == v2.sha256
    assert ops.cli("status") == 1  # drift on sally: WARNING
    capsys.readouterr()

    # Every host back: v2 is current again; nothing left to do for renew.
    assert ops.cli("rollback", "--cert", "media") == 0
    capsys.readouterr()
    current = ops.store.current("media")
    assert current is not None and current.version == v2.version
    assert all(ops.served(n) == v2.sha256 for n in ops.nodes)
    assert ops.cli("renew") == 0
    assert "nothing due, every host current" in _one_line(capsys)

    # Prune. v4 rolled out, then everyone back on v3: --keep 1 keeps v4 (the newest),
    # v3 (current, live everywhere) and v2 (the one before it); v1 goes.
    v4 = ops.import_cert(days_left=60)
    assert ops.cli("renew") == 0 and ops.cli("rollback", "--cert", "media") == 0
    capsys.readouterr()
    assert ops.cli("prune", "--keep", "1", "--dry-run") == 0
    assert "dry run" in capsys.readouterr().out and len(ops.versions()) == 4
    assert ops.cli("prune", "--keep", "1") == 0
    out = capsys.readouterr().out
    assert ops.versions() == [v2.version, v3.version, v4.version], out
    assert v1.version not in ops.versions()
    for node in ops.nodes:
        root = ops.lab.node(node).root
        left = {d.name for d in (root / "archive" / "media").iterdir()
                if prune._VERSION.match(d.name)}
        # kept: ours, and at most one other test's version numbered just below the live one
        assert {v2.version, v3.version, v4.version} <= left and len(left) <= 4, (node, left)
        assert os.readlink(root / "live" / "media").endswith(v3.version)
        assert ops.served(node) == v3.sha256


def test_import_stores_key_0600_and_warns_about_other_names(lab, ops, capsys):  # type: ignore[no-untyped-def]
    key, chain = cert_files(ops.dir, "other", days_left=30, names=("other.lab.test",))
    assert ops.cli(*import_args("media", key, chain)) == 1  # must cover media.lab.test
    err = capsys.readouterr().err
    assert f"{chain}: the certificate does not cover media.lab.test" in err, err
    key, chain = cert_files(ops.dir, "more", days_left=30,
                            names=("media.lab.test", "other.lab.test"))
    assert ops.cli(*import_args("media", key, chain)) == 0
    out = capsys.readouterr().out
    assert "stored version 0001-" in out and "the next renew replaces it" in out
    release = ops.store.current("media")
    assert release is not None and (release.file("privkey.pem").stat().st_mode & 0o777) == 0o600
    assert ops.cli("import", "nosuch", "--key", str(key), "--fullchain", str(chain)) == 2
