"""status without a lab: judging what hosts serve (pure functions), the monitoring
summary line, and the Prometheus textfile read back with prometheus_client's own parser.
The lab half is tests/lab/test_status.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certfan.cli import app as cli
from certfan.cli import render
from certfan.commands import prometheus, status
from certfan.commands.status import CRITICAL, OK, UNKNOWN, WARNING, Check, Served
from certfan.state import history
from helpers.ops import Ops, restore_logging

NOW = datetime(2030, 1, 1, tzinfo=UTC)

_logging = pytest.fixture(autouse=True)(restore_logging)


def _check(days: float | None = 60.0, sha: str = "aa", **changes: object) -> Check:
    served = Served("media.lab.test", "media.lab.test", sha256=sha,
                    not_after=NOW + timedelta(days=days), version="0002-aaaaaaaaaaaa") \
        if days is not None else Served("media.lab.test", "media.lab.test", error="timed out")
    check = Check("sally", "media", "0002-aaaaaaaaaaaa", "aa", on_disk="0002-aaaaaaaaaaaa",
                  served=(served,))
    return replace(check, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("check", "state", "reason"),
    [
        (_check(), OK, None),
        (_check(days=15), WARNING, "expires in 15.0 days"),
        (_check(days=3), CRITICAL, "expires in 3.0 days"),
        (_check(days=-1), CRITICAL, "EXPIRED"),
        (_check(sha="bb"), WARNING, "serves 0002-aaaaaaaaaaaa, not the current"),
        (_check(on_disk="0001-bbbbbbbbbbbb"), WARNING, "on disk: 0001-bbbbbbbbbbbb"),
        (_check(on_disk="certbot directory"), WARNING, "on disk: certbot directory"),
        (_check(days=None), UNKNOWN, "timed out"),
        (_check(disk_error="connect timed out"), UNKNOWN, "cannot read the host"),
        # unreachable over SSH but serving an expired certificate: CRITICAL wins
        (_check(days=-1, disk_error="connect timed out"), CRITICAL, "EXPIRED"),
        # unreachable and drifting: not knowing weighs more than a known drift
        (_check(days=None, on_disk="0001-bbbbbbbbbbbb"), UNKNOWN, "on disk"),
        (_check(current=None, current_sha256=None), WARNING, "no version in the store"),
    ],
)
def test_evaluate(check: Check, state: int, reason: str | None) -> None:
    judged = status.evaluate(check, NOW, warn_days=20, crit_days=7)
    assert judged.state == state, judged.reasons
    if reason is None:
        assert judged.reasons == ()
    else:
        assert any(reason in r for r in judged.reasons), judged.reasons


def test_worst_orders_critical_unknown_warning_ok() -> None:
    assert status.worst([OK, WARNING, UNKNOWN]) == UNKNOWN
    assert status.worst([UNKNOWN, CRITICAL, WARNING]) == CRITICAL
    assert status.worst([OK, WARNING]) == WARNING
    assert status.worst([]) == OK
    assert status.Report((), NOW, 20, 7).state == UNKNOWN  # nothing checked is not healthy


def _families(text: str) -> dict[str, list]:  # type: ignore[type-arg]
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_prometheus_text_parses_and_carries_the_values() -> None:
    good = status.evaluate(_check(), NOW, 20, 7)
    cut = status.evaluate(replace(_check(days=None, disk_error="timed out"),
                                  host='odd "host"\\'), NOW, 20, 7)
    renewed = NOW - timedelta(hours=3)
    report = status.Report(
        (good, cut), NOW, 20, 7, {"media": NOW + timedelta(days=60)},
        history.History(renew_last_success=renewed,
                        rollout_last_success={"media": renewed + timedelta(minutes=1)}))
    families = _families(prometheus.prometheus_text(report))
    [expiry] = families["certfan_served_cert_expiry_timestamp_seconds"]
    assert expiry.labels == {"host": "sally", "cert": "media", "name": "media.lab.test"}
    assert expiry.value == (NOW + timedelta(days=60)).timestamp()
    assert [s.value for s in families["certfan_served_cert_is_current"]] == [1.0]
    probes = {s.labels["host"]: s.value for s in families["certfan_probe_success"]}
    assert probes == {"sally": 1.0, 'odd "host"\\': 0.0}
    states = {s.labels["host"]: s.value for s in families["certfan_status"]}
    assert states == {"sally": OK, 'odd "host"\\': UNKNOWN}
    [renew] = families["certfan_last_renew_success_timestamp_seconds"]
    assert renew.value == renewed.timestamp()
    [rolled] = families["certfan_last_rollout_success_timestamp_seconds"]
    assert rolled.labels == {"cert": "media"} and rolled.value == renewed.timestamp() + 60


def test_summary_line_is_a_monitoring_plugin_line() -> None:
    report = status.Report((status.evaluate(_check(days=3), NOW, 20, 7),), NOW, 20, 7)
    line = render.status_summary(report)
    assert line.startswith("CERTFAN CRITICAL: 1 critical, 0 warning, 0 unknown, 0 ok")
    assert line.endswith("'sally media'=3.00;20:;7:")


def test_human_status_starts_with_the_state_and_ends_with_the_perfdata() -> None:
    """The perfdata goes last, after '|' (the plugin API reads it from the long output),
    so the first line a person reads is short: the state and the counts."""
    report = status.Report((status.evaluate(_check(days=3), NOW, 20, 7),
                            status.evaluate(_check(days=40, host="esme"), NOW, 20, 7)),
                           NOW, 20, 7)
    lines = render.status_text(report)
    assert lines[0] == "CERTFAN CRITICAL: 1 critical, 0 warning, 0 unknown, 1 ok (2 host/" \
                       "certificate pair(s))"
    assert "|" not in lines[0] and lines[1].split() == ["HOST", "CERT", "CURRENT", "ON", "DISK",
                                                        "SERVES", "DAYS", "LEFT", "STATE"]
    assert lines[-1] == "| 'sally media'=3.00;20:;7: 'esme media'=40.00;20:;7:"
    assert "" not in lines


# ---------------------------------------------------------------- on the lab


@pytest.fixture
def ops(lab, tmp_path: Path) -> Ops:  # type: ignore[no-untyped-def]
    return Ops(lab, tmp_path)


def test_a_check_that_cannot_check_is_unknown(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "certfan.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[acme]\ndirectory = "https://127.0.0.1:9/dir"\n'
        '[dns]\ntsig_key_name = "k."\ntsig_secret_file = "tsig"\n'
        '[[hosts]]\nname = "a"\naddress = "192.0.2.1"\n'
        '[[certificates]]\nname = "media"\ndomains = ["media.example"]\ndeploy_to = ["a"]\n'
    )
    for args in (["status", "--host", "nosuch"], ["status", "--cert", "nosuch"]):
        assert cli.main(["-c", str(config), *args]) == UNKNOWN
        assert capsys.readouterr().out.startswith("CERTFAN UNKNOWN: ")
    assert cli.main(["-c", str(tmp_path / "missing.toml"), "status"]) == UNKNOWN
    assert "cannot read" in capsys.readouterr().out
