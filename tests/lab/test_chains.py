"""Chain-complete releases on the lab: import refuses what cannot be served whole, and
status sees a node that serves its leaf without the intermediate."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from certfan.config import Endpoint
from certfan.deploy import probe
from certfan_lab import Lab, extra
from helpers.ops import Ops, restore_logging

restore = pytest.fixture(autouse=True)(restore_logging)


@pytest.fixture
def ops(lab: Lab, tmp_path: Path) -> Ops:
    return Ops(lab, tmp_path)


@pytest.fixture
def chain(tmp_path: Path) -> dict[str, Path]:
    made = extra.chain_of(["media.lab.test"])
    files = {"root": made.root, "intermediate": made.intermediate, "leaf": made.leaf,
             "fullchain": made.leaf + made.intermediate, "foreign": made.leaf + made.foreign,
             "wrong-order": made.intermediate + made.leaf}
    paths = {name: tmp_path / f"{name}.pem" for name in files}
    for name, data in files.items():
        paths[name].write_bytes(data)
    paths["key"] = tmp_path / "privkey.pem"
    paths["key"].write_bytes(made.key)
    paths["key"].chmod(0o600)
    paths["other-key"] = tmp_path / "other.key"
    paths["other-key"].write_bytes(extra.chain_of(["media.lab.test"]).key)
    return paths


def _wait_serving(address: str, count: int, timeout: float = 10.0, settled: int = 10) -> None:
    """Until the node presents ``count`` certificate(s) for media.lab.test on ``settled``
    handshakes in a row: after a reload nginx's old workers keep answering for a while,
    so one new answer does not mean the next handshake (status's) gets it too."""
    deadline = time.monotonic() + timeout
    streak = 0
    while streak < settled:
        answer = probe.served_chain(Endpoint(address, 443), "media.lab.test", 2.0)
        streak = streak + 1 if isinstance(answer, list) and len(answer) == count else 0
        assert time.monotonic() < deadline, f"{address} still presents {len(answer)}"
        if streak == 0:
            time.sleep(0.05)


def _import(ops: Ops, capsys: pytest.CaptureFixture[str], key: Path, fullchain: Path,
            *more: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = ops.cli("import", "media", "--key", str(key), "--fullchain", str(fullchain), *more)
    out, err = capsys.readouterr()
    return code, out, err


def test_leaf_only_is_refused_and_accepted_with_chain(lab, ops, chain, capsys) -> None:  # type: ignore[no-untyped-def]
    trust = ("--trust", str(chain["root"]))
    code, out, err = _import(ops, capsys, chain["key"], chain["leaf"], *trust)
    assert code == 1 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"certfan: error: refusing to import: {chain['leaf']}: the leaf alone, "
                          "without the intermediate certificates of its issuer "
                          "CN=certfan lab intermediate (give them with --chain FILE)"), err
    assert ops.versions() == []

    code, out, err = _import(ops, capsys, chain["key"], chain["leaf"], *trust,
                             "--chain", str(chain["intermediate"]))
    assert code == 0, err
    current = ops.store.current("media")
    assert current is not None and ops.versions() == [current.version]
    stored = current.file("fullchain.pem").read_bytes()
    assert stored == chain["fullchain"].read_bytes()
    assert current.file("chain.pem").read_bytes() == chain["intermediate"].read_bytes()

    # the same material again (now as one fullchain file): nothing new is stored
    code, out, err = _import(ops, capsys, chain["key"], chain["fullchain"], *trust)
    assert code == 0 and out.strip() == (f"media: already the current version "
                                         f"{current.version}; nothing stored"), out
    assert ops.versions() == [current.version]

    # without --trust the root is unknown: the chain ends nowhere certfan trusts
    code, _, err = _import(ops, capsys, chain["other-key"], chain["fullchain"])
    assert code == 1 and "private key does not match" in err and "trusted root" in err, err


@pytest.mark.parametrize(("bad", "says"), [
    ("wrong-order", "out of order: the leaf (CN=media.lab.test) is certificate 2"),
    ("foreign", "certificate 1 (CN=media.lab.test) is not signed by the next one, "
                "2 (CN=certfan lab intermediate)"),
])
def test_a_wrong_order_or_foreign_intermediate_is_refused(lab, ops, chain, capsys, bad: str,  # type: ignore[no-untyped-def]
                                                          says: str) -> None:
    code, _, err = _import(ops, capsys, chain["key"], chain[bad], "--trust", str(chain["root"]))
    assert code == 1 and len(err.splitlines()) == 1, err
    assert f"refusing to import: {chain[bad]}: {says}" in err, err
    assert ops.versions() == []


def test_a_key_that_does_not_match_is_refused(lab, ops, chain, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = _import(ops, capsys, chain["other-key"], chain["fullchain"],
                           "--trust", str(chain["root"]))
    assert code == 1 and len(err.splitlines()) == 1, err
    assert (f"refusing to import: {chain['other-key']}: the private key does not match the "
            f"certificate in {chain['fullchain']}") in err, err
    assert ops.versions() == []


def test_status_warns_about_a_node_serving_its_leaf_without_the_intermediate(  # type: ignore[no-untyped-def]
        lab, ops, chain, capsys) -> None:
    assert _import(ops, capsys, chain["key"], chain["fullchain"],
                   "--trust", str(chain["root"]))[0] == 0
    assert ops.cli("push") == 0
    release = ops.store.current("media")
    assert release is not None
    capsys.readouterr()
    assert ops.cli("status", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "OK"

    node = lab.node(ops.nodes[1])
    served = node.root / "archive" / "media" / release.version / "fullchain.pem"
    whole = served.read_bytes()
    tmp = served.with_name("fullchain.pem.tmp")
    tmp.write_bytes(chain["leaf"].read_bytes())  # by hand, as the incident's scp did
    os.chown(tmp, lab.uid, lab.gid)
    os.replace(tmp, served)
    try:
        extra.reload_nginx(lab, node)
        _wait_serving(node.address, 1)  # the new workers take over a moment after the signal
        capsys.readouterr()
        code = ops.cli("status")
        out = capsys.readouterr().out
        assert code == 1, out
        lines = [line for line in out.splitlines() if "served chain" in line]
        assert len(lines) == 1 and node.name in lines[0], out
        assert ("media.lab.test: served chain: serves the leaf only, without the 1 "
                "intermediate(s) deployed") in lines[0], out
    finally:
        tmp.write_bytes(whole)
        os.chown(tmp, lab.uid, lab.gid)
        os.replace(tmp, served)
        extra.reload_nginx(lab, node)
        _wait_serving(node.address, 2)
