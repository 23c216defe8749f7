"""Faults on the way to the nodes: network, SSH, nginx, the certificate directory.

Each case: v1 (due) on every node; ``certfan renew`` issues v2 and rolls it
out while the fault is on; the fault is healed; ``certfan renew`` runs again
(and once more, a no-op); then the four invariants (helpers.reliability).
The lab's rollout policy is strict: one canary, no failure tolerated, so a
failing node halts the rollout and the nodes already moved are moved back.
The faulty node is never the canary (cdn-frankfurt-1), so that happens.
"""

from __future__ import annotations

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
    """``certfan renew --json`` while the fault is on: v2 issued, the rollout fails."""
    run = case.cli("renew", "--json")
    doc = run.json()
    assert [i["error"] for i in doc["issued"]] == [None], doc  # v2 issued and stored
    assert run.code == 1, run  # halted: no node is left on v2
    return doc, _outcomes(doc)


def _moved_back(outcomes: dict[str, dict], failed: str) -> None:
    """The failing node halted the rollout; nodes already on v2 were moved back."""
    for host, outcome in outcomes.items():
        if host != failed:
            assert outcome["result"] in ("rolled back", "skipped: halted"), outcome


def test_node_unreachable_before_the_rollout(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    case.watcher.skip.add("esme")
    with lab.faults.cut("esme"):
        _, outcomes = _renew_under_fault(case)
    esme = outcomes["esme"]
    assert esme["result"] == "failed" and esme["failed_step"] == "connect"
    assert "timed out" in esme["error"] and esme["rollback"] is None
    _moved_back(outcomes, "esme")
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
    assert code == 1, log[-3000:]
    assert "esme: media failed at upload" in log and "timed out" in log, log[-3000:]
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def test_ssh_connection_dropped_between_flip_and_reload(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    pause = tmp_path / "pause"
    pause.mkdir()
    # Paused right after esme's flip (at the start of its config test), then cut off.
    proc = case.process("renew", at=r"^esme: test: ",
                           action=f"pause:{pause}", log=tmp_path / "run.log")
    _wait_file(pause / "reached", proc)
    v2 = case.current()
    live = lab.node("esme").root / "live" / "media"
    assert live.readlink().name == v2.version  # flipped, not reloaded
    case.watcher.skip.add("esme")
    with cut_off(lab, "esme"):
        (pause / "go").touch()
        code = wait_exit(proc)
    log = (tmp_path / "run.log").read_text()
    assert code == 1, log[-3000:]
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
    _moved_back(outcomes, "sally")
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
    _moved_back(outcomes, "sally")
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
    _moved_back(outcomes, "sally")
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
    assert "authentication refused" in esme["error"]
    _moved_back(outcomes, "esme")
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
    _moved_back(outcomes, "esme")
    v2 = case.current()
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def _wait_file(path: Path, proc, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "certfan exited before reaching the step"
        assert time.monotonic() < deadline, f"certfan never reached {path.parent.name}"
        time.sleep(0.01)
