"""certfan doctor on the lab: the whole path proven before a rollout, nothing served changed."""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certfan_lab import Lab, extra
from helpers.ops import Ops, restore_logging

restore = pytest.fixture(autouse=True)(restore_logging)
NAME = "media.lab.test"
FORBIDDEN = "shop.caa-forbidden.lab.test"


def _served(lab: Lab, nodes: tuple[str, ...]) -> dict[str, Any]:
    """What serves: every file under the cert roots and nginx sites (with mtimes), each
    nginx master's pid, and the leaf each node presents."""
    seen: dict[str, Any] = {}
    for name in nodes:
        node = lab.node(name)
        for top in (node.root, node.nginx_prefix / "sites"):
            for dirpath, _, files in os.walk(top):
                for f in files:
                    seen[os.path.join(dirpath, f)] = os.lstat(os.path.join(dirpath, f)).st_mtime_ns
        seen[f"{name} nginx"] = lab.nginx_master_pid(name)
        seen[f"{name} leaf"] = lab.served_leaf(name, NAME)
    return seen


def _doctor(ops: Ops, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = ops.cli("doctor", "--json")
    return code, json.loads(capsys.readouterr().out)


def _by(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(f["subject"], f["check"]): f for part in ("hosts", "certificates", "ca")
            for f in doc[part]}


@pytest.fixture
def ops(lab: Lab, tmp_path: Path) -> Ops:
    return Ops(lab, tmp_path)


def test_doctor_on_a_healthy_lab_is_all_ok(lab, ops, capsys) -> None:  # type: ignore[no-untyped-def]
    before = _served(lab, ops.nodes)
    code, doc = _doctor(ops, capsys)
    assert _served(lab, ops.nodes) == before
    bad = [f for part in ("hosts", "certificates", "ca") for f in doc[part] if f["state"] != "OK"]
    assert code == 0 and doc["state"] == "OK" and not bad, bad
    by = _by(doc)
    for node in ops.nodes:
        for check in ("ssh", "root writable", "config test", "reload", f"nginx media {NAME}"):
            assert (node, check) in by, (node, check)
    assert ("media", "dns txt") in by and ("media", f"caa {NAME}") in by
    assert {c for s, c in by if s == "CA"} == {"directory", "terms", "account"}
    assert lab.dns_query(f"_acme-challenge.{NAME}", "TXT") == []  # the test value is gone


def test_doctor_follows_cnames_and_narrows_to_a_certificate(lab, ops, capsys) -> None:  # type: ignore[no-untyped-def]
    ops.config_path = lab.write_config(ops.dir / "certfan.toml", ops.state)  # wild, static too
    capsys.readouterr()
    assert ops.cli("doctor", "--cert", "static", "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hosts"] == []  # static goes to no host
    zone = _by(doc)[("static", "dns zone")]
    assert zone["reason"] == ("_acme-challenge.static.lab.test -> static.delegated.test.: "
                              "zone delegated.test."), zone
    assert {f["subject"] for f in doc["certificates"]} == {"static"}


@pytest.fixture
def broken(lab: Lab, ops: Ops, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Five faults at once, each on its own host or part: nginx pointing elsewhere, no
    sudo rule for the reload, no known_hosts entry, a wrong TSIG secret, CAA forbidding."""
    elsewhere, nosudo, unknown = ops.nodes[0], ops.nodes[1], ops.nodes[2]
    (tmp_path / "empty_known_hosts").write_text("")
    secret = tmp_path / "wrong.secret"
    secret.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    secret.chmod(0o600)
    ops.config_path = lab.write_config(
        tmp_path / "certfan.toml", ops.state,
        certificates={"wild": None, "static": None,  # the lab zone's CAA is at caa-forbidden
                      "forbidden": {"domains": [FORBIDDEN], "deploy_to": []}},
        acme={"caa_identities": ["pebble.lab.test"]},
        dns={"tsig_secret_file": str(secret)},
        hosts={nosudo: {"reload": ["sudo", "-n", "systemctl", "reload", "nginx"]},
               unknown: {"known_hosts": str(tmp_path / "empty_known_hosts")}})
    with extra.served_from_elsewhere(lab, elsewhere) as copy:
        yield {"elsewhere": elsewhere, "nosudo": nosudo, "unknown": unknown, "copy": str(copy)}


def test_doctor_reports_each_fault_on_its_own_line(lab, ops, broken, capsys) -> None:  # type: ignore[no-untyped-def]
    before = _served(lab, ops.nodes)
    code, doc = _doctor(ops, capsys)
    assert _served(lab, ops.nodes) == before  # nothing that serves changed
    assert code == 2 and doc["state"] == "CRITICAL"
    by = _by(doc)
    critical = sorted(k for k, f in by.items() if f["state"] == "CRITICAL")
    assert critical == sorted([
        (broken["elsewhere"], f"nginx media {NAME}"),
        (broken["nosudo"], "reload"),
        (broken["unknown"], "ssh"),
        ("media", "dns txt"),
        ("forbidden", "dns txt"),  # the same wrong TSIG secret
        ("forbidden", f"caa {FORBIDDEN}"),
    ]), critical

    pointed = by[(broken["elsewhere"], f"nginx media {NAME}")]
    assert broken["copy"] in pointed["reason"] and "/live/media/fullchain.pem" in pointed["fix"]
    reload = by[(broken["nosudo"], "reload")]
    assert reload["reason"].startswith("sudo -n does not allow systemctl reload nginx for")
    assert "NOPASSWD: systemctl reload nginx" in reload["fix"]
    ssh = by[(broken["unknown"], "ssh")]
    address = lab.node(broken["unknown"]).address
    assert f"ssh-keyscan {address} >> " in ssh["fix"] and "out of band" in ssh["fix"]
    assert "TSIG" in by[("media", "dns txt")]["reason"] or "BADSIG" in by[
        ("media", "dns txt")]["reason"] or "NOTAUTH" in by[("media", "dns txt")]["reason"], by[
        ("media", "dns txt")]
    caa = by[("forbidden", f"caa {FORBIDDEN}")]
    assert caa["reason"] == ("CAA at caa-forbidden.lab.test. issue allows other-ca.example, not "
                             "this CA (pebble.lab.test)"), caa
    assert by[("media", f"caa {NAME}")]["state"] == "OK"
    # the other hosts' checks are fine: one line per fault, not a cascade
    assert by[(broken["elsewhere"], "reload")]["state"] == "OK"
    assert by[(broken["nosudo"], f"nginx media {NAME}")]["state"] == "OK"

    capsys.readouterr()
    assert ops.cli("doctor") == 2
    text = capsys.readouterr().out
    assert text.startswith("DOCTOR CRITICAL - 6 CRITICAL"), text
    assert f"host {broken['nosudo']}" in text and "fix:" in text
