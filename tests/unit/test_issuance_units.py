"""Issuance end to end against the lab: Pebble (ACME) and BIND9 (RFC 2136).

Every test has its own state directory; values someone else put at the
challenge names are seeded with nsupdate and must survive every run, and
no value certfan added may remain, whether the order succeeded or failed.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import stat
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from certfan import config
from certfan.config import Config
from certfan.errors import AcmeError, RateLimitedError
from certfan.issue import dns01
from certfan.issue.acme import AcmeClient
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


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ---------------------------------------------------------------- success








# ---------------------------------------------------------------- failures


class WrongAnswer(dns01.Dns01):
    """Fault injection: publishes a value that is not the key authorization."""

    def published(self, records, cancel=None):  # type: ignore[no-untyped-def]
        return super().published([(name, f"wrong-{value[:20]}") for name, value in records], cancel)












# ---------------------------------------------------------------- store and keys






# ---------------------------------------------------------------- ACME behaviour








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






def _order_payloads(caplog) -> list[dict]:
    payloads = [
        json.loads(r.args[0])
        for r in caplog.records
        if r.getMessage().startswith("JWS payload:") and r.args and r.args[0]
    ]
    return [p for p in payloads if "identifiers" in p]




# ---------------------------------------------------------------- CLI and error translation






def test_rate_limit_reports_retry_after(tmp_path: Path) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(
                {
                    "type": "urn:ietf:params:acme:error:rateLimited",
                    "detail": "too many certificates for media.lab.test",
                }
            ).encode()
            self.send_response(429)
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Retry-After", "120")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        cfg = config.AcmeConfig(directory=f"http://127.0.0.1:{httpd.server_address[1]}/dir")
        with pytest.raises(RateLimitedError) as err:
            AcmeClient(cfg, tmp_path).directory()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert err.value.retry_after == 120
    assert "too many certificates for media.lab.test" in str(err.value)
    assert "retry after 120s" in str(err.value)


def test_unreachable_ca_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config.AcmeConfig(directory=f"https://127.0.0.1:{port}/dir")
    with pytest.raises(AcmeError, match="cannot reach the CA"):
        AcmeClient(cfg, tmp_path, network_timeout=2).directory()
