"""The fleet policy's pure rules: limits, hold-forward, retried-first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certfan.config import Host
from certfan.deploy import policy
from certfan.state.deploy import HostDeploy

NOW = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(("limit", "hosts", "allowed"), [
    (0, 50, 0), (2, 4, 2), ("10%", 50, 5), ("10%", 4, 0), ("25%", 4, 1), ("50%", 5, 2),
    ("100%", 7, 7), ("12.5%", 8, 1),
])
def test_a_limit_is_a_count_or_a_share_rounded_down(limit: int | str, hosts: int,
                                                    allowed: int) -> None:
    assert policy.allowed(limit, hosts) == allowed


@pytest.mark.parametrize(("previous", "revoked", "days", "held"), [
    ("../archive/media/0001-a", {}, 30, None),
    ("../archive/media/0001-a", {}, 6.5, "expires in 6.5 days"),
    ("../archive/media/0001-a", {"0001-a": "keyCompromise"}, 30, "was revoked (keyCompromise)"),
    ("../archive/media/certbot-3", {}, 2, "certbot-3 expires in 2.0 days"),
    (None, {}, 1, None),  # a first deployment: removing the pointer is no certificate
    ("../archive/media/0001-a", {}, None, None),  # not known: no reason to hold
])
def test_hold_forward(previous: str | None, revoked: dict[str, str], days: float | None,
                      held: str | None) -> None:
    not_after = None if days is None else NOW + timedelta(days=days)
    reason = policy.hold_forward_reason(previous, revoked, not_after, NOW)
    assert (reason is None) is (held is None)
    assert held is None or held in (reason or "")


def test_hosts_that_failed_last_time_go_first_in_config_order() -> None:
    hosts = tuple(Host(name=n, address="192.0.2.1") for n in ("a", "b", "c", "d"))
    recorded = {"c": HostDeploy(last_error="test: exit status 1"), "b": HostDeploy(),
                "d": HostDeploy(last_error="connect: timed out")}
    assert [h.name for h in policy.retried_first(hosts, recorded)] == ["c", "d", "a", "b"]
