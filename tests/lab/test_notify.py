"""Notifications on the lab: a webhook receiver on loopback hears about a rollout halted
by a broken nginx on the canary and about an expiry warning (once a day); a webhook that
is down or hangs changes nothing about a renew's result and does not hold it up."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from certfan_lab import Lab
from helpers.ops import Ops, restore_logging
from helpers.webhook import closed_port_url, receiver

_logging = pytest.fixture(autouse=True)(restore_logging)
SECRET = "T0KEN-SECRET"


@pytest.fixture
def ops(lab: Lab, tmp_path: Path) -> Ops:
    return Ops(lab, tmp_path)


def with_notify(ops: Ops, toml: str) -> None:
    """Append [[notify]] entries to the lab config (its last tables are [[certificates]])."""
    ops.config_path.write_text(ops.config_path.read_text() + "\n" + toml)


def test_a_rollout_halted_by_a_broken_canary_reaches_the_webhook(
    lab: Lab, ops: Ops, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = ops.nodes[0]
    with receiver() as r:
        with_notify(ops, f'[[notify]]\nname = "ops"\nwebhook = "{r.url}"\n')
        new = ops.import_cert(days_left=60)
        with lab.faults.break_nginx(canary):
            assert ops.cli("push") == 1
        [doc] = r.wait_for(1)
    assert doc["event"] == "halted" and doc["command"] == "push"
    assert doc["severity"] == "critical"
    assert f"rollout of {new.version} halted at {canary}" in doc["summary"]
    items = {i["host"]: i for i in doc["items"]}
    assert set(items) == set(ops.nodes)  # no host serves it: each is a line of the news
    assert items[canary]["detail"].startswith("failed at ")
    assert all(i["cert"] == "media" and i["version"] == new.version for i in doc["items"])
    for node in ops.nodes:  # the notice tells the truth: nobody serves the new version
        assert ops.served(node) != new.sha256
    out, err = capsys.readouterr()
    assert SECRET not in out + err


def test_an_expiry_warning_is_sent_once_a_day(
    lab: Lab, ops: Ops, capsys: pytest.CaptureFixture[str]
) -> None:
    with receiver() as r:
        with_notify(ops, f'[[notify]]\nwebhook = "{r.url}"\nformat = "slack"\n'
                         'on = ["expiring"]\n')
        ops.import_cert(days_left=5)
        assert ops.cli("push") == 0
        assert r.bodies() == []  # a good push tells nobody
        assert ops.cli("status") == 2  # CRITICAL: 5 days left
        [first] = r.wait_for(1)
        assert ops.cli("status") == 2
        assert len(r.bodies()) == 1  # told already today

        # A day later (the memory says so), the next status tells again.
        memory = ops.state / "notify" / "expiring.json"
        told = json.loads(memory.read_text())
        memory.write_text(json.dumps({k: v - 86401 for k, v in told.items()}))
        assert ops.cli("status") == 2
        bodies = r.wait_for(2)
    assert len(bodies) == 2
    lines = first["text"].splitlines()
    assert lines[0].startswith("[warning] certfan status: media inside the warning window")
    assert sorted(lines[1:]) == sorted(
        f"- media/{n}: served certificate expires in 5.0 days" for n in ops.nodes)


def test_a_webhook_that_is_down_or_hangs_neither_fails_nor_blocks_renew(
    lab: Lab, ops: Ops, capsys: pytest.CaptureFixture[str]
) -> None:
    canary = ops.nodes[0]
    with receiver() as hanging:
        hanging.hold = threading.Event()  # takes the request, never answers
        with_notify(ops, f'[[notify]]\nname = "down"\nwebhook = "{closed_port_url()}"\n'
                         f'[[notify]]\nname = "hangs"\nwebhook = "{hanging.url}"\ntimeout = 1\n'
                         f'[[notify]]\nname = "gone"\ncommand = ["{ops.dir}/no-such-pager"]\n')
        ops.import_cert(days_left=2)  # due: renew orders a new version
        with lab.faults.break_nginx(canary):
            code = ops.cli("renew")
        out, err = capsys.readouterr()
        # Exactly what renew exits with for a halted rollout that no host took.
        assert code == 1, (out, err)
        for name in ("down", "hangs", "gone"):
            assert f"notify {name}: " in err and "could not deliver halted" in err
        assert SECRET not in out + err
        current = ops.store.current("media")
        assert current is not None and "Pebble" in current.issuer  # the renewal happened

        # Healed, the next renew brings every node to the new version.
        assert ops.cli("renew") == 0
    for node in ops.nodes:
        assert ops.served(node) == current.sha256
