"""The store's versions: issue (order now), import (adopt certbot's), prune (delete old)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from certfan import defaults
from certfan.cli import docs, output, render
from certfan.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    add_names,
    check_names,
    command,
    load_config,
    positive_int,
)


def cmd_issue(args: argparse.Namespace) -> int:
    """issue certificates now, whatever their due date

    Order each CERT from the CA now (DNS-01), store it as a new version and make it current;
    print the version, serial, SHA-256, names, expiry and path. Several CERTs are ordered
    concurrently. Nothing is deployed.
    """
    from certfan.issue import order
    from certfan.state import lock
    from certfan.state.store import Store

    cfg = load_config(args)
    check_names(cfg, certs=args.certs, cert_option="CERT")  # before anything is ordered
    store = Store(cfg.state_dir)
    lines: list[str] = []
    issued: list[dict[str, Any]] = []
    with lock.hold(cfg.state_dir, "issue"):
        if len(args.certs) == 1:
            release = order.issue(cfg, args.certs[0], store)
            lines += render.release_lines(release)
            issued.append({"cert": release.cert, "release": docs.release_doc(release),
                           "error": None})
        else:
            for outcome in order.issue_many(cfg, store, args.certs):
                if outcome.release is not None:
                    lines += render.release_lines(outcome.release)
                    issued.append({"cert": outcome.cert, "error": None,
                                   "release": docs.release_doc(outcome.release)})
                else:
                    lines.append(f"{outcome.cert}: FAILED: {outcome.error}")
                    issued.append({"cert": outcome.cert, "release": None,
                                   "error": str(outcome.error)})
    code = EXIT_FAILED if any(i["error"] for i in issued) else EXIT_OK
    return output.finish(args, code, lines, {"issued": issued})


def cmd_import(args: argparse.Namespace) -> int:
    """adopt an existing key and certificate (e.g. certbot's) as the current version

    Store KEY and FULLCHAIN (PEM) as a new version of CERT and make it current (key 0600).
    The key must match the certificate. Nothing is deployed: the next renew or push rolls it
    out, and renew replaces it when it is due.
    """
    from certfan.commands.importing import import_cert
    from certfan.state import lock
    from certfan.state.store import Store

    cfg = load_config(args)
    check_names(cfg, certs=[args.cert], cert_option="CERT")
    with lock.hold(cfg.state_dir, "import"):
        result = import_cert(cfg, Store(cfg.state_dir), args.cert, Path(args.key),
                             Path(args.fullchain),
                             chain_file=Path(args.chain) if args.chain else None,
                             trust_files=[Path(t) for t in args.trust or ()])
    return output.finish(args, EXIT_OK, render.imported_lines(result), docs.imported_doc(result))


def cmd_prune(args: argparse.Namespace) -> int:
    """delete old versions locally and on the hosts (never live ones)

    Delete old certificate versions from the local store and from the hosts' archive/
    directories. Never deleted: the newest N, the current version and the one before it,
    what any host serves (its live version and the one before that), and certbot's copies.
    """
    from certfan.commands import prune
    from certfan.state import lock
    from certfan.state.store import Store

    cfg = load_config(args)
    check_names(cfg, certs=args.certs or ())
    with lock.hold(cfg.state_dir, "prune"):
        report = prune.prune(cfg, Store(cfg.state_dir), keep=args.keep,
                             certs=args.certs or (), dry_run=args.dry_run)
    code = EXIT_OK if report.ok else EXIT_FAILED
    return output.finish(args, code, render.prune_lines(report), docs.prune_doc(report))


def register(sub: Any) -> None:
    p = command(sub, "issue", cmd_issue)
    p.add_argument("certs", metavar="CERT", nargs="+", help="certificate name from the config")

    p = command(sub, "import", cmd_import)
    p.add_argument("cert", metavar="CERT", help="certificate name from the config")
    p.add_argument("--key", required=True, metavar="FILE", help="private key (PEM)")
    p.add_argument("--fullchain", required=True, metavar="FILE",
                   help="leaf and intermediates (PEM), e.g. certbot's fullchain.pem")
    p.add_argument("--chain", metavar="FILE",
                   help="the intermediates (PEM), when FULLCHAIN holds the leaf alone")
    p.add_argument("--trust", action="append", metavar="FILE",
                   help="a root (PEM) the chain may end at, besides acme.ca_bundle and the "
                   "system store (repeatable)")

    p = command(sub, "prune", cmd_prune)
    p.add_argument("--keep", type=positive_int, default=defaults.PRUNE_KEEP, metavar="N",
                   help="newest versions to keep besides those in use, at least 1 "
                   f"(default {defaults.PRUNE_KEEP})")
    add_names(p, certs="only this certificate (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="show what would go; delete nothing")
