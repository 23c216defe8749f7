"""The contenders of bench/fleet_anchors.py, each run as a process, and the check after.

Every contender deploys a version nobody has served yet (a fresh leaf from a
bench CA) to a set of lab nodes; `timed` runs it as a child process and
reads the child's own wall time, CPU seconds (user + system, its reaped
children included) and peak RSS from ``os.wait4``. `check_served` then
handshakes with every node for every name until each serves the new leaf.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certfan.config import Config
from certfan_lab import Lab, Node, pki
from certfan_lab.faults import BYPASS_MARK

BENCH = Path(__file__).resolve().parent
RUNBOOK = BENCH / "_runbook.py"
LAUNCH = BENCH / "_launch.py"
PLAYBOOK = BENCH / "ansible" / "deploy.yml"
CERT = "media"
RUN_TIMEOUT = 600.0
CHECK_DEADLINE = 10.0


@dataclass
class Run:
    """One contender's run: the child's figures, then what the check found."""

    contender: str
    code: int
    wall: float
    cpu: float  # user + system of the child and its reaped children
    rss_mib: float  # the child's peak RSS (ru_maxrss)
    stdout: str = ""
    stderr: str = ""
    per_host: list[float] = field(default_factory=list)  # certfan's and the runbook's
    served: bool = False  # every node served the new leaf for every name
    stale_first: int = 0  # nodes that served the old leaf at the first check round
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.served


def timed(argv: Sequence[str], *, env: dict[str, str] | None = None,
          timeout: float = RUN_TIMEOUT) -> Run:
    """Run argv under bench/_launch.py, in its own process group: the command's own wall
    time, CPU seconds and peak RSS (see _launch.py for why not from this process).

    On a timeout or an interrupt the whole group is killed (only what this
    function started), so no ssh or ansible worker outlives the benchmark.
    """
    with (tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err,
          tempfile.NamedTemporaryFile(suffix=".json") as fig):
        launch = [sys.executable, "-I", "-S", str(LAUNCH), fig.name, *argv]
        t0 = time.monotonic()
        proc = subprocess.Popen(launch, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, start_new_session=True)
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            code = proc.wait()
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        finally:
            timer.cancel()
        outer = time.monotonic() - t0
        _kill_group(proc.pid)  # stragglers it left (none expected)
        try:
            figures = json.loads(Path(fig.name).read_text())
        except ValueError:  # killed before it wrote them
            figures = {"wall": outer, "utime": 0.0, "stime": 0.0, "maxrss_kib": 0, "code": code}
        out.seek(0)
        err.seek(0)
        return Run(
            contender=Path(argv[0]).name,
            code=int(figures["code"]),
            wall=float(figures["wall"]),
            cpu=float(figures["utime"]) + float(figures["stime"]),
            rss_mib=float(figures["maxrss_kib"]) / 1024,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
        )


def launcher_floor_mib() -> float:
    """The peak RSS _launch.py reports for /bin/true: the floor under every RSS figure."""
    return timed(["/bin/true"]).rss_mib


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# ---------------------------------------------------------------- versions


class Leaves:
    """Fresh leaves for the certificate's names, signed by a CA made for this run."""

    def __init__(self, work: Path, names: Sequence[str]) -> None:
        self.work, self.names = work, list(names)
        self.ca_key, self.ca = pki.new_ca("certfan bench CA")
        self.ca_file = work / "bench-ca.pem"  # `certfan import --trust`: the chains' root
        self.ca_file.write_bytes(pki.cert_pem(self.ca))
        self.count = 0

    def new(self, prefix: str) -> tuple[Path, str]:
        """(a directory named like the version, holding privkey.pem 0600 and fullchain.pem;
        the hex SHA-256 of the leaf's DER)."""
        self.count += 1
        version = f"{prefix}-{self.count:03d}"
        d = self.work / version
        d.mkdir(mode=0o700)
        key, cert = pki.issue(self.ca_key, self.ca, self.names, dt.timedelta(days=90))
        pki.write_private(d / "privkey.pem", pki.key_pem(key))
        (d / "fullchain.pem").write_bytes(pki.cert_pem(cert) + pki.cert_pem(self.ca))
        der = ssl.PEM_cert_to_DER_cert(pki.cert_pem(cert).decode())
        return d, hashlib.sha256(der).hexdigest()


# ---------------------------------------------------------------- the check


def served_sha(node: Node, sni: str, timeout: float = 3.0) -> str | None:
    """SHA-256 of the leaf the node serves for sni; None when the handshake fails.

    The socket carries the lab's bypass mark: the check goes straight to the
    node, not through its delay proxy (it is not timed).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, BYPASS_MARK)
    sock.settimeout(timeout)
    try:
        sock.connect((node.address, 443))
        with ctx.wrap_socket(sock, server_hostname=sni) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    finally:
        sock.close()
    return hashlib.sha256(der).hexdigest() if der else None


def banner_seconds(node: Node, timeout: float = 5.0) -> float | None:
    """Seconds from connect to the node's SSH banner, as any client sees it (through
    the delay proxy when the node has one: the banner costs one round trip, the SYN's
    delayed dial and the banner's delayed way back). None if it does not come."""
    t0 = time.monotonic()
    try:
        with socket.create_connection((node.address, 22), timeout=timeout) as sock:
            data = b""
            while b"\n" not in data:
                chunk = sock.recv(256)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    return time.monotonic() - t0


def banner_all(nodes: Sequence[Node]) -> list[float | None]:
    """banner_seconds of every node at once: does the latency hold with all of them busy?"""
    with ThreadPoolExecutor(max_workers=min(64, len(nodes))) as pool:
        return list(pool.map(banner_seconds, nodes))


def check_served(run: Run, nodes: Sequence[Node], snis: Sequence[str], sha: str) -> None:
    """Handshake with every node for every name until all serve `sha` (deadline
    CHECK_DEADLINE); sets run.served, run.stale_first and a note naming the laggards."""
    pending = [(n, s) for n in nodes for s in snis]
    deadline = time.monotonic() + CHECK_DEADLINE
    first = True
    with ThreadPoolExecutor(max_workers=min(64, len(pending))) as pool:
        while pending:
            got = list(pool.map(lambda ns: served_sha(*ns), pending))
            pending = [ns for ns, h in zip(pending, got, strict=True) if h != sha]
            if first:
                run.stale_first = len({n.name for n, _ in pending})
                first = False
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    run.served = not pending
    if pending:
        bad = sorted({n.name for n, _ in pending})
        never = f"{len(bad)} node(s) never served the new leaf: {', '.join(bad[:5])}"
        run.note = f"{run.note}; {never}" if run.note else never


# ---------------------------------------------------------------- contenders


def certfan(cfg_path: Path, leaf_dir: Path, trust: Path, src: Path | None = None) -> Run:
    """`certfan import` the leaf (not timed), then `certfan push --json` (timed).

    `trust`: the bench CA, for an import that checks the chain (``--trust``, where
    that certfan has it). `src`: run certfan from that source tree (a ``src`` dir,
    e.g. from ``git archive`` of another commit) instead of the installed one.
    """
    base = [sys.executable, "-m", "certfan", "--config", str(cfg_path)]
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    argv = [*base, "import", CERT, "--key", str(leaf_dir / "privkey.pem"),
            "--fullchain", str(leaf_dir / "fullchain.pem")]
    if _has_option(base, "import", "--trust", env):
        argv += ["--trust", str(trust)]
    imported = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False, timeout=120, env=env)
    if imported.returncode != 0:  # a failed run, not the end of the benchmark
        tail = (imported.stderr.strip().splitlines() or ["(no output)"])[-1][-300:]
        return Run("certfan", imported.returncode, 0.0, 0.0, 0.0,
                   note=f"certfan import failed (exit {imported.returncode}): {tail}")
    run = timed([*base, "push", "--cert", CERT, "--json"], env=env)
    run.contender = "certfan"
    try:
        doc = json.loads(run.stdout)
        outcomes = doc.get("outcomes", [])
        run.per_host = [float(o["seconds"]) for o in outcomes if o.get("seconds") is not None]
        bad = [o for o in outcomes if o.get("result") not in ("deployed", "unchanged")]
        if run.code != 0 and bad:
            o = bad[0]
            run.note = (f"{len(bad)} host(s) not ok, e.g. {o.get('host')}: {o.get('result')} at "
                        f"{o.get('failed_step')}: {str(o.get('error'))[:200]}")
    except (ValueError, KeyError, TypeError, AttributeError):
        run.note = "push --json output not readable"
    if run.code != 0 and not run.note:
        run.note = (run.stderr.strip().splitlines() or ["(no output)"])[-1][-300:]
    return run


_HELP: dict[tuple[str, ...], str] = {}


def _has_option(base: list[str], command: str, option: str, env: dict[str, str]) -> bool:
    """Whether this certfan's `command --help` lists `option` (asked once per certfan)."""
    key = (env.get("PYTHONPATH", ""), command)
    if key not in _HELP:
        done = subprocess.run([*base, command, "--help"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False, timeout=60, env=env)
        _HELP[key] = done.stdout
    return option in _HELP[key]


def inventory(cfg: Config, nodes: Sequence[Node]) -> list[dict[str, Any]]:
    """The nodes as the runbook and Ansible see them: addresses, login, root and the
    config test and reload commands from the lab's certfan config."""
    out = []
    for n in nodes:
        h = cfg.hosts[n.name]
        out.append({
            "name": h.name, "address": h.address, "port": h.port, "user": h.user,
            "identity_file": str(h.identity_file), "known_hosts": str(h.known_hosts),
            "root": h.root, "config_test": list(h.config_test), "reload": list(h.reload),
        })
    return out


def runbook(mode: str, hosts: list[dict[str, Any]], leaf_dir: Path, kex: str = "") -> Run:
    doc = {"cert": CERT, "version": leaf_dir.name, "local_dir": str(leaf_dir), "nodes": hosts,
           "kex": kex}
    path = leaf_dir.parent / f"{leaf_dir.name}.inventory.json"
    path.write_text(json.dumps(doc))
    run = timed([sys.executable, "-I", str(RUNBOOK), mode, str(path)])
    run.contender = f"runbook-{mode}"
    try:
        run.per_host = [float(r["seconds"]) for r in json.loads(run.stdout)["nodes"]]
        failed = [r for r in json.loads(run.stdout)["nodes"] if not r["ok"]]
        if failed:
            run.note = f"{failed[0]['name']}: {failed[0]['step']}: {failed[0]['tail']}"
    except (ValueError, KeyError, TypeError):
        run.note = "runbook output not readable"
    return run


class Ansible:
    """ansible-playbook from this venv against the lab only: forks = node count,
    pipelining on, strict host keys against the lab's known_hosts."""

    def __init__(self, lab: Lab, work: Path, kex: str = "") -> None:
        self.lab, self.work, self.kex = lab, work, kex
        self.exe = Path(sys.executable).with_name("ansible-playbook")
        (work / "ansible-home").mkdir(mode=0o700, exist_ok=True)

    def available(self) -> bool:
        return self.exe.exists()

    def _config(self, forks: int) -> Path:
        path = self.work / f"ansible-{forks}.cfg"
        kex = f"-o KexAlgorithms={self.kex} " if self.kex else ""
        path.write_text(f"""[defaults]
forks = {forks}
host_key_checking = True
gathering = explicit
retry_files_enabled = False
interpreter_python = /usr/bin/python3
local_tmp = {self.work}/ansible-home/tmp
nocows = 1
[ssh_connection]
pipelining = True
ssh_args = -F /dev/null {kex}-o ControlMaster=auto -o ControlPersist=60s -o BatchMode=yes \
-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o GlobalKnownHostsFile=/dev/null \
-o UserKnownHostsFile={self.lab.known_hosts}
""")
        return path

    def run(self, hosts: list[dict[str, Any]], leaf_dir: Path) -> Run:
        inv = {"all": {"hosts": {h["name"]: {
            "ansible_host": h["address"], "ansible_port": h["port"], "ansible_user": h["user"],
            "ansible_ssh_private_key_file": h["identity_file"], "root": h["root"],
            "config_test": h["config_test"], "reload": h["reload"]} for h in hosts}}}
        inv_path = leaf_dir.parent / f"{leaf_dir.name}.inventory.json"
        inv_path.write_text(json.dumps(inv))
        extra = leaf_dir.parent / f"{leaf_dir.name}.vars.json"
        extra.write_text(json.dumps({"cert": CERT, "version": leaf_dir.name,
                                     "local_dir": str(leaf_dir)}))
        control = Path(tempfile.mkdtemp(prefix="cp-", dir=self.work))  # no reuse across runs
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work / "ansible-home"),
            "ANSIBLE_HOME": str(self.work / "ansible-home"),
            "ANSIBLE_CONFIG": str(self._config(len(hosts))),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
            "ANSIBLE_NOCOLOR": "1",
            "LANG": "C.UTF-8",
        }
        try:
            run = timed([str(self.exe), "-i", str(inv_path), "-e", f"@{extra}",
                         str(PLAYBOOK)], env=env)
        finally:
            _close_masters(control)
        run.contender = "ansible"
        if run.code != 0:
            run.note = (run.stdout.strip().splitlines() or [""])[-1][-200:]
        return run


def _close_masters(control: Path) -> None:
    """ControlPersist masters of one Ansible run: asked to exit, then the dir removed."""
    for sock in control.iterdir():
        subprocess.run(["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}", "-O", "exit",
                        "lab-node"], stdin=subprocess.DEVNULL, capture_output=True, check=False,
                       timeout=10)
        sock.unlink(missing_ok=True)
    control.rmdir()
