"""status on the lab: every node on the lab's seeded certificate (three days left) is
CRITICAL; a newer current version nobody serves yet is drift (WARNING); a node cut off
is UNKNOWN, never OK. The pure half is tests/unit/test_status_units.py."""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certfan.commands.status import CRITICAL, OK, UNKNOWN, WARNING
from helpers.ops import Ops, restore_logging

NOW = datetime(2030, 1, 1, tzinfo=UTC)

_logging = pytest.fixture(autouse=True)(restore_logging)


def _families(text: str) -> dict[str, list]:  # type: ignore[type-arg]
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


# ---------------------------------------------------------------- on the lab


@pytest.fixture
def ops(lab, tmp_path: Path) -> Ops:  # type: ignore[no-untyped-def]
    return Ops(lab, tmp_path)


def _status(ops: Ops, capsys, *args: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    code = ops.cli("status", "--json", "--crit-days", "7", "--warn-days", "20", *args)
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit"] == code
    return code, doc


def test_status_on_the_lab_critical_warning_unknown_and_the_textfile(lab, ops, capsys):  # type: ignore[no-untyped-def]
    ops.write(connect_timeout=1.0)  # the cut node costs one connect timeout (all at once)
    prom = ops.dir / "textfile" / "certfan.prom"
    prom.parent.mkdir()
    seed = lab.pki.seed
    (ops.dir / "seed.key").write_bytes(seed.key)
    (ops.dir / "seed.pem").write_bytes(seed.fullchain)
    (ops.dir / "old-ca.pem").write_bytes(seed.chain)  # certbot's CA, the seed's root
    assert ops.cli("import", "media", "--key", str(ops.dir / "seed.key"), "--fullchain",
                   str(ops.dir / "seed.pem"), "--trust", str(ops.dir / "old-ca.pem")) == 0
    assert ops.cli("push") == 0

    # 1. Every node serves the seeded certificate: three days left is CRITICAL.
    code, doc = _status(ops, capsys, "--prometheus", str(prom))
    assert code == CRITICAL and doc["state"] == "CRITICAL"
    for check in doc["checks"]:
        assert check["state"] == "CRITICAL" and 2.5 < check["days_left"] < 3.1
        assert not check["drift"] and check["served"][0]["sha256"] == seed.sha256
    families = _families(prom.read_text())
    expiry = {s.labels["host"]: s.value
              for s in families["certfan_served_cert_expiry_timestamp_seconds"]}
    assert expiry == dict.fromkeys(ops.nodes, seed.not_after.timestamp())
    assert {s.value for s in families["certfan_served_cert_is_current"]} == {1.0}
    assert {s.value for s in families["certfan_status"]} == {CRITICAL}
    capsys.readouterr()
    text = ops.cli("status")
    lines = capsys.readouterr().out.splitlines()
    assert text == CRITICAL and lines[0].startswith("CERTFAN CRITICAL: 4 critical")

    # 2. A long-lived certificate everywhere (via renew: it records its success): OK.
    fresh = ops.import_cert(days_left=60)
    started = time.time()
    assert ops.cli("renew") == 0
    capsys.readouterr()
    code, doc = _status(ops, capsys, "--prometheus", str(prom))
    assert code == OK, doc
    families = _families(prom.read_text())
    [renewed] = families["certfan_last_renew_success_timestamp_seconds"]
    [rolled] = families["certfan_last_rollout_success_timestamp_seconds"]
    assert started - 1 <= rolled.value <= renewed.value <= time.time()
    assert {s.value for s in families["certfan_served_cert_expiry_timestamp_seconds"]} == {
        fresh.not_after.timestamp()}

    # 3. A newer current version that no node serves yet: drift, WARNING.
    newer = ops.import_cert(days_left=60)
    code, doc = _status(ops, capsys, "--prometheus", str(prom))
    assert code == WARNING
    for check in doc["checks"]:
        assert check["state"] == "WARNING" and check["drift"]
        assert check["current"] == newer.version and check["on_disk"] == fresh.version
    families = _families(prom.read_text())
    assert {s.value for s in families["certfan_served_cert_is_current"]} == {0.0}
    assert {s.value for s in families["certfan_deployed_is_current"]} == {0.0}
    assert ops.cli("push") == 0
    capsys.readouterr()

    # 4. A node cut off: UNKNOWN for it, never OK; the whole check is UNKNOWN too.
    with lab.faults.cut("esme"):
        code, doc = _status(ops, capsys, "--host", "esme")
        assert code == UNKNOWN
        [check] = doc["checks"]
        assert check["host"] == "esme" and check["state"] == "UNKNOWN"
        assert check["days_left"] is None and check["served"][0]["error"]
        code, doc = _status(ops, capsys, "--prometheus", str(prom))
        assert code == UNKNOWN
        assert {c["host"]: c["state"] for c in doc["checks"]} == {
            "cdn-frankfurt-1": "OK", "cdn-fremont-1": "OK", "sally": "OK", "esme": "UNKNOWN"}
    families = _families(prom.read_text())
    probes = {s.labels["host"]: s.value for s in families["certfan_probe_success"]}
    assert probes == {"cdn-frankfurt-1": 1.0, "cdn-fremont-1": 1.0, "sally": 1.0, "esme": 0.0}
    readable = {s.labels["host"]: s.value for s in families["certfan_host_readable"]}
    assert readable["esme"] == 0.0
    expiry_hosts = {s.labels["host"]
                    for s in families["certfan_served_cert_expiry_timestamp_seconds"]}
    assert "esme" not in expiry_hosts  # no made-up expiry for what could not be seen
    assert {s.labels["host"]: s.value for s in families["certfan_status"]}["esme"] == UNKNOWN
    assert not any(math.isnan(s.value) for f in families.values() for s in f)
