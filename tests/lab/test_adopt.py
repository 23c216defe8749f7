"""docs/adopt.md walked on the lab where it applies, and the quick start's promise.

* The guide's sudoers lines, installed for a lab node's login user, let exactly
  the configured config test and reload run through ``sudo -n`` and nothing
  else; certfan itself then pushes with them over SSH.
* scripts/setup leaves the machine's services alone: a throwaway nginx and an
  sshd started in the root namespace (loopback ports) still run after it, and
  no service manager was called (shims on PATH record any call). The lab runs
  beside them, in its own namespaces and ports.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from certfan_lab import Lab
from helpers.ops import Ops, restore_logging

_logging = pytest.fixture(autouse=True)(restore_logging)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ops(lab: Lab, tmp_path: Path) -> Ops:
    return Ops(lab, tmp_path)


def sudoers_lines(user: str, config_test: list[str], reload: list[str]) -> str:
    """docs/adopt.md's sudoers file: the two configured commands, exact arguments."""
    return (f"Defaults:{user} !requiretty\n"
            f"{user} ALL=(root) NOPASSWD: {' '.join(config_test)}, {' '.join(reload)}\n")


@contextmanager
def installed_sudoers(text: str, name: str) -> Iterator[Path]:
    path = Path("/etc/sudoers.d") / name
    with tempfile.NamedTemporaryFile("w", dir="/etc/sudoers.d", prefix=".", delete=False) as f:
        f.write(text)
    tmp = Path(f.name)
    tmp.chmod(0o440)
    checked = subprocess.run(["visudo", "-cf", str(tmp)], capture_output=True, text=True,
                             check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    os.replace(tmp, path)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def test_the_sudoers_lines_allow_exactly_the_config_test_and_the_reload(
    lab: Lab, ops: Ops
) -> None:
    node = lab.nodes[0]
    nginx, systemctl = str(node.bin_dir / "nginx"), str(node.bin_dir / "systemctl")
    config_test, reload = [nginx, "-t"], [systemctl, "reload", "nginx"]
    text = sudoers_lines(lab.user, config_test, reload)
    with installed_sudoers(text, f"certfan-test-{lab.user}"):
        def sudo(*argv: str) -> subprocess.CompletedProcess[str]:
            return lab.run_on(node, ["sudo", "-n", *argv])

        assert sudo(*config_test).returncode == 0
        assert sudo(*reload).returncode == 0
        for other in ([nginx, "-s", "stop"], [systemctl, "stop", "nginx"], [nginx],
                      ["/usr/bin/id"], ["/bin/sh", "-c", "id"], [nginx, "-t", "-c", "/tmp/x"]):
            denied = sudo(*other)
            assert denied.returncode != 0, other
            assert "password is required" in denied.stderr or "not allowed" in denied.stderr
        assert lab.run_on(node, ["kill", "-0", str(lab.nginx_master_pid(node))]).returncode == 0

        # certfan with the guide's config_test/reload lines: a push goes through.
        ops.config_path.write_text(ops.config_path.read_text().replace(
            f'name = "{node.name}"\n',
            f'name = "{node.name}"\nconfig_test = ["sudo", "-n", "{nginx}", "-t"]\n'
            f'reload = ["sudo", "-n", "{systemctl}", "reload", "nginx"]\n'))
        assert ops.cfg.hosts[node.name].config_test[:2] == ("sudo", "-n")
        new = ops.import_cert(days_left=60)
        assert ops.cli("push", "--host", node.name) == 0
        assert ops.served(node.name) == new.sha256


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.settimeout(5)
        return s.recv(64)


def _wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def system_like_daemons(tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes],
                                                      subprocess.Popen[bytes], int, int]]:
    """An nginx and an sshd in the root namespace on loopback: the machine's own services."""
    nginx_port, ssh_port = _free_port(), _free_port()
    (tmp / "nginx" / "logs").mkdir(parents=True)
    (tmp / "nginx" / "nginx.conf").write_text(
        f"pid {tmp}/nginx/nginx.pid;\nerror_log {tmp}/nginx/logs/error.log;\n"
        "events {}\nhttp { access_log off; server { listen 127.0.0.1:%d; "
        "return 200 \"system\\n\"; } }\n" % nginx_port)
    key = tmp / "ssh_host_ed25519_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1:{ssh_port}\nHostKey {key}\nPidFile {tmp}/sshd.pid\n"
        "UsePAM no\nPasswordAuthentication no\n")
    nginx = subprocess.Popen(["nginx", "-c", f"{tmp}/nginx/nginx.conf", "-p", f"{tmp}/nginx/",
                              "-g", "daemon off;"])
    sshd = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(tmp / "sshd_config")],
                            stderr=subprocess.DEVNULL)
    procs = (nginx, sshd)
    try:
        for port in (nginx_port, ssh_port):
            _wait_listening(port)
        yield nginx, sshd, nginx_port, ssh_port
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def test_setup_leaves_a_running_nginx_and_sshd_alone(lab: Lab, tmp_path: Path) -> None:
    shims, calls = tmp_path / "shims", tmp_path / "calls"
    shims.mkdir()
    for tool in ("systemctl", "service", "invoke-rc.d", "pkill", "killall"):
        shim = shims / tool
        shim.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\n')
        shim.chmod(0o755)
    with system_like_daemons(tmp_path / "system") as (nginx, sshd, nginx_port, ssh_port):
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "setup")], cwd=REPO, capture_output=True, text=True,
            timeout=600, check=False,
            env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}",
                 "CERTFAN_SETUP_PACKAGES_ONLY": "1"})
        assert done.returncode == 0, done.stdout + done.stderr
        assert nginx.poll() is None and sshd.poll() is None
        assert _answers(ssh_port).startswith(b"SSH-2.0-")
        with socket.create_connection(("127.0.0.1", nginx_port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert b"system" in s.recv(4096)
        assert not calls.exists(), calls.read_text()
        # ... and the lab serves beside them.
        assert lab.served_leaf(lab.nodes[0], "media.lab.test")
