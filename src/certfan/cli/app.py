"""Command line: parse argv, load the config, call the core, print, return an exit code.

This is the only module that prints or decides exit statuses. Core modules
return results and raise :class:`certfan.errors.CertfanError`.

Exit codes (documented in README and ``certfan --help``):
    0   success
    1   an operation failed (issuance, rollout on some host, ...)
    2   usage or configuration error
    3   partial: some hosts do not serve the version (push/renew)
    75  another certfan run holds the lock
    130 interrupted
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from certfan import __version__, defaults
from certfan import config as config_mod
from certfan.errors import CertfanError

log = logging.getLogger("certfan")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130

EPILOG = """\
config file: --config, else $CERTFAN_CONFIG, else /etc/certfan/certfan.toml
exit status: 0 ok, 1 failed, 2 usage/config error, 3 some hosts not serving
             the version, 75 another run holds the lock, 130 interrupted;
             status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (monitoring plugins)
"""


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("host", "cert", "step"):
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=False)


def _setup_logging(args: argparse.Namespace) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if args.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    if args.debug:
        level = logging.DEBUG
    elif args.verbose:
        level = logging.INFO
    else:
        level = logging.WARNING
    root.setLevel(level)
    # Library chatter stays out unless --debug; paramiko logs at INFO per connection.
    for noisy in ("urllib3", "acme", "josepy"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.debug else logging.WARNING)
    # paramiko logs a failed handshake at ERROR with a traceback; certfan reports
    # the same failure itself as one line naming the host.
    logging.getLogger("paramiko").setLevel(logging.DEBUG if args.debug else logging.CRITICAL)


def _load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(config_mod.find_config(args.config))


# ---------------------------------------------------------------- check


def cmd_check(args: argparse.Namespace) -> int:
    cfg = _load_config(args)
    print(f"{cfg.path}: ok")
    print(f"  acme directory: {cfg.acme.directory}")
    print(f"  dns: {cfg.dns.method}", end="")
    print(f" via {cfg.dns.server}:{cfg.dns.port}" if cfg.dns.method == "rfc2136" else "")
    print(f"  state dir: {cfg.state_dir}")
    print(f"  hosts: {len(cfg.hosts)}  groups: {len(cfg.groups)}  certificates: {len(cfg.certificates)}")
    for cert in cfg.certificates.values():
        targets = ", ".join(cert.hosts) or "(no hosts)"
        print(f"  {cert.name}: {', '.join(cert.domains)} [{cert.key_type}] -> {targets}")
    return EXIT_OK


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="validate the configuration file and summarize it",
        description="Load and validate the configuration; print a summary. "
        "Exit 2 with one line naming file, key and line on any error.",
    )
    p.set_defaults(func=cmd_check)


# ---------------------------------------------------------------- issue


def cmd_issue(args: argparse.Namespace) -> int:
    from certfan.cli import render
    from certfan.issue import order
    from certfan.state.store import Store

    cfg = _load_config(args)
    for name in args.certs:
        cfg.certificate(name)  # unknown names fail before anything is ordered
    store = Store(cfg.state_dir)
    if len(args.certs) == 1:
        _print_lines(render.release_lines(order.issue(cfg, args.certs[0], store)))
        return EXIT_OK
    failed = 0
    for outcome in order.issue_many(cfg, store, args.certs):
        if outcome.release is not None:
            _print_lines(render.release_lines(outcome.release))
        else:
            failed += 1
            print(f"{outcome.cert}: FAILED: {outcome.error}")
    return EXIT_FAILED if failed else EXIT_OK


def _add_issue(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "issue",
        help="issue certificates now, whatever their due date",
        description="Order each CERT from the CA now (DNS-01), store it as a new version and "
        "make it current; print the version, serial, SHA-256, names, expiry and path. "
        "Several CERTs are ordered concurrently. Nothing is deployed.",
    )
    p.add_argument("certs", metavar="CERT", nargs="+", help="certificate name from the config")
    p.set_defaults(func=_locked("issue", cmd_issue))


# ---------------------------------------------------------------- push


def cmd_push(args: argparse.Namespace) -> int:
    from certfan.cli import render
    from certfan.deploy import fleet
    from certfan.state import lock
    from certfan.state.deploy import DeployState
    from certfan.state.store import Store

    cfg = _load_config(args)
    store = Store(cfg.state_dir)
    targets = fleet.select_targets(
        cfg, store, certs=args.certs or (), hosts=args.hosts or (), groups=args.groups or ()
    )
    if not targets:
        print(
            "certfan: nothing to push: no selected certificate has both hosts and a stored release",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if args.dry_run:
        plans = fleet.plan(targets, cfg.rollout)
        if args.json:
            print(json.dumps([render.plan_doc(p) for p in plans], indent=2))
        else:
            _print_lines(render.plan_lines(plans, cfg.rollout.canary))
        return EXIT_FAILED if any(p.error for p in plans) else EXIT_OK
    root = logging.getLogger()
    saved = root.handlers[:]
    live = None
    if sys.stdout.isatty() and not args.json:
        live = _LiveLines(sys.stdout, sys.stderr, saved[0].formatter if saved else None)
        root.handlers[:] = [live]
    try:
        with lock.hold(cfg.state_dir, "push"):
            report = fleet.push(
                targets,
                cfg.rollout,
                on_event=live.update if live else None,
                deploy_state=DeployState(cfg.state_dir),
            )
            from certfan.commands.operations import note_rollout

            note_rollout(cfg, store, report)  # for status --prometheus: last rollout success
    finally:
        root.handlers[:] = saved
    code = _push_exit(report)
    if args.json:
        print(json.dumps(render.rollout_doc(report, code), indent=2))
    else:
        _print_lines(render.rollout_lines(report))
    return code


def _push_exit(report) -> int:  # type: ignore[no-untyped-def]
    """0: every selected host serves the version. 3: some do (a mixed fleet).
    1: none does (the rollout failed; with rollback_on_halt the fleet is on the old one)."""
    served = sum(1 for o in report.outcomes if o.ok)
    if served == len(report.outcomes):
        return EXIT_OK
    return EXIT_PARTIAL if served else EXIT_FAILED


class _LiveLines(logging.Handler):
    """One line per host, rewritten in place as its steps go by (terminals only).

    While it is active it is also the logging handler, so a log line is printed
    above the block instead of being overwritten by the next redraw.
    """

    def __init__(self, out, err, formatter: logging.Formatter | None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.out, self.err = out, err
        self.setFormatter(formatter or logging.Formatter())
        self.lines: dict[tuple[str, str], str] = {}
        self.started: dict[tuple[str, str], float] = {}
        self.drawn = 0
        self.guard = threading.Lock()

    def update(self, event) -> None:  # type: ignore[no-untyped-def]
        from certfan.cli import render

        key = (event.cert, event.host)
        now = time.monotonic()
        start = self.started.setdefault(key, now)
        with self.guard:
            self.lines[key] = render.live_line(event, now - start)
            self._redraw()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own contract: never raise
            self.handleError(record)
            return
        with self.guard:
            self._erase()
            self.err.write(message + "\n")
            self.err.flush()
            self._redraw()

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.out.flush()
            self.drawn = 0

    def _redraw(self) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)  # a wrapped line breaks the count
        text = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
        text += "".join(f"{line[:width]}\n" for line in self.lines.values())
        self.drawn = len(self.lines)
        self.out.write(text)
        self.out.flush()


def _add_push(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "push",
        help="deploy the current version of certificates to their hosts",
        description="Deploy the current stored version of each selected certificate to the "
        "hosts that receive it (all of them when no --host/--group is given): canary first, "
        "then the rest; per host upload, flip, config test, reload, prove by TLS handshake, "
        "or roll back. Hosts already serving the version are left alone. Exit 0 when every "
        "selected host serves the version, 3 when only some do, 1 when none does, "
        "2 on a usage or configuration error (such as an unknown --host).",
    )
    p.add_argument(
        "--cert",
        dest="certs",
        action="append",
        metavar="NAME",
        help="certificate to push (repeatable; default: all)",
    )
    p.add_argument(
        "--host", dest="hosts", action="append", metavar="HOST", help="only this host (repeatable)"
    )
    p.add_argument(
        "--group",
        dest="groups",
        action="append",
        metavar="GROUP",
        help="only the hosts of this group (repeatable)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="connect and look, print each host's plan; change nothing",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_push)


# ---------------------------------------------------------------- renew, reissue, status, ...
# The operations live in operations.py, status.py and prune.py; the text in render.py.


def _locked(command: str, func: Callable[[argparse.Namespace], int]
            ) -> Callable[[argparse.Namespace], int]:
    """``func`` holding the run lock (see lock.py); a --dry-run changes nothing and needs none."""

    def run(args: argparse.Namespace) -> int:
        if getattr(args, "dry_run", False):
            return func(args)
        from certfan.state import lock

        with lock.hold(_load_config(args).state_dir, command):
            return func(args)

    return run


def _print_rollout(args: argparse.Namespace, rollout: Any, code: int,
                   after: Sequence[str], **extra: Any) -> int:
    """A rollout report (table, or JSON with ``extra`` fields) then ``after``; returns ``code``."""
    from certfan.cli import render

    if args.json:
        doc = render.rollout_doc(rollout, code)
        doc.update(extra)
        print(json.dumps(doc, indent=2))
    else:
        _print_lines(render.rollout_lines(rollout))
        _print_lines(after)
    return code


def _print_lines(lines: Sequence[str]) -> None:
    for line in lines:
        print(line)


def cmd_renew(args: argparse.Namespace) -> int:
    import random

    from certfan.cli import render
    from certfan.commands import operations
    from certfan.state import lock
    from certfan.state.store import Store

    cfg = _load_config(args)
    if args.jitter > 0:
        pause = random.uniform(0, args.jitter)
        log.info("waiting %.0fs before starting (--jitter %g)", pause, args.jitter)
        time.sleep(pause)
    with lock.hold(cfg.state_dir, "renew"):
        report = operations.renew(cfg, Store(cfg.state_dir))
    code = EXIT_FAILED if report.failed_issues else EXIT_OK
    if report.rollout is not None and not report.rollout.ok:
        code = code or _push_exit(report.rollout)
    if args.json:
        rolled = render.rollout_doc(report.rollout, code) if report.rollout else None
        print(json.dumps({**render.renew_doc(report), "exit": code, "rollout": rolled}, indent=2))
        return code
    if code != EXIT_OK:
        _print_lines(render.renew_problems(report))
        if report.rollout is not None and not report.rollout.ok:
            _print_lines(render.rollout_lines(report.rollout))
    if code != EXIT_OK or not args.quiet:
        print(render.renew_summary(report))
    return code


def _add_renew(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "renew",
        help="renew what is due and bring every host up to date (for cron/systemd)",
        description="Renew every certificate that is due (ARI window, else lifetime), roll each "
        "new version out under the fleet policy, and bring any host that missed an earlier "
        "rollout up to date. With nothing due and every host current it contacts neither the "
        "CA, nor DNS, nor any host. Prints one summary line on success, details on failure. "
        "Exit 0 ok, 1 a renewal or rollout failed, 3 some hosts do not serve the version, "
        "75 another run holds the lock.",
    )
    p.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS",
                   help="first sleep a random time up to SECONDS (spreads fleets of timers)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing on success (for cron: mail only on failure)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_renew)


def cmd_reissue(args: argparse.Namespace) -> int:
    from certfan.cli import render
    from certfan.commands import operations
    from certfan.state import lock
    from certfan.state.store import Store

    if args.reason and not args.revoke_old:
        print("certfan: error: --reason needs --revoke-old", file=sys.stderr)
        return EXIT_USAGE
    cfg = _load_config(args)
    with lock.hold(cfg.state_dir, "reissue"):
        report = operations.reissue(cfg, Store(cfg.state_dir), args.cert,
                                    revoke_old=args.revoke_old,
                                    reason=args.reason or "superseded",
                                    canary=not args.no_canary)
    code = _push_exit(report.rollout)
    if code == EXIT_OK and not report.ok:
        code = EXIT_FAILED  # every host serves the new key, but the revocation failed
    return _print_rollout(
        args, report.rollout, code, render.reissue_lines(report),
        version=report.release.version, revoked=report.revoked, revoke_error=report.revoke_error,
    )


def _add_reissue(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reissue",
        help="emergency: new key and certificate now, on every host, old one revoked",
        description="Make a fresh key, order CERT now whatever its due date, roll it out to "
        "every host of the certificate (canary and proof as always), and with --revoke-old "
        "revoke the previous certificate once every host is proven to serve the new one. "
        "Exit 0 when every host serves it (and the old one is revoked if asked), 3 when only "
        "some do, 1 when none does or the revocation failed.",
    )
    p.add_argument("cert", metavar="CERT", help="certificate name from the config")
    p.add_argument("--revoke-old", action="store_true",
                   help="revoke the previous certificate once every host serves the new one")
    p.add_argument("--reason", choices=("unspecified", "keyCompromise", "affiliationChanged",
                                        "superseded", "cessationOfOperation"),
                   help="revocation reason (default superseded; keyCompromise is signed with "
                   "the old certificate's own key)")
    p.add_argument("--no-canary", action="store_true",
                   help="no canary stage: every host at once (bounded by concurrency)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_reissue)


def cmd_status(args: argparse.Namespace) -> int:
    from pathlib import Path

    from certfan.cli import render
    from certfan.commands import status
    from certfan.state.store import Store

    try:  # a monitoring check that cannot check is UNKNOWN (3), whatever went wrong
        cfg = _load_config(args)
        report = status.collect(cfg, Store(cfg.state_dir), certs=args.certs or (),
                                hosts=args.hosts or (), warn_days=args.warn_days,
                                crit_days=args.crit_days)
        if args.prometheus:
            status.write_prometheus(Path(args.prometheus), report)
    except CertfanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"CERTFAN UNKNOWN: {exc}")
        return status.UNKNOWN
    if args.json:
        print(json.dumps(render.status_doc(report), indent=2))
    else:
        _print_lines(render.status_text(report))
    return report.state


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="what each host has on disk and serves; a Nagios/Icinga-style check",
        description="For each host and certificate: the version on disk (SSH), what the host "
        "serves for each name (TLS handshake to its probe address), days until that expires, "
        "and drift from the current version. Exit as a monitoring plugin: 0 OK, 1 WARNING, "
        "2 CRITICAL, 3 UNKNOWN (an unreachable host is UNKNOWN, never OK). Takes no lock.",
    )
    p.add_argument("--cert", dest="certs", action="append", metavar="NAME",
                   help="only this certificate (repeatable)")
    p.add_argument("--host", dest="hosts", action="append", metavar="H",
                   help="only this host (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--prometheus", metavar="FILE",
                   help="also write a node_exporter textfile (replaced atomically)")
    p.add_argument("--warn-days", type=float, default=defaults.STATUS_WARN_DAYS, metavar="N",
                   help=f"WARNING when a served certificate expires within N days "
                   f"(default {defaults.STATUS_WARN_DAYS:g})")
    p.add_argument("--crit-days", type=float, default=defaults.STATUS_CRIT_DAYS, metavar="N",
                   help=f"CRITICAL within N days (default {defaults.STATUS_CRIT_DAYS:g})")
    p.set_defaults(func=cmd_status)


def cmd_rollback(args: argparse.Namespace) -> int:
    from certfan.cli import render
    from certfan.commands import operations
    from certfan.state import lock
    from certfan.state.store import Store

    cfg = _load_config(args)
    with lock.hold(cfg.state_dir, "rollback"):
        report = operations.rollback(cfg, Store(cfg.state_dir), args.cert, args.hosts or ())
    code = _push_exit(report.rollout)
    return _print_rollout(
        args, report.rollout, code, render.rollback_lines(report),
        version=report.release.version, current=report.activated, held=list(report.held),
    )


def _add_rollback(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollback",
        help="point hosts back at the previous version (tested, reloaded, proven)",
        description="Roll the previous stored version of the certificate out to its hosts, "
        "with the same upload, flip, config test, reload and TLS proof as a push. Without "
        "--host the previous version also becomes current again; with --host those hosts are "
        "held on it (renew leaves them alone) until a new version is issued. Exit codes as "
        "push.",
    )
    p.add_argument("--cert", required=True, metavar="NAME", help="certificate to roll back")
    p.add_argument("--host", dest="hosts", action="append", metavar="H",
                   help="only this host (repeatable; default: every host of the certificate)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_rollback)


def cmd_prune(args: argparse.Namespace) -> int:
    from certfan.cli import render
    from certfan.commands import prune
    from certfan.state import lock
    from certfan.state.store import Store

    cfg = _load_config(args)
    with lock.hold(cfg.state_dir, "prune"):
        report = prune.prune(cfg, Store(cfg.state_dir), keep=args.keep,
                             certs=args.certs or (), dry_run=args.dry_run)
    _print_lines(render.prune_lines(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def _add_prune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune",
        help="delete old versions locally and on the hosts (never live ones)",
        description="Delete old certificate versions from the local store and from the hosts' "
        "archive/ directories. Never deleted: the newest N, the current version and the one "
        "before it, what any host serves (its live version and the one before that), and "
        "certbot's copies.",
    )
    p.add_argument("--keep", type=int, default=defaults.PRUNE_KEEP, metavar="N",
                   help=f"newest versions to keep besides those in use (default {defaults.PRUNE_KEEP})")
    p.add_argument("--cert", dest="certs", action="append", metavar="NAME",
                   help="only this certificate (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="show what would go; delete nothing")
    p.set_defaults(func=cmd_prune)


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from certfan.cli import render
    from certfan.commands import operations
    from certfan.state import lock
    from certfan.state.store import Store

    cfg = _load_config(args)
    with lock.hold(cfg.state_dir, "import"):
        result = operations.import_cert(cfg, Store(cfg.state_dir), args.cert, Path(args.key),
                                        Path(args.fullchain))
    _print_lines(render.imported_lines(result))
    return EXIT_OK


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import",
        help="adopt an existing key and certificate (e.g. certbot's) as the current version",
        description="Store KEY and FULLCHAIN (PEM) as a new version of CERT and make it "
        "current (key 0600). The key must match the certificate. Nothing is deployed: the "
        "next renew or push rolls it out, and renew replaces it when it is due.",
    )
    p.add_argument("cert", metavar="CERT", help="certificate name from the config")
    p.add_argument("--key", required=True, metavar="FILE", help="private key (PEM)")
    p.add_argument("--fullchain", required=True, metavar="FILE",
                   help="leaf and intermediates (PEM), e.g. certbot's fullchain.pem")
    p.set_defaults(func=cmd_import)


# ---------------------------------------------------------------- parser

_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_check,
    _add_issue,
    _add_push,
    _add_renew,
    _add_reissue,
    _add_status,
    _add_rollback,
    _add_prune,
    _add_import,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="certfan",
        description="Get TLS certificates from an ACME CA through DNS-01 (RFC 2136) and roll "
        "them out over SSH to nginx edge nodes: canary first, config-tested, reloaded, "
        "proven by a TLS handshake, rolled back on failure.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"certfan {__version__}")
    parser.add_argument("-c", "--config", metavar="FILE", help="configuration file (TOML)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step at INFO")
    parser.add_argument(
        "--debug", action="store_true", help="log protocol detail; show tracebacks on errors"
    )
    parser.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log line format on stderr"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _setup_logging(args)
    try:
        return int(args.func(args))
    except CertfanError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"certfan: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("certfan: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
