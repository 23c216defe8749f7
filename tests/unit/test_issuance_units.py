"""The ACME client's error translation against tiny local HTTP servers (no lab): a rate
limit with its Retry-After, and a CA that cannot be reached."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from certfan import config
from certfan.errors import AcmeError, RateLimitedError
from certfan.issue.acme import AcmeClient

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
