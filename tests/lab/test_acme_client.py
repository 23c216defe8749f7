"""The ACME client against the lab's Pebble: nonces, accounts, EAB, ARI, revocation,
profiles; and `certfan issue` on the command line (its output, its one-line errors).

The DNS-01 side of issuance is test_issuance.py.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from certfan import cli, config
from certfan.config import Config
from certfan.errors import AcmeError
from certfan.issue import crypto, due, order
from certfan.issue.acme import AcmeClient
from certfan.state.store import Store


def _config(lab, tmp_path: Path, **overrides: object) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = lab.write_config(tmp_path / "certfan.toml", state_dir=tmp_path / "state", **overrides)
    return config.load(path)


def _due(cfg: Config, store: Store, acme: AcmeClient | None = None) -> list[due.Status]:
    return [s for s in due.renewal_status(cfg, store, acme=acme) if s.decision.due]


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


