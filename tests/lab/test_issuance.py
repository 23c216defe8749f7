"""Issuance end to end against the lab: Pebble (ACME) and BIND9 (RFC 2136).

Every test has its own state directory; values someone else put at the
challenge names are seeded with nsupdate and must survive every run, and
no value certfan added may remain, whether the order succeeded or failed.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import stat
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from certfan import cli, config
from certfan.config import Config
from certfan.errors import AcmeError, DnsError, Interrupted
from certfan.issue import crypto, dns01, due, order
from certfan.issue.acme import AcmeClient
from certfan.state.store import Store
from helpers.dns import nsupdate, txt

CHALLENGE_NAMES = (
    "_acme-challenge.lab.test",
    "_acme-challenge.media.lab.test",
    "static.delegated.test",
    "chain.delegated.test",
)


def _config(lab, tmp_path: Path, **overrides: object) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = lab.write_config(tmp_path / "certfan.toml", state_dir=tmp_path / "state", **overrides)
    return config.load(path)


@pytest.fixture
def seeded(lab, tmp_path: Path) -> Iterator[dict[str, set[str]]]:
    """An unrelated TXT value at every challenge name certfan will write to."""
    values = {name: f"unrelated-{secrets.token_hex(4)}" for name in CHALLENGE_NAMES}
    for name, value in values.items():
        nsupdate(lab, tmp_path, "add", name, value)
    yield {name: {value} for name, value in values.items()}
    for name, value in values.items():
        nsupdate(lab, tmp_path, "delete", name, value)


def _assert_only(lab, expected: dict[str, set[str]]) -> None:
    assert {name: txt(lab, name) for name in CHALLENGE_NAMES} == expected


def _due(cfg: Config, store: Store, acme: AcmeClient | None = None) -> list[due.Status]:
    return [s for s in due.renewal_status(cfg, store, acme=acme) if s.decision.due]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---------------------------------------------------------------- success


@pytest.mark.lab
def test_apex_wildcard_and_cname_delegated_names(lab, tmp_path: Path, seeded) -> None:
    cfg = _config(
        lab,
        tmp_path,
        certificates={
            "static": {"key_type": "rsa-2048"},
            "chain": {"domains": ["chain.lab.test"], "key_type": "ec-p384"},
        },
    )
    store = Store(cfg.state_dir)
    wild = order.issue(cfg, "wild", store)
    static = order.issue(cfg, "static", store)
    chain = order.issue(cfg, "chain", store)
    _assert_only(lab, seeded)

    assert wild.names == ("lab.test", "*.lab.test") and wild.key_type == "ec-p256"
    assert static.names == ("static.lab.test",) and static.key_type == "rsa-2048"
    assert chain.names == ("chain.lab.test",)
    wild_key = crypto.load_key(wild.file("privkey.pem").read_bytes())
    assert isinstance(wild_key, ec.EllipticCurvePrivateKey) and wild_key.curve.name == "secp256r1"
    static_key = crypto.load_key(static.file("privkey.pem").read_bytes())
    assert isinstance(static_key, rsa.RSAPrivateKey) and static_key.key_size == 2048
    assert crypto.key_type_of(crypto.load_key(chain.file("privkey.pem").read_bytes())) == "ec-p384"
    for rel in (wild, static, chain):
        assert store.current(rel.cert) == rel
        assert rel.order_url and rel.order_url.startswith(cfg.acme.directory.rsplit("/", 1)[0])
        assert "Pebble" in rel.issuer
        assert crypto.key_matches_cert(
            rel.file("privkey.pem").read_bytes(), rel.file("cert.pem").read_bytes()
        )
        assert rel.file("chain.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        assert _mode(rel.file("privkey.pem")) == 0o600
        for d in (rel.path, rel.path.parent, rel.path.parent.parent, cfg.state_dir):
            assert _mode(d) == 0o700, d
    account = next((cfg.state_dir / "account").iterdir())
    assert _mode(account) == 0o700 and _mode(account / "key.pem") == 0o600
    assert json.loads((account / "account.json").read_text())["uri"].startswith("https://")


@pytest.mark.lab
def test_several_due_certificates_are_ordered_concurrently(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)

    class Together(dns01.Dns01):
        """Every order must be inside DNS-01 at the same time, or the barrier breaks."""

        barrier = threading.Barrier(3, timeout=20)

        def published(self, records, cancel=None):  # type: ignore[no-untyped-def]
            self.barrier.wait()
            return super().published(records, cancel)

    store = Store(cfg.state_dir)
    assert [s.cert for s in _due(cfg, store)] == ["media", "wild", "static"]
    outcomes = order.issue_many(cfg, store, ["media", "wild", "static"], dns=Together(cfg.dns))
    assert [o.cert for o in outcomes] == ["media", "wild", "static"]
    assert all(o.ok for o in outcomes), [str(o.error) for o in outcomes]
    assert _due(cfg, store) == []


@pytest.mark.lab
def test_outcome_for_every_certificate_even_when_some_fail(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path, certificates={"bogus": {"domains": ["nowhere.invalid"]}})
    store = Store(cfg.state_dir)
    outcomes = order.issue_many(cfg, store, ["media", "bogus"])
    assert outcomes[0].ok and not outcomes[1].ok
    print(f"\nbogus: {outcomes[1].error}")
    assert "nowhere.invalid" in str(outcomes[1].error)


# ---------------------------------------------------------------- failures


class WrongAnswer(dns01.Dns01):
    """Fault injection: publishes a value that is not the key authorization."""

    def published(self, records, cancel=None):  # type: ignore[no-untyped-def]
        return super().published([(name, f"wrong-{value[:20]}") for name, value in records], cancel)


@pytest.mark.lab
def test_wrong_answer_names_domain_and_ca_detail_and_cleans_up(lab, tmp_path, seeded) -> None:
    cfg = _config(lab, tmp_path)
    store = Store(cfg.state_dir)
    with pytest.raises(AcmeError) as err:
        order.issue(cfg, "wild", store, dns=WrongAnswer(cfg.dns))
    text = str(err.value)
    assert "validation of" in text and "lab.test failed" in text
    assert "unauthorized" in text or "TXT" in text  # what Pebble reported
    _assert_only(lab, seeded)
    assert store.current("wild") is None and store.versions("wild") == []


@pytest.mark.lab
def test_wrong_tsig_key_says_so_and_cleans_up(lab, tmp_path, seeded) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    wrong.chmod(0o600)
    cfg = _config(lab, tmp_path, dns={"tsig_secret_file": str(wrong)})
    with pytest.raises(DnsError, match=r"zone lab\.test\. at 127\.0\.0\.1:\d+ refused: BADSIG"):
        order.issue(cfg, "wild", Store(cfg.state_dir))
    _assert_only(lab, seeded)


@pytest.mark.lab
def test_propagation_deadline_cleans_up(lab, tmp_path, seeded) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # a port nobody serves
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    cfg = _config(
        lab,
        tmp_path,
        dns={
            "nameservers": [f"127.0.0.1:{lab.dns_port}", f"127.0.0.1:{dead}"],
            "propagation_timeout": 0.5,
            "poll_interval": 0.1,
        },
    )
    with pytest.raises(DnsError, match="not served after 0.5s"):
        order.issue(cfg, "wild", Store(cfg.state_dir))
    _assert_only(lab, seeded)


@pytest.mark.lab
def test_ctrl_c_in_a_single_issue_cleans_up(lab, tmp_path, seeded) -> None:
    cfg = _config(lab, tmp_path)

    class CtrlC(dns01.Dns01):
        def _wait(self, added, cancel):  # type: ignore[no-untyped-def]
            assert {v for n in CHALLENGE_NAMES for v in txt(lab, n)} > set().union(*seeded.values())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        order.issue(cfg, "wild", Store(cfg.state_dir), dns=CtrlC(cfg.dns))
    _assert_only(lab, seeded)


@pytest.mark.lab
def test_ctrl_c_during_issue_many_cleans_up(lab, tmp_path, seeded) -> None:
    cfg = _config(lab, tmp_path)

    class CtrlCWhileWaiting(dns01.Dns01):
        """Ctrl-C reaches the main thread while the workers wait for propagation."""

        pressed = threading.Event()
        lock = threading.Lock()

        def _wait(self, added, cancel):  # type: ignore[no-untyped-def]
            with self.lock:  # one Ctrl-C, from whichever worker gets here first
                if not self.pressed.is_set():
                    self.pressed.set()
                    # A real SIGINT: interrupt_main() would not wake a blocked wait().
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            if cancel is not None and cancel.wait(20):
                raise Interrupted("interrupted while waiting for DNS propagation")
            pytest.fail("the worker was never told to stop")

    with pytest.raises(KeyboardInterrupt):
        order.issue_many(
            cfg, Store(cfg.state_dir), ["wild", "static"], dns=CtrlCWhileWaiting(cfg.dns)
        )
    _assert_only(lab, seeded)


# ---------------------------------------------------------------- store and keys


@pytest.mark.lab
def test_crash_between_issuance_and_flip(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)
    old = order.issue(cfg, "media", Store(cfg.state_dir))

    class Crash(BaseException):
        pass

    class CrashBeforeFlip(Store):
        def activate(self, release):  # type: ignore[no-untyped-def]
            raise Crash

    with pytest.raises(Crash):
        order.issue(cfg, "media", CrashBeforeFlip(cfg.state_dir))
    store = Store(cfg.state_dir)  # the next process
    assert store.current("media") == old
    [first, new] = store.versions("media")
    assert first == old and new.version.startswith("0002-")
    assert crypto.key_matches_cert(
        new.file("privkey.pem").read_bytes(), new.file("cert.pem").read_bytes()
    )
    assert _mode(new.file("privkey.pem")) == 0o600
    assert [n for n in os.listdir(new.path.parent) if n.startswith(".")] == []


@pytest.mark.lab
def test_fresh_key_by_default_reused_on_request(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)
    store = Store(cfg.state_dir)
    a, b = order.issue(cfg, "media", store), order.issue(cfg, "media", store)
    assert a.file("privkey.pem").read_bytes() != b.file("privkey.pem").read_bytes()
    reuse = _config(lab, tmp_path, certificates={"media": {"reuse_key": True}})
    c = order.issue(reuse, "media", store)
    assert c.file("privkey.pem").read_bytes() == b.file("privkey.pem").read_bytes()
    assert c.serial != b.serial


# ---------------------------------------------------------------- ACME behaviour


@pytest.mark.lab
def test_twenty_issuances_with_pebble_rejecting_five_percent_of_nonces(
    lab, tmp_path: Path, caplog
) -> None:
    cfg = _config(lab, tmp_path)
    caplog.set_level(logging.DEBUG, logger="certfan.issue.acme")
    lab.restart_pebble(nonce_reject=None)  # Pebble's default: 5% of good nonces rejected
    try:
        store = Store(cfg.state_dir)
        acme = AcmeClient(cfg.acme, cfg.state_dir)
        dns = order.make_dns(cfg)
        started = time.monotonic()
        releases = [order.issue(cfg, "media", store, acme=acme, dns=dns) for _ in range(20)]
        elapsed = time.monotonic() - started
    finally:
        lab.restart_pebble()
    assert len({r.serial for r in releases}) == 20
    assert [r.version for r in store.versions("media")] == [r.version for r in releases]
    retries = sum("rejected our nonce" in r.getMessage() for r in caplog.records)
    print(
        f"\n20 issuances in {elapsed:.2f}s ({elapsed / 20 * 1000:.0f} ms each), "
        f"{retries} bad-nonce retries"
    )
    assert retries > 0, "Pebble rejected no nonce: the retry path was not exercised"


@pytest.mark.lab
def test_account_reused_and_terms_only_when_agreed(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)
    first = AcmeClient(cfg.acme, cfg.state_dir).account()
    again = AcmeClient(cfg.acme, cfg.state_dir).account()
    assert first.uri == again.uri
    refuse = _config(lab, tmp_path / "other", acme={"agree_tos": False})
    with pytest.raises(AcmeError, match="agree_tos"):
        AcmeClient(refuse.acme, refuse.state_dir).account()


@pytest.mark.lab
def test_external_account_binding(lab, tmp_path: Path) -> None:
    lab.restart_pebble(eab=True)
    try:
        without = _config(lab, tmp_path / "without")
        with pytest.raises(AcmeError, match="external account binding"):
            order.issue(without, "media", Store(without.state_dir))
        cfg = _config(
            lab,
            tmp_path,
            acme={"eab": {"kid": lab.eab_kid, "hmac_key_file": str(lab.eab_hmac_file)}},
        )
        release = order.issue(cfg, "media", Store(cfg.state_dir))
    finally:
        lab.restart_pebble()
    assert release.names == ("media.lab.test",)


class DirectoryWithAri:
    """Pebble's directory plus a renewalInfo URL, over HTTPS with the lab CA.

    Debian's Pebble 2.4 has no ARI and no profiles, so this server adds them
    to the directory and serves renewalInfo itself; everything else in the
    directory still points at Pebble, which ignores the fields it does not know.
    """

    def __init__(self, lab, profiles: dict[str, str] | None = None) -> None:
        ctx = ssl.create_default_context(cafile=str(lab.ca_bundle))
        with urllib.request.urlopen(lab.directory_url, context=ctx, timeout=5) as resp:
            self.directory = json.load(resp)
        if profiles:
            self.directory["meta"] = dict(self.directory.get("meta", {}), profiles=profiles)
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/dir":
                    doc = dict(server.directory, renewalInfo=f"{server.base}/renewal-info")
                else:
                    doc = {
                        "suggestedWindow": {
                            "start": "2020-01-01T00:00:00Z",
                            "end": "2020-01-02T00:00:00Z",
                        }
                    }
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(str(lab.pki.listener_cert), str(lab.pki.listener_key))
        self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.base = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.lab
def test_ari_due_order_carries_replaces(lab, tmp_path: Path, caplog) -> None:
    server = DirectoryWithAri(lab)
    try:
        cfg = _config(lab, tmp_path, acme={"directory": f"{server.base}/dir"})
        store = Store(cfg.state_dir)
        first = order.issue(cfg, "media", store)
        acme = AcmeClient(cfg.acme, cfg.state_dir)
        [status] = [s for s in _due(cfg, store, acme=acme) if s.cert == "media"]
        assert status.decision.by_ari  # the served window lies in the past: due now
        caplog.set_level(logging.DEBUG, logger="acme.client")
        second = order.issue(cfg, "media", store, acme=acme)
    finally:
        server.close()
    cert_id = crypto.ari_cert_id(first.file("cert.pem").read_bytes())
    assert f"/renewal-info/{cert_id}" in server.requests
    orders = _order_payloads(caplog)
    # Pebble 2.4 ignores the unknown field and issues; what matters is that we sent it
    # (and that it was not dropped by the retry-without-replaces fallback).
    assert orders and orders[0]["replaces"] == cert_id
    assert len(orders) == 1
    assert not [r for r in caplog.records if "refused replaces" in r.getMessage()]
    assert store.current("media") == second


@pytest.mark.lab
def test_revoke(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path)
    release = order.issue(cfg, "media", Store(cfg.state_dir))
    acme = AcmeClient(cfg.acme, cfg.state_dir)
    acme.revoke(release.file("cert.pem").read_bytes(), reason=4)  # superseded
    with pytest.raises(AcmeError, match="alreadyRevoked|already revoked"):
        acme.revoke(release.file("cert.pem").read_bytes(), reason=4)


def _order_payloads(caplog) -> list[dict]:
    payloads = [
        json.loads(r.args[0])
        for r in caplog.records
        if r.getMessage().startswith("JWS payload:") and r.args and r.args[0]
    ]
    return [p for p in payloads if "identifiers" in p]


@pytest.mark.lab
def test_profile_requested_only_when_offered(lab, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="acme.client")
    server = DirectoryWithAri(lab, profiles={"classic": "90 days", "shortlived": "6 days"})
    try:
        cfg = _config(
            lab, tmp_path / "a", acme={"directory": f"{server.base}/dir", "profile": "shortlived"}
        )
        order.issue(cfg, "media", Store(cfg.state_dir))
        assert [p.get("profile") for p in _order_payloads(caplog)] == ["shortlived"]
        unknown = _config(
            lab, tmp_path / "b", acme={"directory": f"{server.base}/dir", "profile": "tlsserver"}
        )
        with pytest.raises(AcmeError, match=r"'tlsserver' is not offered.*classic, shortlived"):
            order.issue(unknown, "media", Store(unknown.state_dir))
    finally:
        server.close()
    caplog.clear()
    plain = _config(lab, tmp_path / "c", acme={"profile": "shortlived"})  # Pebble: no profiles
    order.issue(plain, "media", Store(plain.state_dir))
    assert [p.get("profile") for p in _order_payloads(caplog)] == [None]
    assert "offers no profiles" in caplog.text


# ---------------------------------------------------------------- CLI and error translation


@pytest.mark.lab
def test_cli_issue_prints_what_it_stored(lab, tmp_path: Path, capsys) -> None:
    cfg = _config(lab, tmp_path)
    assert cli.main(["-c", str(cfg.path), "issue", "media"]) == 0
    out = capsys.readouterr().out
    release = Store(cfg.state_dir).current("media")
    assert release is not None
    for fact in (
        release.version,
        release.serial,
        release.sha256,
        "media.lab.test",
        release.not_after.strftime("%Y-%m-%d %H:%M:%SZ"),
        str(release.path),
    ):
        assert fact in out


@pytest.mark.lab
def test_cli_issue_failure_is_one_line_without_traceback(lab, tmp_path: Path, capsys) -> None:
    wrong = tmp_path / "wrong.secret"
    wrong.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    wrong.chmod(0o600)
    cfg = _config(lab, tmp_path, dns={"tsig_secret_file": str(wrong)})
    assert cli.main(["-c", str(cfg.path), "issue", "media"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("certfan: error: ")
    assert "BADSIG" in err and "lab.test." in err




