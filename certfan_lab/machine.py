"""The machine the lab runs on: can it run here, is an address ours, is a port open."""

from __future__ import annotations

import os
import shutil
import socket

from certfan_lab import powerdns
from certfan_lab.faults import BYPASS_MARK

BINARIES = {
    "named": "/usr/sbin/named",
    "pebble": "/usr/bin/pebble",
    "sshd": "/usr/sbin/sshd",
    "nginx": "/usr/sbin/nginx",
    "pdns_server": powerdns.BINARY,
}
TOOLS = ("ip", "iptables", "nsenter", "setpriv", "sysctl", "useradd", "userdel")

def preflight(binaries: dict[str, str] | None = None) -> str | None:
    """Why a lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, tmpfs mounts, iptables, a login user)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    missing += [p for p in {**BINARIES, **(binaries or {})}.values() if not os.access(p, os.X_OK)]
    if missing:
        return f"missing program(s): {', '.join(missing)}"
    return None


def local_address(address: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def tcp_open(address: str, port: int) -> bool:
    """Readiness probe; marked so a delay proxy never answers in the node's place."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, BYPASS_MARK)
    sock.settimeout(0.2)
    try:
        sock.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()
