"""The lab slot table (certfan_lab/slots.py): one definition, no two slots collide, and
``python -m certfan_lab`` options move single parameters of a slot."""

from __future__ import annotations

import argparse

import pytest

from certfan_lab import __main__ as lab_main
from certfan_lab import slots
from certfan_lab.core import Lab


def _resolved(n: int) -> dict[str, object]:
    lab = Lab(**slots.lab_args(n))  # constructing plans only; nothing starts
    return {"dir": str(lab.dir), "prefix": lab.prefix, "subnet": lab.subnet, "user": lab.user,
            "ports": (lab.dns_port, lab.acme_port, lab.mgmt_port)}


def test_no_two_slots_share_a_directory_namespace_subnet_port_or_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CERTFAN_LAB_DIR", raising=False)
    rows = [_resolved(n) for n in range(slots.MAX_SLOT + 1)]
    for key in ("dir", "prefix", "subnet", "user"):
        assert len({r[key] for r in rows}) == len(rows), key
    ports = [p for r in rows for p in r["ports"]]  # type: ignore[attr-defined]
    assert len(set(ports)) == len(ports)
    assert rows[0]["dir"] == "/tmp/certfan-lab" and rows[5]["dir"] == "/tmp/certfan-lab-5"
    assert slots.lab_args(slots.BENCH_SLOT)["base_dir"] == "/tmp/certfan-lab-7"


@pytest.mark.parametrize("bad", ["10", "-1", "x", "1.5"])
def test_a_bad_slot_is_refused(bad: str) -> None:
    with pytest.raises(slots.SlotError, match="a lab slot is a number 0-9"):
        slots.parse(bad)


def test_slot_from_the_environment_and_single_options_over_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(slots.SLOT_ENV, "4")
    ap_args = ["up", "--dns-port", "20053", "--dir", "/tmp/mine"]
    got = lab_main.lab_args(_parse(ap_args))
    assert got == {**slots.lab_args(4), "dns_port": 20053, "base_dir": "/tmp/mine"}
    assert lab_main.lab_args(_parse(["up", "--slot", "2"])) == slots.lab_args(2)
    monkeypatch.delenv(slots.SLOT_ENV)
    assert lab_main.lab_args(_parse(["demo"])) == {}


def _parse(argv: list[str]) -> argparse.Namespace:
    return lab_main.parser().parse_args(argv)
