"""Faults on the way to a certificate: the DNS server and the ACME CA.

Each case: v1 (due for renewal) on every node; ``certfan renew`` while the
fault is on fails to renew, and must leave no TXT value behind and nothing
half-stored; the fault is healed; ``certfan renew`` runs again (then once
more, a no-op); the CA must have issued exactly one certificate, v2, now on
every node; then the four invariants (helpers.reliability).
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

import pytest

from certfan.issue import dns01
from helpers.reliability import (
    AcmeProxy,
    Case,
    SlowDns,
    txt_snapshot,
    wait_exit,
)

pytestmark = pytest.mark.lab


def _renew_fails(case: Case, *said: str) -> dict:
    """``certfan renew --json`` fails to renew (exit 1), saying ``said``; v1 stays current."""
    v1 = case.current()
    run = case.cli("renew", "--json")
    doc = run.json()
    assert run.code == 1, run
    [issued] = doc["issued"]
    assert issued["version"] is None and issued["error"], doc
    for words in said:
        assert words in issued["error"], issued["error"]
    assert doc["rollout"] is None  # every node was, and is, on v1
    assert case.current() == v1 and case.versions() == [v1.version]
    return doc


def _healed(case: Case) -> None:
    v1 = case.current()
    case.heal()
    v2 = case.current()
    assert v2 != v1
    case.assert_invariants(v2.version, issued=1)


def test_dns_update_refused_bad_tsig(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    good = case.tsig_secret.read_bytes()
    case.tsig_secret.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    try:
        _renew_fails(case, "BADSIG", "dns.tsig_secret_file")
        assert txt_snapshot(lab) == case.baseline.txt
    finally:
        case.tsig_secret.write_bytes(good)
    _healed(case)


def test_dns_server_down(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    with lab.faults.stop_dns():
        _renew_fails(case, "cannot look up _acme-challenge.media.lab.test", "timed out")
    _healed(case)


def test_dns_server_down_when_the_values_are_to_be_removed(lab, make_case, tmp_path: Path) -> None:
    """named goes away after the update: the value cannot be removed in this run, stays in
    the zone (named's journal brings it back), and the next run must remove it."""
    case = make_case(dns={"propagation_timeout": 2.0})
    case.start()
    pause = tmp_path / "pause"
    pause.mkdir()
    proc = case.process("renew", at=r"^published TXT for ",
                           action=f"pause:{pause}", log=tmp_path / "run.log")
    _wait_file(pause / "reached", proc)
    with lab.faults.stop_dns():
        (pause / "go").touch()
        code = wait_exit(proc)
    log = (tmp_path / "run.log").read_text()
    assert code == 1, log[-3000:]
    assert "could not remove TXT value" in log and "the next run removes it" in log, log[-3000:]
    left = txt_snapshot(lab)["_acme-challenge.media.lab.test"] - case.baseline.txt[
        "_acme-challenge.media.lab.test"]
    assert len(left) == 1, "the fault left no value behind: the case tests nothing"
    pending = json.loads((case.state / dns01.PENDING_FILE).read_text())
    assert [e["value"] for e in pending] == list(left)
    _healed(case)


def test_dns_server_slow_past_the_deadline(lab, make_case, tmp_path: Path) -> None:
    """The authoritative server answers, but 2.5s late: past dns.propagation_timeout (1s)."""
    slow = SlowDns(lab.dns_port, delay=2.5)
    try:
        case = make_case(dns={"nameservers": [f"127.0.0.1:{slow.port}"],
                                        "propagation_timeout": 1.0, "poll_interval": 0.2})
        case.start()
        started = time.monotonic()
        _renew_fails(case, "not served after 1s", "dns.propagation_timeout")
        assert time.monotonic() - started < 10  # the deadline held; no query outlived it
        assert slow.queries > 0
        slow.delay = 0.0
        _healed(case)
    finally:
        slow.close()


def test_acme_server_down(lab, make_case, tmp_path: Path) -> None:
    case = make_case()
    case.start()
    with lab.faults.stop_pebble():
        _renew_fails(case, "cannot reach the CA")
    _healed(case)  # a new Pebble: the account is registered again


@pytest.mark.parametrize(
    ("path", "step"),
    [(r"^/order-plz", "new order"), (r"^/finalize-order/", "finalize")],
    ids=["new-order", "finalize"],
)
def test_acme_server_errors(lab, make_case, tmp_path: Path, path: str, step: str) -> None:
    """The CA answers 500 (serverInternal) to new orders, or to finalize (after DNS-01)."""
    proxy = AcmeProxy(lab)
    try:
        case = make_case(acme={"directory": proxy.directory})
        case.start()
        fault = proxy.fail(path, 500, "serverInternal", "the CA is having a bad day")
        _renew_fails(case, "the CA is having a bad day", "serverInternal")
        assert fault.hits >= 1
        if step == "finalize":  # the challenge was answered: DNS-01 ran and was cleaned up
            assert any("/chalZ/" in p for _, p, _ in proxy.requests)
        proxy.clear()
        _healed(case)
    finally:
        proxy.close()


def test_acme_server_rate_limits(lab, make_case, tmp_path: Path) -> None:
    proxy = AcmeProxy(lab)
    try:
        case = make_case(acme={"directory": proxy.directory})
        case.start()
        fault = proxy.fail(r"^/order-plz", 429, "rateLimited", "too many new orders recently",
                           retry_after=3600)
        _renew_fails(case, "rate limited", "too many new orders recently", "retry after 3600s")
        assert fault.hits == 1  # not hammered: one refused order, no retry in the run
        # The next timer run, within the Retry-After: no order at all, nothing failed.
        again = case.cli("renew", "--json")
        assert again.code == 0, again
        [status] = [s for s in again.json()["due"] if s["cert"] == "media"]
        assert not status["due"] and "rate limited by the CA until" in status["reason"]
        assert fault.hits == 1 and not again.json()["issued"]
        # The hour passes (the back-off file says when it ends) and the CA is fine again.
        backoff = case.state / "certs" / "media" / "backoff.json"
        doc = json.loads(backoff.read_text())
        backoff.write_text(json.dumps({**doc, "until": "2000-01-01T00:00:00+00:00"}))
        proxy.clear()
        _healed(case)
        assert not backoff.exists()  # a successful order ends the back-off
    finally:
        proxy.close()


def _wait_file(path: Path, proc, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, "certfan exited before reaching the step"
        assert time.monotonic() < deadline, f"certfan never reached {path.parent.name}"
        time.sleep(0.01)
