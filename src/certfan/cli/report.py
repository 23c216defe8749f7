"""certfan status: what each host has on disk and serves; a monitoring check.

Imports no CA or DNS code (tests/unit/test_cli_imports.py holds it to that).
"""

from __future__ import annotations

import argparse
import traceback
from pathlib import Path
from typing import Any

from certfan.cli import docs, output, render
from certfan.cli.options import (
    add_names,
    add_window,
    check_names,
    check_window,
    command,
    load_config,
)
from certfan.errors import CertfanError


def cmd_status(args: argparse.Namespace) -> int:
    """what each host has on disk and serves; a Nagios/Icinga-style check

    For each host and certificate: the version on disk (SSH), what the host serves for each
    name (TLS handshake to its probe address), days until that expires, and drift from the
    current version. Exit as a monitoring plugin: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (an
    unreachable host is UNKNOWN, never OK). Takes no lock.
    """
    from certfan.commands import status
    from certfan.state.store import Store

    check_window(args)
    try:  # a monitoring check that cannot check is UNKNOWN (3), whatever went wrong
        cfg = load_config(args)
        check_names(cfg, hosts=args.hosts or (), certs=args.certs or ())
        report = status.collect(cfg, Store(cfg.state_dir), certs=args.certs or (),
                                hosts=args.hosts or (), warn_days=args.warn_days,
                                crit_days=args.crit_days)
        if args.prometheus:
            from certfan.commands import prometheus

            prometheus.write_prometheus(Path(args.prometheus), report)
    except CertfanError as exc:
        if args.debug:
            traceback.print_exc()
        if args.json:
            output.print_json(output.document("status", status.UNKNOWN, {"state": "UNKNOWN"},
                                              error=str(exc)))
        else:
            output.print_lines([f"CERTFAN UNKNOWN: {exc}"])
        return status.UNKNOWN
    return output.finish(args, report.state, render.status_text(report),
                         docs.status_doc(report), ok=report.state == status.OK)


def register(sub: Any) -> None:
    p = command(sub, "status", cmd_status)
    add_names(p, certs="only this certificate (repeatable)", hosts="only this host (repeatable)")
    p.add_argument("--prometheus", metavar="FILE",
                   help="also write a node_exporter textfile (replaced atomically)")
    add_window(p)


