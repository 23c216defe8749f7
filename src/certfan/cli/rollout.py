"""The commands that roll versions out: push, renew, reissue, rollback.

Each holds the run lock, shows live progress on a terminal, and on Ctrl-C or
SIGTERM during the rollout prints where every host stands and the command
that finishes the job (exit 130).
"""

from __future__ import annotations

import argparse
import logging
import random
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from certfan.cli import docs, live, output, render
from certfan.cli.interrupt import stopping
from certfan.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PARTIAL,
    UsageError,
    add_names,
    check_names,
    command,
    load_config,
    non_negative,
)
from certfan.errors import CertfanError
from certfan.state.revocations import DEFAULT_REASON, REVOCATION_REASONS

if TYPE_CHECKING:
    from certfan.commands.tools import Tools
    from certfan.config import Config
    from certfan.deploy.fleet import Report
    from certfan.deploy.model import HostOutcome

log = logging.getLogger(__name__)



def push_exit(report: Report) -> int:
    """0: every selected host serves the version. 3: some do (a mixed fleet).
    1: none does (the rollout failed; with rollback_on_halt the fleet is on the old one)."""
    served = sum(1 for o in report.outcomes if o.ok)
    if served == len(report.outcomes):
        return EXIT_OK
    return EXIT_PARTIAL if served else EXIT_FAILED


def _cli(args: argparse.Namespace, *words: str) -> str:
    """A certfan command line for the operator, with the same --config as this run."""
    head = ["certfan"] + (["--config", args.config] if args.config else [])
    return shlex.join(head + list(words))


def push_remaining(args: argparse.Namespace, report: Report | None) -> list[str]:
    """``certfan push`` lines that bring the hosts this run left behind to the version."""
    if report is None:
        return []
    late: dict[str, list[str]] = {}
    for o in report.outcomes:
        if not o.ok:
            late.setdefault(o.cert, []).append(o.host)
    return [_cli(args, "push", "--cert", cert, *(w for h in hosts for w in ("--host", h)))
            for cert, hosts in late.items()]


def _run(args: argparse.Namespace, cfg: Config, name: str,
         work: Callable[[Config, Tools], tuple[int, Report | None, list[str], dict[str, Any]]],
         finish: Callable[[Report | None], list[str]]) -> int:
    """Load, lock, run ``work`` with live progress and the stop flag; report; exit code.

    ``work`` returns (code, rollout report, text after the table, JSON body).
    ``finish`` names the commands that complete the job after an interruption.
    """
    from certfan.commands.tools import Stop, Tools
    from certfan.state import lock

    stop = Stop()
    show = not (args.json or args.quiet)
    with live.progress(show) as display, stopping(stop), lock.hold(cfg.state_dir, name):
        tools = Tools(on_event=display.update if display else None, stop=stop)
        code, report, after, body = work(cfg, tools)
    if report is not None:
        report = last_known_serving(cfg, report)
        body = {**body, **_rollout_body(report)}
        if body.get("rollout") is not None:  # renew nests it too
            body["rollout"] = docs.rollout_doc(report)
    spaced = sys.stdout.isatty()
    if stop.is_set():
        todo = finish(report)
        code = EXIT_INTERRUPTED
        body = {**body, "interrupted": True, "finish": todo}
        return output.finish(args, code, render.interrupted_lines(report, todo, spaced=spaced),
                             body)
    lines = render.rollout_lines(report, spaced=spaced) if report is not None else []
    return output.finish(args, code, lines + after, {**body, "interrupted": False, "finish": []})


def last_known_serving(cfg: Config, report: Report) -> Report:
    """Hosts the rollout never touched (halted, interrupted) serve what the deploy
    state last recorded for them; the report says so instead of "unknown"."""
    from certfan.deploy.model import INTERRUPTED, SKIPPED
    from certfan.state.deploy import DeployState

    deploy = DeployState(cfg.state_dir)
    recorded = {cert: deploy.get(cert) for cert in {o.cert for o in report.outcomes}}

    def fill(o: HostOutcome) -> HostOutcome:
        entry = recorded[o.cert].get(o.host)
        if o.serving is None and o.result in (SKIPPED, INTERRUPTED) and entry is not None:
            return replace(o, serving=entry.deployed)
        return o

    return replace(report, outcomes=tuple(fill(o) for o in report.outcomes))


def _rollout_body(report: Report | None) -> Mapping[str, Any]:
    return docs.rollout_doc(report) if report is not None else {"outcomes": [],
                                                                 "halted_by": None,
                                                                 "warnings": []}


# ---------------------------------------------------------------- push


def cmd_push(args: argparse.Namespace) -> int:
    """deploy the current version of certificates to their hosts

    Deploy the current stored version of each selected certificate to the hosts that receive
    it (all of them when no --host/--group is given): canary first, then the rest; per host
    upload, flip, config test, reload, prove by TLS handshake, or roll back. Hosts already
    serving the version are left alone. Exit 0 when every selected host serves the version,
    3 when only some do, 1 when none does, 2 on a usage or configuration error (such as an
    unknown --host), 130 when interrupted.
    """
    from certfan.commands import push
    from certfan.state.store import Store

    cfg = load_config(args)
    check_names(cfg, hosts=args.hosts or (), groups=args.groups or (), certs=args.certs or ())
    targets = push.select(cfg, Store(cfg.state_dir), certs=args.certs or (),
                          hosts=args.hosts or (), groups=args.groups or ())
    if not targets:
        raise CertfanError("nothing to push: no selected certificate has both hosts and a "
                           "stored release")
    if args.dry_run:
        plans = push.dry_run(cfg, targets)
        code = EXIT_FAILED if any(p.error for p in plans) else EXIT_OK
        return output.finish(args, code, render.plan_lines(plans, cfg.rollout.canary),
                             {"dry_run": True, "plans": [docs.plan_doc(p) for p in plans]})

    def work(cfg: Config, tools: Tools) -> tuple[int, Report, list[str], dict[str, Any]]:
        report = push.push(cfg, Store(cfg.state_dir), targets, tools)
        return push_exit(report), report, [], {"dry_run": False, **_rollout_body(report)}

    return _run(args, cfg, "push", work, lambda report: push_remaining(args, report))


# ---------------------------------------------------------------- renew


def cmd_renew(args: argparse.Namespace) -> int:
    """renew what is due and bring every host up to date (for cron/systemd)

    Renew every certificate that is due (ARI window, else lifetime), roll each new version
    out under the fleet policy, and bring any host that missed an earlier rollout up to
    date. With nothing due and every host current it contacts neither the CA, nor DNS, nor
    any host. Prints one summary line on success, details on failure. Exit 0 ok, 1 a renewal
    or rollout failed, 3 some hosts do not serve the version, 75 another run holds the lock.
    """
    from certfan.commands.renew import renew
    from certfan.state.store import Store

    cfg = load_config(args)
    if args.jitter > 0:
        pause = random.uniform(0, args.jitter)
        log.info("waiting %.0fs before starting (--jitter %g)", pause, args.jitter)
        time.sleep(pause)

    def work(cfg: Config, tools: Tools) -> tuple[int, Report | None, list[str], dict[str, Any]]:
        report = renew(cfg, Store(cfg.state_dir), tools)
        code = EXIT_FAILED if report.failed_issues else EXIT_OK
        if report.rollout is not None and not report.rollout.ok:
            code = code or push_exit(report.rollout)
        after = render.renew_problems(report) + [render.renew_summary(report)]
        shown = report.rollout if report.rollout is not None and not report.rollout.ok else None
        body = {**docs.renew_doc(report), **_rollout_body(report.rollout)}
        return code, shown, after, body

    return _run(args, cfg, "renew", work, lambda report: [_cli(args, "renew")])


# ---------------------------------------------------------------- reissue


def cmd_reissue(args: argparse.Namespace) -> int:
    """emergency: new key and certificate now, on every host, old one revoked

    Make a fresh key, order CERT now whatever its due date, roll it out to every host of the
    certificate (canary and proof as always), and with --revoke-old revoke the previous
    certificate once every host is proven to serve the new one. Exit 0 when every host
    serves it (and the old one is revoked if asked), 3 when only some do, 1 when none does
    or the revocation failed.
    """
    from certfan.commands.reissue import reissue
    from certfan.state.store import Store

    if args.reason and not args.revoke_old:
        raise UsageError("--reason needs --revoke-old")
    cfg = load_config(args)
    check_names(cfg, certs=[args.cert], cert_option="CERT")

    def work(cfg: Config, tools: Tools) -> tuple[int, Report, list[str], dict[str, Any]]:
        report = reissue(cfg, Store(cfg.state_dir), args.cert, tools, revoke_old=args.revoke_old,
                         reason=args.reason or DEFAULT_REASON, canary=not args.no_canary)
        code = push_exit(report.rollout)
        if code == EXIT_OK and not report.ok:
            code = EXIT_FAILED  # every host serves the new key, but the revocation failed
        body = {**_rollout_body(report.rollout), "version": report.release.version,
                "previous": report.previous.version if report.previous else None,
                "revoked": report.revoked, "revoke_error": report.revoke_error}
        return code, report.rollout, render.reissue_lines(report), body

    return _run(args, cfg, "reissue", work, lambda report: push_remaining(args, report))


# ---------------------------------------------------------------- rollback


def cmd_rollback(args: argparse.Namespace) -> int:
    """point hosts back at the previous version (tested, reloaded, proven)

    Roll the previous stored version of the certificate out to its hosts, with the same
    upload, flip, config test, reload and TLS proof as a push. Without --host the previous
    version also becomes current again; with --host those hosts are held on it (renew leaves
    them alone) until a new version is issued. Exit codes as push.
    """
    from certfan.commands.rollback import rollback
    from certfan.state.store import Store

    cfg = load_config(args)
    check_names(cfg, hosts=args.hosts or (), certs=[args.cert])
    state: dict[str, bool] = {}

    def work(cfg: Config, tools: Tools) -> tuple[int, Report, list[str], dict[str, Any]]:
        report = rollback(cfg, Store(cfg.state_dir), args.cert, args.hosts or (), tools)
        state["activated"] = report.activated
        body = {**_rollout_body(report.rollout), "version": report.release.version,
                "replaced": report.replaced.version, "current": report.activated,
                "held": list(report.held)}
        return push_exit(report.rollout), report.rollout, render.rollback_lines(report), body

    def finish(report: Report | None) -> list[str]:
        if state.get("activated"):  # the old version is current: a push finishes the job
            return push_remaining(args, report)
        late = [o.host for o in report.outcomes if not o.ok] if report else args.hosts or []
        return [_cli(args, "rollback", "--cert", args.cert,
                     *(w for h in late for w in ("--host", h)))]

    return _run(args, cfg, "rollback", work, finish)


# ---------------------------------------------------------------- parsers


def register(sub: Any) -> None:
    p = command(sub, "push", cmd_push)
    add_names(p, certs="certificate to push (repeatable; default: all)",
              hosts="only this host (repeatable)",
              groups="only the hosts of this group (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="connect and look, print each host's plan; change nothing")

    p = command(sub, "renew", cmd_renew)
    p.add_argument("--jitter", type=non_negative, default=0.0, metavar="SECONDS",
                   help="first sleep a random time up to SECONDS (spreads fleets of timers)")

    p = command(sub, "reissue", cmd_reissue)
    p.add_argument("cert", metavar="CERT", help="certificate name from the config")
    p.add_argument("--revoke-old", action="store_true",
                   help="revoke the previous certificate once every host serves the new one")
    p.add_argument("--reason", choices=tuple(REVOCATION_REASONS),
                   help="revocation reason (default superseded; keyCompromise is signed with "
                   "the old certificate's own key)")
    p.add_argument("--no-canary", action="store_true",
                   help="no canary stage: every host at once (bounded by concurrency)")

    p = command(sub, "rollback", cmd_rollback)
    p.add_argument("--cert", required=True, metavar="NAME", help="certificate to roll back")
    add_names(p, hosts="only this host (repeatable; default: every host of the certificate)")

