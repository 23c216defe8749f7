"""Faults the lab lacks, each a context manager that heals: ``refuse_auth``,
``break_reload``, ``hold_upload``, a slow DNS server and a faulty ACME proxy."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from certfan_lab import Lab

# ---------------------------------------------------------------- faults the lab lacks


@contextlib.contextmanager
def cut_off(lab: Lab, node: str) -> Iterator[None]:
    """The lab's ``cut`` (nothing reaches the node) and nothing leaves it either: a
    command already running there finishes, but its answer never arrives."""
    enter = ["nsenter", f"--net=/run/netns/{lab.node(node).netns}", "--"]
    with lab.faults.cut(node):
        subprocess.run([*enter, "iptables", "-w", "-I", "OUTPUT", "-j", "DROP"], check=True,
                       timeout=20)
        try:
            yield
        finally:
            subprocess.run([*enter, "iptables", "-w", "-D", "OUTPUT", "-j", "DROP"],
                           check=True, timeout=20)


@contextlib.contextmanager
def refuse_auth(lab: Lab, node: str) -> Iterator[None]:
    """The node's sshd no longer accepts certfan's key (as if it left authorized_keys)."""
    n = lab.node(node)
    original = n.sshd_config.read_text()
    empty = n.dir / "authorized_keys.empty"
    empty.write_text("")
    n.sshd_config.write_text(re.sub(r"(?m)^AuthorizedKeysFile .*$",
                                    f"AuthorizedKeysFile {empty}", original))
    lab.restart_sshd(node)
    try:
        yield
    finally:
        n.sshd_config.write_text(original)
        lab.restart_sshd(node)


@contextlib.contextmanager
def break_reload(lab: Lab, node: str) -> Iterator[None]:
    """The reload command fails (systemctl: "nginx.service is not active"), while nginx
    keeps running and ``nginx -t`` passes: the pid file it checks is moved aside."""
    pidfile = lab.node(node).nginx_pidfile
    aside = pidfile.with_name("nginx.pid.aside")
    os.replace(pidfile, aside)
    try:
        yield
    finally:
        os.replace(aside, pidfile)


class HeldUpload:
    """A ``sync`` on the node's PATH that, called on an upload's staging directory,
    says so (``reached``) and waits until ``release()``: the upload is then exactly
    half done, its files written to ``archive/<cert>/.<version>.tmp`` but not placed."""

    def __init__(self, lab: Lab, node: str):
        n = lab.node(node)
        self.dir = n.dir / "held-upload"
        self.dir.mkdir(mode=0o755, exist_ok=True)
        os.chown(self.dir, lab.uid, lab.gid)
        self.marker, self.go = self.dir / "reached", self.dir / "go"
        self.marker.unlink(missing_ok=True)
        self.go.unlink(missing_ok=True)
        self.shim = n.bin_dir / "sync"
        real = shutil.which("sync", path="/usr/bin:/bin")
        self.shim.write_text(f"""#!/bin/sh
# certfan reliability tests: hold an upload at its sync until released (60s at most).
for a in "$@"; do
  case "$a" in
    *.tmp) echo "$$" >> {self.marker}; n=0
           while [ ! -e {self.go} ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done
           break ;;
  esac
done
exec {real} "$@"
""")
        self.shim.chmod(0o755)

    def reached(self) -> int:
        """How many uploads have come to their sync (and wait there until released)."""
        try:
            return len(self.marker.read_text().split())
        except FileNotFoundError:
            return 0

    def wait_reached(self, count: int = 1, timeout: float = 30.0,
                     alive: Callable[[], bool] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while self.reached() < count:
            assert time.monotonic() < deadline, "the upload never reached its sync"
            assert alive is None or alive(), "certfan exited before the upload"
            time.sleep(0.01)

    def release(self) -> None:
        self.go.touch()

    def remove(self) -> None:
        self.release()
        self.shim.unlink(missing_ok=True)


@contextlib.contextmanager
def hold_upload(lab: Lab, node: str) -> Iterator[HeldUpload]:
    held = HeldUpload(lab, node)
    try:
        yield held
    finally:
        held.remove()


class SlowDns:
    """A UDP DNS server answering as the lab's named does, ``delay`` seconds late."""

    def __init__(self, upstream_port: int, delay: float):
        self.upstream = ("127.0.0.1", upstream_port)
        self.delay = delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="slow-dns")
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                data, client = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            threading.Thread(target=self._answer, args=(data, client, self.delay),
                             daemon=True).start()

    def _answer(self, data: bytes, client: tuple[str, int], delay: float) -> None:
        if self._stop.wait(delay):
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as up:
            up.settimeout(3.0)
            try:
                up.sendto(data, self.upstream)
                answer = up.recv(65535)
                self.sock.sendto(answer, client)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(5)


@dataclass
class AcmeFault:
    """Answer requests whose path matches with a problem document, ``times`` times
    (None: until cleared)."""

    path: re.Pattern[str]
    status: int
    problem: str
    detail: str
    retry_after: int | None = None
    times: int | None = None
    hits: int = 0


class AcmeProxy:
    """HTTPS in front of Pebble (the lab's listener certificate) that can fail requests.

    Pebble 2.4 never rate-limits nor fails on purpose; this stands in for a CA
    that does. Requests are forwarded with their Host header, so Pebble writes
    every URL (directory, orders, ...) pointing back at the proxy.
    """

    def __init__(self, lab: Lab):
        assert lab.pki is not None
        self.lab = lab
        self.faults: list[AcmeFault] = []
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self)

            do_POST = do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(lab.pki.listener_cert, lab.pki.listener_key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.directory = f"https://127.0.0.1:{self.port}/dir"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                        name="acme-proxy")
        self._thread.start()

    def fail(self, path: str, status: int, problem: str, detail: str, *,
             retry_after: int | None = None, times: int | None = None) -> AcmeFault:
        fault = AcmeFault(re.compile(path), status, problem, detail, retry_after, times)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def _fault_for(self, path: str) -> AcmeFault | None:
        with self._lock:
            for fault in self.faults:
                if fault.path.search(path) and (fault.times is None or fault.hits < fault.times):
                    fault.hits += 1
                    return fault
        return None

    def _handle(self, req: http.server.BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        fault = self._fault_for(req.path)
        if fault is not None:
            doc = json.dumps({"type": f"urn:ietf:params:acme:error:{fault.problem}",
                              "detail": fault.detail, "status": fault.status}).encode()
            headers = {"Content-Type": "application/problem+json"}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            self._reply(req, fault.status, headers, doc)
            return
        context = ssl.create_default_context(cafile=str(self.lab.ca_bundle))
        conn = http.client.HTTPSConnection("127.0.0.1", self.lab.acme_port, timeout=30,
                                           context=context)
        try:
            headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("connection", "keep-alive", "content-length")}
            conn.request(req.command, req.path, body=body or None, headers=headers)
            response = conn.getresponse()
            data = response.read()
            out = {k: v for k, v in response.getheaders()
                   if k.lower() not in ("connection", "transfer-encoding", "content-length")}
            self._reply(req, response.status, out, data)
        except (OSError, http.client.HTTPException) as exc:
            self._reply(req, 502, {"Content-Type": "text/plain"}, f"proxy: {exc}".encode())
        finally:
            conn.close()

    def _reply(self, req: http.server.BaseHTTPRequestHandler, status: int,
               headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.requests.append((req.command, req.path, status))
        req.send_response(status)
        for k, v in headers.items():
            req.send_header(k, v)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
