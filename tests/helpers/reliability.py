"""The harness of the fault-injection suite (tests/test_reliability_*.py).

Every case runs the same way:

    case = Case(lab, tmp_path)          # own state dir and config; a baseline of the lab
    case.start()                        # v1 (due for renewal) on every node
    ... certfan under a fault ...       # usually `renew`: issue v2 and roll it out
    heal the fault
    case.heal()                         # `certfan renew` again, then once more (a no-op)
    case.assert_invariants(expected)    # the four invariants of docs/reliability.md

``assert_invariants`` is the one checker every case uses:

1. every node serves, for every name, a leaf whose public key is that of the
   key file its live pointer points to; ``nginx -t`` passes; the nginx master
   is the one from before the case and never logged a failed reconfiguration
   (a SIGHUP onto a broken config logs ``[emerg] <master pid>#``), and every
   TLS handshake a watcher made during the case succeeded;
2. every node serves the store's current version (the expected one), the
   deploy state says so, and the CA issued exactly the certificates the case
   expects, each of them stored (Pebble logs every issuance; nothing issued is
   lost, nothing is issued twice);
3. the TXT values at every challenge name are those from before the case, and
   certfan's record of pending TXT values is empty;
4. every JSON file of the state dir parses, every stored version is complete
   with a key matching its certificate, and no temporary name is left over,
   locally or on a node.

Faults the lab does not have are here too, each a context manager that heals:
``refuse_auth`` (sshd stops accepting the key), ``break_reload`` (the reload
command fails while the config test passes), ``hold_upload`` (a node's
``sync`` waits during the upload, so a test can act mid-upload), a slow DNS
server (``SlowDns``) and an ACME proxy that answers some requests with errors
(``AcmeProxy``). ``certfan_process`` runs ``python -m certfan``'s ``main`` in a
child that kills (SIGKILL) or pauses itself at the first log line matching a
pattern: the exact step, without racing a reader of its stderr.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import io
import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certfan import cli, config
from certfan.issue import crypto, dns01
from certfan.state.deploy import DeployState
from certfan.state.store import Release, Store
from certfan_lab import Lab, LabError
from helpers.ops import cert_files, import_args

SRC = Path(__file__).resolve().parents[2] / "src"
CERT = "media"
# Every name DNS-01 for the lab's certificates writes to (CNAME targets included).
CHALLENGE_NAMES = (
    "_acme-challenge.media.lab.test",
    "_acme-challenge.lab.test",
    "_acme-challenge.static.lab.test",
    "static.delegated.test",
    "chain.delegated.test",
)
FAST_ROLLOUT = {"connect_timeout": 1.5, "command_timeout": 4.0, "verify_timeout": 4.0}
_ISSUED = re.compile(r"Issued certificate serial ([0-9a-fA-F]+) for order")
_FAILED_RELOAD = r"\[(emerg|alert|crit)\] {pid}#"


def _sha(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def spki_of_cert(der: bytes) -> bytes:
    return x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_of_key(pem: bytes) -> bytes:
    return crypto.load_key(pem).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# ---------------------------------------------------------------- what the lab looked like


@dataclass
class Baseline:
    """The lab before a case: what the invariants compare against."""

    pebble_offset: int
    error_log_offsets: dict[str, int]
    masters: dict[str, int]
    txt: dict[str, set[str]]
    served: dict[str, str]  # node -> sha256 of the leaf it served

    @classmethod
    def take(cls, lab: Lab) -> Baseline:
        nodes = lab.default_node_names
        return cls(
            pebble_offset=_size(lab.log_dir / "pebble.log"),
            error_log_offsets={n: _size(_error_log(lab, n)) for n in nodes},
            masters={n: lab.nginx_master_pid(n) for n in nodes},
            txt=txt_snapshot(lab),
            served={n: _sha(lab.served_leaf(n, "media.lab.test")) for n in nodes},
        )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _error_log(lab: Lab, node: str) -> Path:
    return lab.node(node).nginx_prefix / "logs" / "error.log"


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def txt_snapshot(lab: Lab) -> dict[str, set[str]]:
    return {name: set(lab.dns_query(name, "TXT")) for name in CHALLENGE_NAMES}


def pebble_serials_since(lab: Lab, offset: int) -> list[int]:
    """Serials Pebble issued since ``offset`` of its log."""
    text = _read_from(lab.log_dir / "pebble.log", offset)
    return [int(m.group(1), 16) for m in _ISSUED.finditer(text)]


# ---------------------------------------------------------------- watching the nodes


class Watcher:
    """Handshakes with every node, over and over, while a case runs.

    A completed handshake proves the node holds the key of the leaf it sent.
    Every one must complete, except with nodes in ``skip`` (cut off on purpose);
    what was seen is checked against the stored versions at the end.
    """

    def __init__(self, lab: Lab, skip: set[str] | None = None):
        self.lab = lab
        self.skip = skip if skip is not None else set()
        self.seen: dict[str, set[str]] = {}
        self.problems: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="watcher")

    def _loop(self) -> None:
        while not self._stop.is_set():
            for node in self.lab.default_node_names:
                if node in self.skip:
                    continue
                try:
                    der = self.lab.served_leaf(node, "media.lab.test", timeout=2.0)
                except (OSError, LabError) as exc:
                    if node not in self.skip:  # it may have been cut while we asked
                        self.problems.append(f"{node}: handshake failed: {exc}")
                    continue
                self.count += 1
                self.seen.setdefault(node, set()).add(_sha(der))
            self._stop.wait(0.03)

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive(), "the watcher hung"


# ---------------------------------------------------------------- the case harness


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        assert self.out.lstrip().startswith("{"), (self.out, self.err)
        return json.loads(self.out)


@dataclass
class Case:
    """One fault case: its own state dir and config over the shared lab nodes."""

    lab: Lab
    dir: Path
    rollout: dict[str, object] = field(default_factory=dict)
    dns: dict[str, object] = field(default_factory=dict)
    acme: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.dir / "state"
        self.store = Store(self.state)
        self.nodes = tuple(self.lab.default_node_names)
        # A copy of the TSIG secret the case may spoil and restore.
        self.tsig_secret = self.dir / "tsig.secret"
        shutil.copy2(self.lab.tsig_secret_path, self.tsig_secret)
        self.config_path = self.write()
        self.baseline = Baseline.take(self.lab)
        self.watcher = Watcher(self.lab).start()
        self.issued_before: set[str] = set()
        self.runs: list[Run] = []
        self.children: list[subprocess.Popen[str]] = []

    # -------------------------------------------------------- config and runs

    def write(self) -> Path:
        dns = {"tsig_secret_file": str(self.tsig_secret), **self.dns}
        return self.lab.write_config(
            self.dir / "certfan.toml", self.state,
            rollout={**FAST_ROLLOUT, **self.rollout}, dns=dns, acme=self.acme or None,
            certificates={"wild": None, "static": None},
        )

    @property
    def cfg(self) -> config.Config:
        return config.load(self.config_path)

    def cli(self, *args: str) -> Run:
        """``certfan -c <config> ARGS`` in this process; logging put back afterwards."""
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(["-c", str(self.config_path), *args])
        finally:
            root.handlers[:], root.level = handlers, level
        run = Run(code, out.getvalue(), err.getvalue())
        self.runs.append(run)
        return run

    def process(self, *args: str, at: str = r"(?!)", action: str = "none",
                log: Path | None = None) -> subprocess.Popen[str]:
        """``certfan ARGS`` in a child process (see certfan_process); killed at teardown."""
        child = certfan_process(self.config_path, *args, at=at, action=action, log=log)
        self.children.append(child)
        return child

    def versions(self) -> list[str]:
        return [r.version for r in self.store.versions(CERT)]

    def current(self) -> Release:
        release = self.store.current(CERT)
        assert release is not None
        return release

    # -------------------------------------------------------- the steps of a case

    def start(self, days_left: float = 2.0) -> Release:
        """v1, a certbot-era certificate inside its last third (due), on every node."""
        key, chain = cert_files(self.dir, "v1", days_left=days_left, lifetime_days=90)
        run = self.cli(*import_args(CERT, key, chain))
        assert run.code == 0, run
        run = self.cli("push")
        assert run.code == 0, run
        v1 = self.current()
        self.issued_before = set(self.versions())
        return v1

    def heal(self) -> Run:
        """The fault is gone: run certfan again, then once more, which must be a no-op."""
        self.watcher.skip.clear()
        first = self.cli("renew")
        assert first.code == 0, first
        again = self.cli("renew")
        assert again.code == 0 and "nothing due, every host current" in again.out, again
        return first

    def finish(self) -> None:
        """Stop watching and end any child still running (idempotent)."""
        self.watcher.stop()
        for child in self.children:
            kill(child)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.communicate(timeout=10)

    # -------------------------------------------------------- the invariants

    def assert_invariants(self, expected_version: str | None = None, *, issued: int = 1) -> None:
        self.finish()
        assert_invariants(self.lab, self.cfg, self.store, expected_version, self.issued_before,
                          baseline=self.baseline, issued=issued, watcher=self.watcher)


def case_maker(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., Case]]:
    """The ``make_case`` fixture: ``make_case(**overrides)`` -> a Case, whose watcher and
    children end with the test (a module declares it with ``pytest.fixture``)."""
    cases: list[Case] = []

    def make(**overrides: Any) -> Case:
        case = Case(lab, tmp_path, **overrides)
        cases.append(case)
        return case

    yield make
    for case in cases:
        case.finish()


def assert_invariants(
    lab: Lab,
    cfg: config.Config,
    store: Store,
    expected_version: str | None,
    issued_before: set[str],
    *,
    baseline: Baseline,
    issued: int,
    watcher: Watcher | None = None,
) -> None:
    """The four invariants of docs/reliability.md, after the healing run."""
    current = store.current(CERT)
    assert current is not None, "no current version"
    if expected_version is not None:
        assert current.version == expected_version, (current.version, expected_version)
    hosts = cfg.certificates[CERT].hosts
    _assert_nodes_serve(lab, cfg, current, hosts, baseline)
    _assert_watched(watcher, store, baseline)
    _assert_issuance(lab, store, current, issued_before, baseline, issued)
    _assert_deploy_state(cfg, current, hosts)
    _assert_dns_clean(lab, cfg, baseline)
    _assert_state_readable(cfg.state_dir, store)


def _assert_nodes_serve(lab: Lab, cfg: config.Config, current: Release,
                        hosts: Sequence[str], baseline: Baseline) -> None:
    """(1) and (2): the served leaf matches the key the pointer holds; config tests; no
    failed reconfiguration; every node on the current version, file for file."""
    snis = dict.fromkeys(["media.lab.test", *(n.replace("*", "certfan-probe") for n in
                                              current.names)])
    for node in hosts:
        root = Path(cfg.hosts[node].root)
        live = root / "live" / CERT
        assert live.is_symlink(), f"{node}: live/{CERT} is not certfan's pointer"
        assert os.readlink(live) == f"../archive/{CERT}/{current.version}", node
        key_pem = (live / "privkey.pem").read_bytes()
        for sni in snis:
            der = lab.served_leaf(node, sni)
            assert spki_of_cert(der) == spki_of_key(key_pem), f"{node} ({sni}): key mismatch"
            assert _sha(der) == current.sha256, f"{node} ({sni}) does not serve {current.version}"
        for name in ("privkey.pem", "fullchain.pem", "cert.pem", "chain.pem"):
            assert (live / name).read_bytes() == current.file(name).read_bytes(), (node, name)
        test = lab.run_on(node, ["nginx", "-t"])
        assert test.returncode == 0, f"{node}: nginx -t: {test.stderr}"
        master = lab.nginx_master_pid(node)
        assert master == baseline.masters[node], f"{node}: nginx master restarted"
        log = _read_from(_error_log(lab, node), baseline.error_log_offsets[node])
        failed = re.findall(_FAILED_RELOAD.format(pid=master) + ".*", log)
        assert not failed, f"{node}: nginx reloaded onto a broken config: {failed}"
        for directory in (root / "archive" / CERT, root / "live"):
            stray = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
            assert not stray, f"{node}: leftovers in {directory}: {stray}"


def _assert_watched(watcher: Watcher | None, store: Store, baseline: Baseline) -> None:
    if watcher is None:
        return
    assert watcher.count > 0, "the watcher made no handshake"
    assert not watcher.problems, watcher.problems[:5]
    known = {r.sha256 for r in store.versions(CERT)} | set(baseline.served.values())
    for node, seen in watcher.seen.items():
        assert seen <= known, f"{node} served a leaf that is no stored version: {seen - known}"


def _assert_issuance(lab: Lab, store: Store, current: Release, issued_before: set[str],
                     baseline: Baseline, issued: int) -> None:
    """(2) nothing issued is lost, nothing needlessly reissued."""
    serials = pebble_serials_since(lab, baseline.pebble_offset)
    assert len(serials) == issued, f"the CA issued {len(serials)} certificate(s), expected {issued}"
    new = [r for r in store.versions(CERT) if r.version not in issued_before]
    assert sorted(int(r.serial, 16) for r in new) == sorted(serials), (
        "stored versions and issued certificates differ: "
        f"{[r.version for r in new]} vs serials {[format(s, 'x') for s in serials]}")
    assert issued == 0 or current in new


def _assert_deploy_state(cfg: config.Config, current: Release, hosts: Sequence[str]) -> None:
    recorded = DeployState(cfg.state_dir).get(CERT)
    for host in hosts:
        entry = recorded.get(host)
        assert entry is not None and entry.deployed == current.version, (host, entry)
        assert entry.last_error is None, (host, entry)


def _assert_dns_clean(lab: Lab, cfg: config.Config, baseline: Baseline) -> None:
    """(3) every TXT value certfan added is gone, and it knows of none pending."""
    assert txt_snapshot(lab) == baseline.txt
    pending = Path(cfg.state_dir) / dns01.PENDING_FILE
    if pending.exists():
        assert json.loads(pending.read_text()) == [], pending.read_text()


def _assert_state_readable(state_dir: Path, store: Store) -> None:
    """(4) every file parses, every version is whole, nothing half-written is left."""
    for path in state_dir.rglob("*"):
        assert ".tmp" not in path.name, f"left over: {path}"
        if path.suffix == ".json":
            json.loads(path.read_text())
    for release in store.versions(CERT):
        store._check_complete(release)
        meta = store.read_meta(release)
        assert meta["version"] == release.version
        assert crypto.key_matches_cert(release.file("privkey.pem").read_bytes(),
                                       release.file("cert.pem").read_bytes())
    DeployState(state_dir).get(CERT)


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


# ---------------------------------------------------------------- certfan in a child process

KILLCHILD = Path(__file__).resolve().with_name("killchild.py")  # run by path


def certfan_process(config_path: Path, *args: str, at: str = r"(?!)", action: str = "none",
                    log: Path | None = None) -> subprocess.Popen[str]:
    """``certfan -v -c CONFIG ARGS`` in a child; at the first log line matching ``at``
    it does ``action``: ``kill`` (SIGKILL itself), ``pause:<dir>`` (touch <dir>/reached,
    wait for <dir>/go) or nothing."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, str(KILLCHILD), at, action, "-v", "-c", str(config_path), *args]
    if log is None:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
    with open(log, "w") as stderr:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                stdin=subprocess.DEVNULL)


def wait_exit(proc: subprocess.Popen[str], timeout: float = 90.0) -> int:
    try:
        proc.communicate(timeout=timeout)  # reads the pipes: a full one must not stall it
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("certfan did not finish in time") from None
    return proc.returncode


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child, unless it has already exited (and been reaped)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
