"""A webhook receiver on loopback for the notification tests: records every POST."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    url: str
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (path, body)
    status: int = 204
    hold: threading.Event | None = None  # set: answer; unset: keep the client waiting
    got: threading.Condition = field(default_factory=threading.Condition)

    def bodies(self) -> list[dict[str, Any]]:
        with self.got:
            return [body for _, body in self.posts]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.got:
            self.got.wait_for(lambda: len(self.posts) >= count, timeout)
            return [body for _, body in self.posts]


@contextmanager
def receiver(path: str = "/hooks/T0KEN-SECRET") -> Iterator[Receiver]:
    """``with receiver() as r:`` POST to ``r.url``; ``r.bodies()`` is what arrived."""
    state: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 -- http.server's name
            r = state["r"]
            length = int(self.headers.get("Content-Length", "0"))
            data = json.loads(self.rfile.read(length) or b"null")
            if r.hold is not None:
                r.hold.wait(30)
            with r.got:
                r.posts.append((self.path, data))
                r.got.notify_all()
            self.send_response(r.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state["r"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}{path}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state["r"]
    finally:
        if state["r"].hold is not None:
            state["r"].hold.set()
        server.shutdown()
        server.server_close()


def closed_port_url(path: str = "/hooks/T0KEN-SECRET") -> str:
    """A loopback URL where nothing listens (the port was just freed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
