"""A tiny ACME directory over HTTP with renewalInfo (RFC 9773): Pebble 2.4 has no ARI."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

T0 = datetime(2030, 1, 1, tzinfo=UTC)


class AriServer:
    """An ACME directory with renewalInfo, and the renewalInfo resource itself."""

    def __init__(self, with_ari: bool = True):
        self.with_ari = with_ari
        self.window: tuple[datetime, datetime] = (T0, T0)
        self.retry_after = "3600"
        self.fail = False
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path == "/dir":
                    body = {
                        "newNonce": f"{server.base}/nonce",
                        "newAccount": f"{server.base}/acct",
                        "newOrder": f"{server.base}/order",
                        "revokeCert": f"{server.base}/revoke",
                        "meta": {},
                    }
                    if server.with_ari:
                        body["renewalInfo"] = f"{server.base}/renewal-info"
                    self._json(body)
                elif self.path.startswith("/renewal-info/") and server.fail:
                    self.send_error(500)
                elif self.path.startswith("/renewal-info/"):
                    start, end = server.window
                    self._json(
                        {"suggestedWindow": {"start": start.isoformat(), "end": end.isoformat()}},
                        {"Retry-After": server.retry_after},
                    )
                else:
                    self.send_error(404)

            def _json(self, doc: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def ari_fetches(self) -> list[str]:
        return [p for p in self.requests if p.startswith("/renewal-info/")]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
