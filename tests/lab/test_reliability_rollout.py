"""Faults on the way to the nodes: network, SSH, nginx, the certificate directory.

Each case: v1 (due, two days left) on every node; ``certfan renew`` issues v2
and rolls it out while the fault is on; the fault is healed; ``certfan renew``
runs again (and once more, a no-op); then the four invariants
(helpers.reliability). The lab's rollout policy is strict: one canary, no
failure tolerated. A node out of reach never rolls the others back; a node
that rejects v2 halts the rollout, but the hosts already on v2 are held
forward rather than moved back to v1, which expires within status's critical
window. The faulty node is never the canary (cdn-frankfurt-1).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers.reliability import (
    Case,
    break_reload,
    cut_off,
    hold_upload,
    refuse_auth,
    wait_exit,
)

pytestmark = pytest.mark.lab


def _outcomes(doc: dict) -> dict[str, dict]:
    assert doc["rollout"] is not None, doc
    return {o["host"]: o for o in doc["rollout"]["outcomes"]}


def _renew_under_fault(case: Case) -> tuple[dict, dict[str, dict]]:
    """``certfan renew --json`` while the fault is on: v2 issued, some nodes serve it."""
    run = case.cli("renew", "--json")
    doc = run.json()
    assert [i["error"] for i in doc["issued"]] == [None], doc  # v2 issued and stored
    assert run.code == 3, run  # partial: the faulty node does not serve v2
    return doc, _outcomes(doc)


def _others_kept_v2(outcomes: dict[str, dict], failed: str) -> None:
    """Nodes that got v2 keep it: never rolled back for an unreachable node, and held
    forward (not moved back to the expiring v1) when a rejection halted the rollout."""
    assert outcomes["cdn-frankfurt-1"]["result"] == "deployed", outcomes
    for host, outcome in outcomes.items():
        if host != failed:
            assert outcome["result"] in ("deployed", "skipped: halted"), outcome


def test_node_unreachable_before_the_rollout(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    case.watcher.skip.add("esme")
    with lab.faults.cut("esme"):
        _, outcomes = _renew_under_fault(case)
    esme = outcomes["esme"]
    assert esme["result"] == "failed" and esme["failed_step"] == "connect"
    assert "timed out" in esme["error"] and esme["rollback"] is None
    assert esme["failure"] == "unreachable"
    _others_kept_v2(outcomes, "esme")
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def test_node_cut_off_mid_upload(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    with hold_upload(lab, "esme") as held:
        proc = case.process("renew", log=tmp_path / "run.log")
        held.wait_reached(alive=lambda: proc.poll() is None)
        # The files are in esme's staging directory, not yet placed, when the link dies.
        case.watcher.skip.add("esme")
        with cut_off(lab, "esme"):
            code = wait_exit(proc)
            held.release()  # the upload finishes on esme; certfan never hears of it
    log = (tmp_path / "run.log").read_text()
    assert code == 3, log[-3000:]
    assert "esme: media failed at upload" in log and "timed out" in log, log[-3000:]
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


@contextmanager
def _hold_config_test(lab, node: str) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """The node's `nginx -t` says it was reached, then waits for ``go`` (60 s at most)."""
    n = lab.node(node)
    shim, real = n.bin_dir / "nginx", n.bin_dir / "nginx.real"
    flag = n.dir / "held-test"
    flag.mkdir(mode=0o755, exist_ok=True)
    os.chown(flag, lab.uid, lab.gid)
    shutil.copy2(shim, real)
    shim.write_text(f"""#!/bin/sh
if [ "$1" = -t ]; then
  touch {flag}/reached; n=0
  while [ ! -e {flag}/go ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done
fi
exec {real} "$@"
""")
    try:
        yield flag
    finally:
        os.replace(real, shim)
        shutil.rmtree(flag, ignore_errors=True)


def test_ssh_connection_dropped_between_flip_and_reload(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    with _hold_config_test(lab, "esme") as flag:
        proc = case.process("renew", log=tmp_path / "run.log")
        deadline = time.monotonic() + 60
        while not (flag / "reached").exists():  # flipped, testing, not reloaded
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        v2 = case.current()
        live = lab.node("esme").root / "live" / "media"
        assert live.readlink().name == v2.version
        case.watcher.skip.add("esme")
        with cut_off(lab, "esme"):
            (flag / "go").touch()
            code = wait_exit(proc)
    log = (tmp_path / "run.log").read_text()
    assert code == 3, log[-3000:]
    assert "esme: media failed at test" in log and "ROLLBACK failed" in log, log[-3000:]
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def test_config_test_fails(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    with lab.faults.break_nginx("sally"):
        _, outcomes = _renew_under_fault(case)
    sally = outcomes["sally"]
    assert sally["result"] == "failed" and sally["failed_step"] == "test"
    assert "lab_broken_directive" in sally["output_tail"] and sally["rollback"] == "ok"
    _others_kept_v2(outcomes, "sally")
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def test_reload_fails(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    with break_reload(lab, "sally"):
        _, outcomes = _renew_under_fault(case)
    sally = outcomes["sally"]
    assert sally["result"] == "failed" and sally["failed_step"] == "reload"
    assert "not active" in sally["output_tail"]
    # Flipped back; its reload fails the same way, so certfan says the state is unknown.
    assert sally["rollback"].startswith("failed at reload")
    _others_kept_v2(outcomes, "sally")
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


@pytest.mark.parametrize("fault", ["fill_disk", "make_readonly"])
def test_certificate_directory_full_or_read_only(lab, make_case, tmp_path: Path,
                                                 fault: str) -> None:
    case = make_case()
    case.start()
    with getattr(lab.faults, fault)("sally"):
        _, outcomes = _renew_under_fault(case)
    sally = outcomes["sally"]
    assert sally["result"] == "failed" and sally["failed_step"] == "upload"
    said = "No space left on device" if fault == "fill_disk" else "Read-only file system"
    assert said in sally["output_tail"] and sally["rollback"] is None
    _others_kept_v2(outcomes, "sally")
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def test_ssh_authentication_refused(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    with refuse_auth(lab, "esme"):
        _, outcomes = _renew_under_fault(case)
    esme = outcomes["esme"]
    assert esme["result"] == "failed" and esme["failed_step"] == "connect"
    assert "authentication refused" in esme["error"] and esme["failure"] == "unreachable"
    _others_kept_v2(outcomes, "esme")
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def test_changed_host_key(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    known_hosts = lab.known_hosts.read_bytes()
    with lab.faults.change_host_key("esme"):
        _, outcomes = _renew_under_fault(case)
        assert lab.known_hosts.read_bytes() == known_hosts  # never trusted, never added
    esme = outcomes["esme"]
    assert esme["result"] == "failed" and esme["failed_step"] == "connect"
    assert "does not match known_hosts" in esme["error"]
    _others_kept_v2(outcomes, "esme")
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)
