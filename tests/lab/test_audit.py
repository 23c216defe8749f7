"""certfan audit on the lab: every certificate the nodes' nginx uses, managed or not."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from certfan_lab import Lab, extra
from helpers.ops import Ops, restore_logging

restore = pytest.fixture(autouse=True)(restore_logging)


@pytest.fixture
def ops(lab: Lab, tmp_path: Path) -> Ops:
    return Ops(lab, tmp_path)


def _snapshot(lab: Lab, nodes: tuple[str, ...]) -> dict[str, Any]:
    """What serves: every file under each node's cert root and sites, with its mtime,
    and each nginx master's pid."""
    seen: dict[str, Any] = {}
    for name in nodes:
        node = lab.node(name)
        for top in (node.root, node.nginx_prefix / "sites"):
            for dirpath, _, files in os.walk(top):
                for f in files:
                    path = Path(dirpath) / f
                    seen[str(path)] = path.lstat().st_mtime_ns
        seen[f"{name} nginx"] = lab.nginx_master_pid(name)
    return seen


@pytest.fixture
def fleet(lab: Lab, ops: Ops) -> Iterator[dict[str, extra.HandMade]]:
    """Hand-made certificates beside certfan's: one expiring on every node, one only on
    the first two, one name served with a different certificate on two nodes, and one
    leaf without its CA on the fourth."""
    made = {
        "expiring": extra.hand_made(["expiring.example", "www.expiring.example"], days_left=3),
        "partial": extra.hand_made(["partial.example"], days_left=60),
        "split-a": extra.hand_made(["split.example"], days_left=50),
        "split-b": extra.hand_made(["split.example"], days_left=40),
        # copied without its CA: the leaf alone, as in the incident
        "leafonly": replace(extra.hand_made(["leafonly.example"], days_left=45), chain=b""),
    }
    a, b = ops.nodes[0], ops.nodes[1]
    placed = [(n, "expiring", made["expiring"]) for n in ops.nodes]
    placed += [(a, "partial", made["partial"]), (b, "partial", made["partial"])]
    placed += [(a, "split", made["split-a"]), (b, "split", made["split-b"])]
    placed += [(ops.nodes[3], "leafonly", made["leafonly"])]
    with extra.sites(lab, placed):
        yield made


def _audit(ops: Ops, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    code = ops.cli("audit", "--json", *args)
    return code, json.loads(capsys.readouterr().out)


def test_audit_lists_managed_and_hand_made_certificates(lab, ops, fleet, capsys) -> None:  # type: ignore[no-untyped-def]
    before = _snapshot(lab, ops.nodes)
    code, doc = _audit(ops, capsys)
    assert _snapshot(lab, ops.nodes) == before  # it only reads
    assert code == 2 and doc["state"] == "CRITICAL", doc["state"]
    assert all(h["error"] is None for h in doc["hosts"]), doc["hosts"]
    by = {(c["host"], c["names"][0]): c for c in doc["certificates"]}

    for node in ops.nodes:  # certfan's own: the seeded certbot certificate, 3 days left
        media = by[(node, "media.lab.test")]
        assert media["managed"] == "media"
        assert media["file"] == str(lab.node(node).root / "live" / "media" / "fullchain.pem")
        assert media["certificate"]["sha256"] == lab.seed_sha256
        assert media["state"] == "CRITICAL" and 2 < media["days_left"] < 3.1

        expiring = by[(node, "expiring.example")]
        assert expiring["managed"] is None and expiring["state"] == "CRITICAL"
        assert expiring["certificate"]["sha256"] == fleet["expiring"].sha256
        assert expiring["certificate"]["sans"] == ["expiring.example", "www.expiring.example"]
        assert "hand-made CA for expiring.example" in expiring["certificate"]["issuer"]
        assert [s["sha256"] for s in expiring["served"]] == [fleet["expiring"].sha256] * 2
        assert "not managed by certfan" in expiring["notes"]

    partial = {h for (h, name) in by if name == "partial.example"}
    assert partial == set(ops.nodes[:2])
    assert all(by[(h, "partial.example")]["state"] == "OK" for h in partial)
    assert by[(ops.nodes[0], "split.example")]["certificate"]["sha256"] == fleet["split-a"].sha256
    assert by[(ops.nodes[1], "split.example")]["certificate"]["sha256"] == fleet["split-b"].sha256
    leafonly = by[(ops.nodes[3], "leafonly.example")]
    assert leafonly["state"] == "WARNING" and leafonly["managed"] is None
    alone = ("the file holds the leaf alone, without the intermediate of its issuer "
             "CN=hand-made CA for leafonly.example")
    assert any(n.startswith(alone) for n in leafonly["notes"]), leafonly["notes"]
    assert len(doc["conflicts"]) == 1, doc["conflicts"]
    assert doc["conflicts"][0].startswith("split.example: served with 2 different certificates")


def test_audit_text_is_sorted_by_urgency_and_narrows_to_hosts(lab, ops, fleet, capsys) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert ops.cli("audit", "--host", ops.nodes[2], "--crit-days", "1") == 1  # WARNING
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("AUDIT WARNING - 2 certificate(s) on 1 host(s)"), out[0]
    rows = [line for line in out if line.split()[0] in ("OK", "WARNING", "CRITICAL")]
    assert [r.split()[0] for r in rows] == ["WARNING", "WARNING"], out
    assert all(r.split()[1] == ops.nodes[2] for r in rows)
    assert "partial.example" not in "\n".join(out)


def test_a_referenced_file_that_is_gone_is_reported(lab, ops, capsys) -> None:  # type: ignore[no-untyped-def]
    made = extra.hand_made(["gone.example"], days_left=30)
    node = ops.nodes[0]
    with extra.sites(lab, [(node, "gone", made)]):
        (extra.site_dir(lab.node(node)) / "gone.fullchain.pem").unlink()
        code, doc = _audit(ops, capsys, "--host", node)
    assert code == 3, doc
    (host,) = doc["hosts"]
    assert "files referenced but missing" in host["error"] and "gone.fullchain.pem" in host["error"]
