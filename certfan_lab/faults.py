"""Faults the lab can inject into a node or a service, each with its heal.

Every fault method returns a :class:`Fault`; ``with lab.faults.cut("sally"):``
heals on leaving the block, and each fault also has a named heal method.
Heals are idempotent.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Self

from certfan_lab import nodes
from certfan_lab.nodes import Node
from certfan_lab.procs import LabError, run

if TYPE_CHECKING:
    from certfan_lab.core import Lab

log = logging.getLogger(__name__)

DELAYPROXY = Path(__file__).with_name("delayproxy.py")
# Connections carrying this mark (the delay proxy's own, the lab's readiness
# probes) are never redirected to a delay proxy.
BYPASS_MARK = 0x4346
FILL_FILE = ".lab-fill"
BROKEN_DIRECTIVE = "lab_broken_directive on;  # certfan lab: break_nginx\n"


class Fault:
    """An applied fault; `heal()` or the end of a with block undoes it."""

    def __init__(self, what: str, heal: Callable[[], None]) -> None:
        self.what = what
        self._heal = heal

    def heal(self) -> None:
        self._heal()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()

    def __repr__(self) -> str:
        return f"<Fault {self.what}>"


class Faults:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._cut: set[str] = set()
        self._proxies: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        self._chain_made = False

    # -- network cut ----------------------------------------------------------
    def cut(self, node: str | Node) -> Fault:
        """Drop every packet into the node's netns: connects time out, sessions hang."""
        n = self.lab.node(node)
        if n.name not in self._cut:
            run([*nodes.enter(n), "iptables", "-w", "-I", "INPUT", "-j", "DROP"])
            self._cut.add(n.name)
        return Fault(f"cut {n.name}", lambda: self.heal_cut(n))

    def heal_cut(self, node: str | Node) -> None:
        n = self.lab.node(node)
        if n.name in self._cut:
            run([*nodes.enter(n), "iptables", "-w", "-D", "INPUT", "-j", "DROP"])
            self._cut.discard(n.name)

    # -- latency --------------------------------------------------------------
    def _rule(self, n: Node, port: int) -> list[str]:
        return [
            self.lab.latency_chain,
            "-d",
            f"{n.address}/32",
            "-p",
            "tcp",
            "-m",
            "multiport",
            "--dports",
            "22,443",
            "-m",
            "mark",
            "!",
            "--mark",
            hex(BYPASS_MARK),
            "-j",
            "REDIRECT",
            "--to-ports",
            str(port),
        ]

    def add_latency(self, node: str | Node, ms: float) -> Fault:
        """Delay the node's SSH and HTTPS traffic by `ms` each way (new connections)."""
        n = self.lab.node(node)
        self.clear_latency(n)
        chain = self.lab.latency_chain
        if not self._chain_made:
            run(["iptables", "-w", "-t", "nat", "-N", chain])
            run(["iptables", "-w", "-t", "nat", "-I", "OUTPUT", "-j", chain])
            self._chain_made = True
        pidfile = self.lab.run_dir / f"latency-{n.name}.pid"
        with open(self.lab.log_dir / f"latency-{n.name}.log", "ab") as logf:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    str(DELAYPROXY),
                    "--tag",
                    str(pidfile),  # names the lab dir, for `certfan_lab down`
                    "--delay-ms",
                    str(ms),
                    "--mark",
                    hex(BYPASS_MARK),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=logf,
            )
        try:
            port = _first_line_port(proc, timeout=10.0)
            pidfile.write_text(f"{proc.pid}\n")
            run(["iptables", "-w", "-t", "nat", "-A", *self._rule(n, port)])
        except BaseException:
            _stop_child(proc)
            raise
        self._proxies[n.name] = (proc, port)
        return Fault(f"latency {n.name} {ms}ms", lambda: self.clear_latency(n))

    def clear_latency(self, node: str | Node) -> None:
        n = self.lab.node(node)
        entry = self._proxies.pop(n.name, None)
        if entry is None:
            return
        proc, port = entry
        run(["iptables", "-w", "-t", "nat", "-D", *self._rule(n, port)], check=False)
        _stop_child(proc)
        (self.lab.run_dir / f"latency-{n.name}.pid").unlink(missing_ok=True)

    def clear_all_latency(self) -> None:
        for name in list(self._proxies):
            self.clear_latency(name)

    # -- nginx config -----------------------------------------------------------
    def break_nginx(self, node: str | Node) -> Fault:
        """Make the node's nginx config invalid; the running nginx is not reloaded."""
        n = self.lab.node(node)
        text = n.site_conf.read_text()
        if BROKEN_DIRECTIVE not in text:
            n.site_conf.write_text(BROKEN_DIRECTIVE + text)
        return Fault(f"break_nginx {n.name}", lambda: self.fix_nginx(n))

    def fix_nginx(self, node: str | Node) -> None:
        n = self.lab.node(node)
        text = n.site_conf.read_text()
        if BROKEN_DIRECTIVE in text:
            n.site_conf.write_text(text.replace(BROKEN_DIRECTIVE, ""))

    # -- host key ---------------------------------------------------------------
    def change_host_key(self, node: str | Node) -> Fault:
        """A new sshd host key; known_hosts keeps the old one."""
        n = self.lab.node(node)
        saved = n.host_key_file.with_name(n.host_key_file.name + ".lab-orig")
        if not saved.exists():
            shutil.copy2(n.host_key_file, saved)
            known = n.host_key
            nodes.write_host_key(n)
            n.host_key = known  # what known_hosts says, not what sshd now shows
            self.lab.restart_sshd(n)
        return Fault(f"change_host_key {n.name}", lambda: self.restore_host_key(n))

    def restore_host_key(self, node: str | Node) -> None:
        n = self.lab.node(node)
        saved = n.host_key_file.with_name(n.host_key_file.name + ".lab-orig")
        if saved.exists():
            os.replace(saved, n.host_key_file)
            n.host_key_file.with_suffix(".pub").write_text(n.host_key + "\n")
            self.lab.restart_sshd(n)

    # -- the certificate root -----------------------------------------------------
    def fill_disk(self, node: str | Node) -> Fault:
        """Fill the node's certificate tmpfs until writes fail with ENOSPC."""
        n = self.lab.node(node)
        fd = os.open(n.root / FILL_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (1 << 20, 4096, 1):
                chunk = b"\0" * size
                try:
                    while True:
                        os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
        finally:
            os.close(fd)
        return Fault(f"fill_disk {n.name}", lambda: self.unfill_disk(n))

    def unfill_disk(self, node: str | Node) -> None:
        (self.lab.node(node).root / FILL_FILE).unlink(missing_ok=True)

    def make_readonly(self, node: str | Node) -> Fault:
        n = self.lab.node(node)
        nodes.remount(n.root, readonly=True)
        return Fault(f"make_readonly {n.name}", lambda: self.make_writable(n))

    def make_writable(self, node: str | Node) -> None:
        nodes.remount(self.lab.node(node).root, readonly=False)

    # -- services ---------------------------------------------------------------
    def stop_dns(self) -> Fault:
        self.lab.stop_dns()
        return Fault("stop_dns", self.lab.start_dns)

    def start_dns(self) -> None:
        self.lab.start_dns()

    def stop_pebble(self) -> Fault:
        self.lab.stop_pebble()
        return Fault("stop_pebble", self.lab.start_pebble)

    def start_pebble(self) -> None:
        self.lab.start_pebble()


def _first_line_port(proc: subprocess.Popen[bytes], timeout: float) -> int:
    if proc.stdout is None:
        raise LabError("delay proxy started without a stdout pipe")
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise LabError("delay proxy did not start (see its log in the lab's logs/)")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:
                raise LabError("delay proxy exited before listening")
            line += byte
    return int(line)


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
