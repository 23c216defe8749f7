"""The README demo: certfan's main job end to end on the local lab.

The lab's four edge nodes start like the incident: each serves a certificate
with three days left, in certbot's layout. The demo runs the real `certfan`
command line against the lab's config, as an operator adopting certfan would:
check the config, import what certbot left, see `status` raise the alarm,
let `renew` (what the timer runs) issue through DNS-01 and roll out canary
first, see `status` clear; then it asks each node itself, by TLS handshake,
what it serves now.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from certfan.state.store import Store
from certfan_lab.core import Lab

CERT = "media"


def _served(lab: Lab, node: str, sni: str) -> tuple[str, datetime]:
    der = lab.served_leaf(node, sni)
    leaf = x509.load_der_x509_certificate(der)
    return hashlib.sha256(der).hexdigest(), leaf.not_valid_after_utc


def _show_fleet(lab: Lab, sni: str, expect_sha: str | None) -> bool:
    now = datetime.now(UTC)
    ok = True
    for node in lab.nodes:
        sha, not_after = _served(lab, node.name, sni)
        days = (not_after - now).total_seconds() / 86400
        if expect_sha is None:
            verdict = ""
        elif sha == expect_sha:
            verdict = "  new certificate: OK"
        else:
            verdict = "  NOT the new certificate"
            ok = False
        print(f"  {node.name:<16} {node.address:<12} sha256 {sha[:16]}  "
              f"expires in {days:6.1f} days{verdict}")
    return ok


def _certfan(lab: Lab, *args: str) -> int:
    argv = [sys.executable, "-m", "certfan", "--config", str(lab.config_path), *args]
    print(f"\n$ certfan {' '.join(args)}", flush=True)
    return subprocess.run(argv, check=False).returncode


def run(keep: bool = False, lab_args: dict[str, Any] | None = None) -> int:
    with Lab(**(lab_args or {})) as lab:
        sni = "media.lab.test"
        print(f"lab up in {lab.start_seconds:.2f}s; config {lab.config_path}")
        print(f"\nBefore: every node serves the seeded certificate, about to expire ({sni}):")
        _show_fleet(lab, sni, None)
        seed = lab.nodes[0].root / "live" / CERT
        steps: tuple[tuple[tuple[str, ...], int], ...] = (
            (("check",), 0),
            (("audit",), 2),  # CRITICAL: what the nodes serve expires in three days
            (("doctor",), 0),  # SSH, root, config test, reload, nginx paths, DNS, CAA, CA
            (("import", CERT, "--key", str(seed / "privkey.pem"),
              "--fullchain", str(seed / "fullchain.pem"),
              "--trust", str(lab.dir / "pki" / "old-ca.pem")), 0),  # certbot's CA: the root
            (("status", "--cert", CERT), 2),  # CRITICAL: three days left
            (("-v", "renew"), 0),
            (("status", "--cert", CERT), 0),
        )
        for step, expected in steps:
            code = _certfan(lab, *step)
            if code != expected:
                print(f"\ndemo: `certfan {' '.join(step)}` exited {code}, expected {expected}",
                      file=sys.stderr)
                return 1
        current = Store(lab.state_dir).current(CERT)
        if current is None:
            print("demo: nothing stored for media", file=sys.stderr)
            return 1
        print(f"\nAfter: asked by TLS handshake, each node serves version {current.version}:")
        ok = _show_fleet(lab, sni, current.sha256)
        print("\ndemo: " + ("every node serves the new certificate" if ok else "FAILED"))
        if keep and ok:
            print(f"lab stays up (config {lab.config_path}); Ctrl-C stops it", flush=True)
            try:
                while True:
                    input()
            except (KeyboardInterrupt, EOFError):
                pass
        return 0 if ok else 1
