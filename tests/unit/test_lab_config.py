"""The lab's generated certfan config: the checked-in conf/lab.toml is what the default
lab writes, and overrides land where asked. Nothing is started (no root needed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from certfan_lab import DEFAULT_DIR, Lab

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_lab_config_is_what_the_default_lab_generates() -> None:
    generated = Lab(base_dir=DEFAULT_DIR).config_text()
    assert (REPO / "conf" / "lab.toml").read_text() == generated


def test_config_overrides_and_benchmark_nodes() -> None:
    big = Lab(base_dir=DEFAULT_DIR, extra_nodes=3)
    conf = tomllib.loads(
        big.config_text(
            state_dir="/tmp/s",
            rollout={"canary": 2},
            hosts={"sally": {"port": 2222}},
            certificates={"wild": None},
        )
    )
    assert conf["state_dir"] == "/tmp/s" and conf["rollout"]["canary"] == 2
    assert conf["groups"]["edges"] == ["edge-01", "edge-02", "edge-03"]
    assert [h["port"] for h in conf["hosts"] if h["name"] == "sally"] == [2222]
    assert [c["name"] for c in conf["certificates"]] == ["media", "static"]
    assert conf["certificates"][0]["deploy_to"] == ["cdn", "edges"]
    assert conf["hosts"][-1]["address"] == "10.77.7.2"
