"""When certificates are due: lifetime fractions and ACME Renewal Information.

The ARI tests serve a directory and renewalInfo documents from a tiny
http.server in this process, over real HTTP through certfan's ACME client.
Why not Pebble: Debian's Pebble 2.4 has no ARI endpoint (its directory has no
"renewalInfo"), so the only way to exercise ARI end to end here is a server
that speaks that one resource.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from certfan.config import AcmeConfig, Certificate, Config, DnsConfig, RolloutPolicy
from certfan.issue import crypto, due
from certfan.issue.acme import AcmeClient
from certfan.state.store import Store
from helpers.ari import AriServer

T0 = datetime(2030, 1, 1, tzinfo=UTC)


# ---------------------------------------------------------------- pure rules


def test_lifetime_third_left_for_90_days() -> None:
    nb, na = T0, T0 + timedelta(days=90)
    assert due.lifetime_due_at(nb, na) == T0 + timedelta(days=60)
    assert not due.by_lifetime(nb, na, T0 + timedelta(days=59, hours=23)).due
    decision = due.by_lifetime(nb, na, T0 + timedelta(days=60))
    assert decision.due and "third" in decision.reason and not decision.by_ari


def test_lifetime_half_left_under_ten_days() -> None:
    nb, na = T0, T0 + timedelta(days=6)
    assert due.lifetime_due_at(nb, na) == T0 + timedelta(days=3)
    assert "half" in due.by_lifetime(nb, na, T0).reason
    # exactly 10 days is not "under 10 days"
    assert due.lifetime_due_at(T0, T0 + timedelta(days=10)) == T0 + timedelta(days=10) * 2 / 3


@given(st.integers(min_value=0, max_value=10**7), st.integers(min_value=0, max_value=2**32))
def test_chosen_moment_is_inside_the_window(length: int, seed: int) -> None:
    end = T0 + timedelta(seconds=length)
    moment = due.choose_moment(T0, end, random.Random(seed))
    assert T0 <= moment <= end


def test_state_keeps_moment_for_same_window_and_rechooses_when_it_moves() -> None:
    window = due.AriWindow(T0, T0 + timedelta(days=2), retry_after=3600)
    first = due.update_state(None, "0001-a", window, T0 - timedelta(days=5), random.Random(1))
    again = due.update_state(first, "0001-a", window, T0 - timedelta(days=4), random.Random(2))
    assert again.renew_at == first.renew_at
    assert again.next_check == T0 - timedelta(days=4) + timedelta(hours=1)
    moved = due.AriWindow(T0 - timedelta(days=9), T0 - timedelta(days=8))
    urgent = due.update_state(again, "0001-a", moved, T0 - timedelta(days=4), random.Random(3))
    assert urgent.renew_at <= T0 - timedelta(days=8)
    assert due.by_ari(urgent, T0 - timedelta(days=4)).due  # window in the past: renew now
    other = due.update_state(first, "0002-b", window, T0, random.Random(1))
    assert other.version == "0002-b"


def test_retry_after_is_clamped_and_defaults_to_six_hours() -> None:
    assert due.next_check(T0, None) == T0 + timedelta(hours=6)
    assert due.next_check(T0, 1) == T0 + timedelta(minutes=1)
    assert due.next_check(T0, 10**9) == T0 + timedelta(hours=24)
    state = due.RenewalState("v", T0, T0, T0, T0 + timedelta(hours=1))
    assert not due.needs_fetch(state, "v", T0)
    assert due.needs_fetch(state, "v", T0 + timedelta(hours=1))
    assert due.needs_fetch(state, "other", T0)
    assert due.RenewalState.from_json(state.to_json()) == state


def test_retry_after_header_in_seconds_or_as_an_http_date() -> None:
    assert due.retry_after_seconds("120") == 120.0
    assert due.retry_after_seconds("-5") == 0.0
    assert due.retry_after_seconds("Tue, 01 Jan 2030 00:10:00 GMT", T0) == 600.0
    assert due.retry_after_seconds("soon") is None
    assert due.retry_after_seconds(None) is None


# ---------------------------------------------------------------- ARI over HTTP


@pytest.fixture
def ari_server() -> Iterator[AriServer]:
    server = AriServer()
    yield server
    server.close()


def _config(state: Path, directory: str) -> Config:
    return Config(
        path=state / "certfan.toml",
        state_dir=state,
        acme=AcmeConfig(directory=directory),
        dns=DnsConfig(),
        rollout=RolloutPolicy(),
        certificates={"media": Certificate("media", ("media.lab.test",))},
    )


def _stored(store: Store, days: float, not_before: datetime = T0):
    issuer = ec.generate_private_key(ec.SECP256R1())
    key_pem = crypto.new_key_pem("ec-p256")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media.lab.test")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test issuer")]))
        .public_key(crypto.load_key(key_pem).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("media.lab.test")]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), False
        )
        .sign(issuer, hashes.SHA256())
    )
    release = store.save(
        "media",
        key_pem,
        cert.public_bytes(serialization.Encoding.PEM),
        order_url=None,
        key_type="ec-p256",
    )
    store.activate(release)
    return release


def test_due_follows_the_served_ari_window(tmp_path: Path, ari_server: AriServer) -> None:
    store = Store(tmp_path)
    release = _stored(store, days=90)
    cfg = _config(tmp_path, f"{ari_server.base}/dir")
    now = T0 + timedelta(days=10)  # the lifetime rule would say "not due before day 60"

    # 1. A window in the future: not due; the moment is inside the window.
    ari_server.window = (T0 + timedelta(days=20), T0 + timedelta(days=22))
    [status] = due.renewal_status(cfg, store, now, acme=AcmeClient(cfg.acme, tmp_path))
    assert not status.decision.due and status.decision.by_ari
    moment = status.decision.at
    assert ari_server.window[0] <= moment <= ari_server.window[1]
    cert_id = crypto.ari_cert_id(release.file("cert.pem").read_bytes())
    assert ari_server.ari_fetches() == [f"/renewal-info/{cert_id}"]

    # 2. A later run (new client, same state dir) within Retry-After: no fetch,
    #    and the same random moment (it was chosen once and remembered).
    later = now + timedelta(minutes=30)
    [status] = due.renewal_status(cfg, store, later, acme=AcmeClient(cfg.acme, tmp_path))
    assert status.decision.at == moment and len(ari_server.ari_fetches()) == 1

    # 3. After Retry-After, the CA moves the window into the past: due now.
    ari_server.window = (T0, T0 + timedelta(days=1))
    after = now + timedelta(hours=2)
    [status] = due.renewal_status(cfg, store, after, acme=AcmeClient(cfg.acme, tmp_path))
    assert len(ari_server.ari_fetches()) == 2
    assert status.decision.due and status.decision.by_ari

    # 4. Reaching the chosen moment of an unchanged window makes it due too.
    ari_server.window = (T0 + timedelta(days=20), T0 + timedelta(days=22))
    ari_server.retry_after = "86400"
    t = T0 + timedelta(days=19)
    [status] = due.renewal_status(cfg, store, t, acme=AcmeClient(cfg.acme, tmp_path))
    assert not status.decision.due
    [status] = due.renewal_status(
        cfg, store, status.decision.at, acme=AcmeClient(cfg.acme, tmp_path)
    )
    assert status.decision.due

    # 5. The CA unreachable: the remembered window still decides.
    offline = _config(tmp_path, "http://127.0.0.1:9/dir")
    [status] = due.renewal_status(offline, store, t, acme=AcmeClient(offline.acme, tmp_path))
    assert status.decision.by_ari and not status.decision.due


def test_without_ari_the_lifetime_fractions_apply(tmp_path: Path) -> None:
    server = AriServer(with_ari=False)
    try:
        cfg = _config(tmp_path, f"{server.base}/dir")
        store = Store(tmp_path)
        _stored(store, days=90)
        client = AcmeClient(cfg.acme, tmp_path)
        assert not client.supports_ari
        [s] = due.renewal_status(cfg, store, T0 + timedelta(days=59), acme=client)
        assert not s.decision.due and s.decision.at == T0 + timedelta(days=60)
        [s] = due.renewal_status(cfg, store, T0 + timedelta(days=60), acme=client)
        assert s.decision.due and not s.decision.by_ari
        _stored(store, days=6)  # a short-lived one: half its lifetime
        [s] = due.renewal_status(cfg, store, T0 + timedelta(days=2, hours=23), acme=client)
        assert not s.decision.due
        [s] = due.renewal_status(cfg, store, T0 + timedelta(days=3), acme=client)
        assert s.decision.due and "half" in s.decision.reason
        assert server.ari_fetches() == []
    finally:
        server.close()


def test_ari_failure_falls_back_to_lifetime(tmp_path: Path, ari_server: AriServer) -> None:
    store = Store(tmp_path)
    _stored(store, days=90)
    cfg = _config(tmp_path, f"{ari_server.base}/dir")
    client = AcmeClient(cfg.acme, tmp_path)
    ari_server.fail = True
    [s] = due.renewal_status(cfg, store, T0 + timedelta(days=61), acme=client)
    assert s.decision.due and not s.decision.by_ari
    assert len(ari_server.ari_fetches()) == 1


def test_missing_or_changed_certificates_are_due(tmp_path: Path) -> None:
    store = Store(tmp_path)
    cfg = _config(tmp_path, "http://127.0.0.1:9/dir")
    [s] = due.renewal_status(cfg, store, T0)
    assert s.decision.due and "no certificate" in s.decision.reason
    _stored(store, days=90)
    changed = Config(
        path=cfg.path,
        state_dir=tmp_path,
        acme=cfg.acme,
        dns=cfg.dns,
        rollout=cfg.rollout,
        certificates={"media": Certificate("media", ("other.lab.test",))},
    )
    [s] = due.renewal_status(changed, store, T0)
    assert s.decision.due and "names" in s.decision.reason
    [s] = due.renewal_status(cfg, store, T0 + timedelta(days=91))
    assert s.decision.due and s.decision.reason == "expired"
