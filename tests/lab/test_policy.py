"""The fleet policy on the lab: each case asserts what every node serves afterwards.

One canary (cdn-frankfurt-1, first in config order), then the other three
staged meanwhile and flipped once it is proven. Faults come from the lab
(cut links, a broken nginx config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from certfan.state.deploy import DeployState, hosts_behind
from helpers.rollout import Watcher, json_report, lab_push_for, nginx_pids, served

CANARY = "cdn-frankfurt-1"


@pytest.fixture
def lab_push(lab, tmp_path: Path):  # type: ignore[no-untyped-def]
    return lab_push_for(lab, tmp_path)


def _live(lab, node: str) -> str:  # type: ignore[no-untyped-def]
    return Path(os.readlink(lab.node(node).root / "live" / "media")).name


def test_a_cut_node_never_rolls_the_others_back_and_renew_catches_it_up(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release(names=lab_push.cfg.certificates["media"].domains)  # not due
    with lab.faults.cut("esme"), Watcher(lab, {old.sha256, new.sha256}, skip={"esme"}):
        code = lab_push.cli("--json")
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 3, doc
    assert results["esme"]["failure"] == "unreachable" and results["esme"]["rollback"] is None
    assert doc["halted_by"] is None
    for node in ("cdn-frankfurt-1", "cdn-fremont-1", "sally"):
        assert results[node]["result"] == "deployed" and served(lab, node) == new.sha256
    assert served(lab, "esme") == old.sha256
    state = DeployState(lab_push.state)
    assert hosts_behind(lab_push.cfg, lab_push.store, state) == {"media": ("esme",)}
    assert "timed out" in (state.host("media", "esme").last_error or "")

    # Healed: the timer's renew brings esme up and leaves the others alone.
    pids = {n: nginx_pids(lab, n) for n in ("cdn-frankfurt-1", "cdn-fremont-1", "sally")}
    assert lab_push.cli("--json", command="renew") == 0
    renew = json.loads(capsys.readouterr().out)
    assert renew["rolled_out"] == [{"cert": "media", "version": new.version, "hosts": ["esme"]}]
    assert served(lab, "esme") == new.sha256
    assert {n: nginx_pids(lab, n) for n in pids} == pids
    assert hosts_behind(lab_push.cfg, lab_push.store, state) == {}


@pytest.mark.parametrize(("broken", "budget", "code"), [
    (("sally",), "25%", 3),  # 1 of 4 tolerated: the others go on
    (("sally", "esme"), "25%", 1),  # 2 of 4: halted, the flipped moved back
])
def test_rejected_hosts_within_and_beyond_a_percentage_budget(lab, lab_push, capsys, broken,
                                                              budget, code):
    old = lab_push.converge()
    new = lab_push.release()
    lab_push.write(failure_budget=budget, concurrency=1)  # one at a time: a fixed order
    faults = [lab.faults.break_nginx(n) for n in broken]
    try:
        with Watcher(lab, {old.sha256, new.sha256}):
            assert lab_push.cli("--json") == code
    finally:
        for fault in faults:
            fault.heal()
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    for node in broken:
        assert results[node]["failure"] == "rejected" and results[node]["failed_step"] == "test"
        assert served(lab, node) == old.sha256 and _live(lab, node) == old.version
    others = [n for n in lab_push.nodes if n not in broken]
    if code == 3:
        assert doc["halted_by"] is None
        assert all(served(lab, n) == new.sha256 for n in others)
    else:
        assert doc["halted_by"]["host"] == broken[-1]
        assert {results[n]["result"] for n in others} == {"rolled back"}
        assert all(served(lab, n) == old.sha256 for n in others)


def test_hosts_are_held_forward_rather_than_rolled_back_to_an_expiring_version(
        lab, lab_push, capsys):
    old = lab_push.release(days=3)  # what the incident had: three days left
    report = lab_push.push()
    assert report.ok, report
    new = lab_push.release()
    with lab.faults.break_nginx("sally"):
        code = lab_push.cli("--json")
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert code == 3, doc
    assert doc["halted_by"]["host"] == "sally"  # the budget (0) is spent...
    assert served(lab, "sally") == old.sha256
    held = [n for n in lab_push.nodes if results[n]["result"] == "deployed"]
    assert CANARY in held
    for node in held:  # ...but nobody goes back to a certificate about to expire
        assert served(lab, node) == new.sha256
        note = results[node]["note"]
        assert "not rolled back" in note and old.version in note and "(within 7)" in note
        assert any(node in w and "held on" in w for w in doc["warnings"])


def test_the_host_that_failed_last_time_is_the_canary_next_time(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    lab_push.write(concurrency=1)
    with lab.faults.break_nginx("esme"):
        assert lab_push.cli("--json") == 1  # esme rejected: the others were moved back
        json_report(capsys)
        pids = {n: nginx_pids(lab, n) for n in lab_push.nodes if n != "esme"}
        assert lab_push.cli("--json") == 1  # the same failure on the next run
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert doc["halted_by"]["host"] == "esme"
    # esme went first; nobody else was flipped, reloaded and moved back again.
    assert {results[n]["result"] for n in pids} == {"skipped: halted"}
    assert {n: nginx_pids(lab, n) for n in pids} == pids
    for node in lab_push.nodes:
        assert served(lab, node) == old.sha256 and _live(lab, node) == old.version
    assert new.version != old.version


def test_a_failing_canary_leaves_every_live_pointer_where_it_was(lab, lab_push, capsys):
    old = lab_push.converge()
    new = lab_push.release()
    pids = {n: nginx_pids(lab, n) for n in lab_push.nodes if n != CANARY}
    with lab.faults.break_nginx(CANARY), Watcher(lab, {old.sha256}):
        assert lab_push.cli("--json") == 1
    doc = json_report(capsys)
    results = {o["host"]: o for o in doc["outcomes"]}
    assert results[CANARY]["failed_step"] == "test" and results[CANARY]["rollback"] == "ok"
    for node in lab_push.nodes:
        assert _live(lab, node) == old.version and served(lab, node) == old.sha256
    for node in pids:
        assert results[node]["result"] == "skipped: halted"
        # Staged while the canary was tried (left for prune), never flipped or reloaded.
        assert (lab.node(node).root / "archive" / "media" / new.version / "privkey.pem").exists()
    assert {n: nginx_pids(lab, n) for n in pids} == pids
