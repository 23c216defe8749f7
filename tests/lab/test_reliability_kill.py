"""certfan killed with SIGKILL at every step of ``renew``, then run again; and a second
run started while the first is in the middle of a rollout.

The killed run is ``certfan renew`` in a child process that SIGKILLs itself at
the first log line announcing the step (helpers.reliability.certfan_process):
the kill lands exactly there, every time, with no reader of its stderr to
race. "Mid-upload" is the one kill from outside: the canary's ``sync`` holds
the upload with its files written to the staging directory, and the test
kills certfan then.

Each case starts with v1 (due for renewal) on every node; after the kill
nothing is healed by hand: the next ``certfan renew`` must finish the job
(the kernel released the dead run's flock), and then the four invariants
hold. The CA issues exactly one certificate in every case: a run killed
before its certificate was stored leaves nothing to reuse (the next run
orders again), one killed after must not order again.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from certfan.issue import dns01
from certfan.state.deploy import DeployState
from helpers.reliability import (
    CERT,
    Case,
    hold_upload,
    kill,
    pebble_serials_since,
    txt_snapshot,
    wait_exit,
)

pytestmark = pytest.mark.lab

CANARY = "cdn-frankfurt-1"

# step -> the log line it is killed at (the step before it has just finished)
KILL_AT = {
    "after-order": r"^order for media\.lab\.test: https://",
    "after-dns-publish": r"^published TXT for _acme-challenge\.media\.lab\.test",
    "after-store": r"^stored media version ",  # on disk, not yet current
    "after-issuance": r"^media: issued serial ",  # stored and current
    # The canary's upload, flip, config test and reload are one remote command now
    # (deploy/plan.py): killed as it starts, the host may be anywhere in it.
    "after-flip": rf"^{CANARY}: upload: ",
    "after-reload": rf"^{CANARY}: media \S+ deployed",  # reloaded and proven, not recorded
}


def _killed_run(case: Case, step: str, tmp_path: Path) -> int:
    """Run ``certfan renew`` and SIGKILL it at ``step``; its pid."""
    log = tmp_path / "killed.log"
    if step == "mid-upload":
        with hold_upload(case.lab, CANARY) as held:
            proc = case.process("renew", log=log)
            held.wait_reached(alive=lambda: proc.poll() is None)
            kill(proc)
            code = wait_exit(proc)
            held.release()
            _wait_no_staging(case)
    else:
        proc = case.process("renew", at=KILL_AT[step], action="kill",
                               log=log)
        code = wait_exit(proc)
    text = log.read_text()
    assert code == -signal.SIGKILL, text[-3000:]
    if step != "mid-upload":
        assert "certfan-test: kill at: " in text, text[-3000:]
    return proc.pid


def _wait_no_staging(case: Case, timeout: float = 20.0) -> None:
    """The held upload, released, finishes on the node (the next run must not race it)."""
    archive = case.lab.node(CANARY).root / "archive" / CERT
    deadline = time.monotonic() + timeout
    while any(p.name.endswith(".tmp") for p in archive.iterdir()):
        assert time.monotonic() < deadline, "the node's upload never finished"
        time.sleep(0.02)


def _what_the_kill_left(case: Case, step: str, v1_version: str) -> None:
    """The state the killed run left, before anything is run again: the case is real."""
    lab = case.lab
    serials = pebble_serials_since(lab, case.baseline.pebble_offset)
    canary_live = (lab.node(CANARY).root / "live" / CERT).readlink().name
    if step in ("after-order", "after-dns-publish"):
        assert serials == [] and case.versions() == [v1_version]
    else:
        assert len(serials) == 1 and len(case.versions()) == 2
    if step == "after-store":
        assert case.current().version == v1_version  # stored, never made current
    elif step not in ("after-order", "after-dns-publish"):
        assert case.current().version != v1_version  # stored and current before the rollout
    if step == "after-dns-publish":
        left = txt_snapshot(lab)["_acme-challenge.media.lab.test"]
        assert len(left) == 1, left
        pending = json.loads((case.state / dns01.PENDING_FILE).read_text())
        assert [e["value"] for e in pending] == list(left)
    if step == "after-flip":  # killed as the one deploy command started: either side of it
        assert canary_live in (v1_version, case.current().version)
    if step in ("after-flip", "after-reload"):
        if step == "after-reload":
            assert canary_live == case.current().version
        recorded = DeployState(case.state).host(CERT, CANARY)
        assert recorded.deployed == v1_version  # never recorded: the next run must look
    if step == "after-flip":
        assert case.lab.served_leaf(CANARY, "media.lab.test")  # still v1; proven below


@pytest.mark.parametrize("step", [*list(KILL_AT)[:4], "mid-upload", *list(KILL_AT)[4:]])
def test_sigkill_at_every_step_of_renew_then_run_again(lab, make_case, tmp_path: Path,
                                                       step: str) -> None:
    case = make_case()
    v1 = case.start()
    pid = _killed_run(case, step, tmp_path)
    lock = (case.state / "lock").read_text()
    assert f"pid={pid} command=renew" in lock  # the dead run's note stays; its flock went
    _what_the_kill_left(case, step, v1.version)
    case.heal()  # plain `certfan renew`: nothing was cleaned up by hand
    v2 = case.current()
    assert v2.version != v1.version
    case.assert_invariants(v2.version, issued=1)


def test_second_run_while_the_first_is_mid_rollout(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    v1 = case.start()
    with hold_upload(lab, CANARY) as held:
        first = case.process("renew", log=tmp_path / "first.log")
        try:
            held.wait_reached(alive=lambda: first.poll() is None)
            v2 = case.current()  # issued and stored by the first run
            live = {n: (lab.node(n).root / "live" / CERT).readlink().name for n in case.nodes}
            assert set(live.values()) == {v1.version}
            # The real entry point, and every command that changes something:
            second = case.process("renew")
            assert wait_exit(second, timeout=30) == 75
            for args in (["renew"], ["push"], ["issue", CERT], ["reissue", CERT],
                         ["rollback", "--cert", CERT], ["prune"]):
                run = case.cli(*args)
                assert run.code == 75, (args, run)
                [line] = run.err.strip().splitlines()
                assert "another certfan run holds the lock" in line
                assert f"pid {first.pid}, certfan renew" in line, line
            # Nothing moved: no issuance, no version, no pointer.
            assert len(pebble_serials_since(lab, case.baseline.pebble_offset)) == 1
            assert case.versions() == [v1.version, v2.version]
            assert {n: (lab.node(n).root / "live" / CERT).readlink().name
                    for n in case.nodes} == live
            held.release()
            assert wait_exit(first) == 0, (tmp_path / "first.log").read_text()[-3000:]
        finally:
            kill(first)
    case.heal()
    case.assert_invariants(v2.version, issued=1)


def test_sigkill_mid_upload_then_run_again_at_once(lab, make_case, tmp_path: Path) -> None:
    """The killed run's upload is still going on the node when the next run uploads the
    same version there: the two must not trip over each other."""
    case = make_case()
    case.start()
    with hold_upload(lab, CANARY) as held:
        dead = case.process("renew", log=tmp_path / "killed.log")
        held.wait_reached(1, alive=lambda: dead.poll() is None)
        kill(dead)
        assert wait_exit(dead) == -signal.SIGKILL
        again = case.process("renew", log=tmp_path / "again.log")
        try:
            held.wait_reached(2, alive=lambda: again.poll() is None)  # both wait on the node
            held.release()
            code = wait_exit(again)
        finally:
            kill(again)
    assert code == 0, (tmp_path / "again.log").read_text()[-3000:]
    _wait_no_staging(case)
    case.heal()
    case.assert_invariants(case.current().version, issued=1)
