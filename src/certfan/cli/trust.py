"""Trust: the offline problems ``check`` reports, and the ``doctor`` and ``audit`` commands.

``check`` stays in cli/check.py and calls :func:`check_problems` here; doctor
(prove the path online, changing nothing that serves) and audit (every
certificate on the fleet, managed or not) are registered by :func:`register`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from certfan.cli import output
from certfan.cli.options import EXIT_USAGE, add_window, check_names, command, load_config

if TYPE_CHECKING:
    from certfan.commands.audit import Report as AuditReport
    from certfan.commands.doctor import Report as DoctorReport
    from certfan.config import Config
    from certfan.config.preflight import Problem

# the monitoring states (commands/status.py), here without importing it for --help
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_SEVERITY = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}


def check_problems(cfg: Config) -> list[Problem]:
    """What ``certfan check`` finds wrong offline (config/preflight.py)."""
    from certfan.config import preflight
    from certfan.issue import crypto

    return preflight.problems(cfg, ssh_key_problem=crypto.ssh_private_key_problem)


def check_failed(args: argparse.Namespace, cfg: Config, problems: list[Problem]) -> int:
    """One line per problem on stderr (file and key named), exit 2; or the JSON document."""
    for problem in problems:
        sys.stderr.write(f"certfan: error: {cfg.path}: {problem}\n")
    sys.stderr.flush()
    if getattr(args, "json", False):
        output.print_json(output.document(args.command, EXIT_USAGE, {
            "config": str(cfg.path),
            "problems": [{"key": p.key, "path": p.path, "message": p.message}
                         for p in problems],
        }, error=f"{len(problems)} problem(s) found"))
    return EXIT_USAGE


# ---------------------------------------------------------------- doctor


def cmd_doctor(args: argparse.Namespace) -> int:
    from certfan.commands import doctor

    cfg = load_config(args)
    check_names(cfg, hosts=args.hosts or (), certs=args.certs or ())
    report = doctor.doctor(cfg, hosts=args.hosts or (), certs=args.certs or ())
    return output.finish(args, report.state, doctor_lines(report), doctor_doc(report),
                         ok=report.state == OK)


def doctor_lines(report: DoctorReport) -> list[str]:
    """One table per host, per certificate and for the CA: check, result, reason, fix."""
    head = f"DOCTOR {STATE_NAMES[report.state]} - " + ", ".join(
        f"{sum(1 for f in report.findings if f.state == s)} {STATE_NAMES[s]}"
        for s in (CRITICAL, UNKNOWN, WARNING, OK))
    lines = [head]
    for title, findings in (("host", report.hosts), ("certificate", report.certs),
                            ("CA", report.ca)):
        subjects = list(dict.fromkeys(f.subject for f in findings))
        for subject in subjects:
            lines.append("")
            lines.append(f"{title} {subject}" if title != "CA" else "CA")
            for f in (f for f in findings if f.subject == subject):
                lines.append(f"  {f.check:<28}{STATE_NAMES[f.state]:<9}{f.reason}")
                if f.fix and f.state != OK:
                    lines.append(f"  {'':<28}{'fix:':<9}{f.fix}")
    return lines


def doctor_doc(report: DoctorReport) -> dict[str, Any]:
    def rows(findings: Any) -> list[dict[str, Any]]:
        return [{"subject": f.subject, "check": f.check, "state": STATE_NAMES[f.state],
                 "reason": f.reason, "fix": f.fix} for f in findings]

    return {"state": STATE_NAMES[report.state], "hosts": rows(report.hosts),
            "certificates": rows(report.certs), "ca": rows(report.ca)}


# ---------------------------------------------------------------- audit


def cmd_audit(args: argparse.Namespace) -> int:
    from certfan.commands import audit
    from certfan.state.store import Store

    cfg = load_config(args)
    check_names(cfg, hosts=args.hosts or ())
    report = audit.audit(cfg, Store(cfg.state_dir), hosts=args.hosts or (),
                         warn_days=args.warn_days, crit_days=args.crit_days)
    return output.finish(args, report.state, audit_lines(report), audit_doc(report),
                         ok=report.state == OK)


def _days(days: float | None) -> str:
    return "-" if days is None else f"{days:.1f}"


def audit_lines(report: AuditReport) -> list[str]:
    """A table, most urgent first: state, then days left."""
    now = report.generated
    sites = sorted(report.sites, key=lambda s: (-_SEVERITY[s.state], s.days_left(now) or 0.0,
                                                s.host, s.names))
    count = {state: sum(1 for s in sites if s.state == state) for state in STATE_NAMES}
    head = (f"AUDIT {STATE_NAMES[report.state]} - {len(sites)} certificate(s) on "
            f"{len(report.hosts)} host(s): " + ", ".join(
                f"{count[s]} {STATE_NAMES[s]}" for s in (CRITICAL, UNKNOWN, WARNING, OK)))
    lines = [head, f"{'STATE':<9}{'HOST':<18}{'DAYS':>7}  {'MANAGED':<10}FILE"]
    for s in sites:
        lines.append(f"{STATE_NAMES[s.state]:<9}{s.host:<18}{_days(s.days_left(now)):>7}  "
                     f"{s.managed or '-':<10}{s.cert.path}")
        lines.append(f"{'':9}server_name {' '.join(s.names) or '-'} ({s.file})")
        facts = s.cert.facts
        if facts is not None:
            lines.append(f"{'':9}SANs {', '.join(facts.names) or '-'}; issuer {facts.issuer}; "
                         f"sha256 {facts.sha256[:16]}...")
        lines += [f"{'':9}{note}" for note in s.notes]
    for h in report.hosts:
        if h.error:
            lines.append(f"UNKNOWN  {h.host}: {h.error}")
    lines += [f"WARNING  {conflict}" for conflict in report.conflicts]
    return lines


def audit_doc(report: AuditReport) -> dict[str, Any]:
    now = report.generated
    return {
        "state": STATE_NAMES[report.state],
        "hosts": [{"host": h.host, "error": h.error} for h in report.hosts],
        "certificates": [{
            "host": s.host, "server_block": s.file, "names": list(s.names),
            "state": STATE_NAMES[s.state], "managed": s.managed, "file": s.cert.path,
            "file_state": s.cert.state, "key_file": s.key.path if s.key else None,
            "key_state": s.key.state if s.key else None,
            "days_left": s.days_left(now),
            "certificate": None if s.cert.facts is None else {
                "subject": s.cert.facts.subject, "sans": list(s.cert.facts.names),
                "issuer": s.cert.facts.issuer, "not_after": s.cert.facts.not_after.isoformat(),
                "sha256": s.cert.facts.sha256},
            "served": [{"name": v.name, "sni": v.sni, "sha256": v.sha256, "error": v.error,
                        "not_after": v.not_after.isoformat() if v.not_after else None}
                       for v in s.served],
            "notes": list(s.notes),
        } for s in report.sites],
        "conflicts": list(report.conflicts),
    }


def _window(p: argparse.ArgumentParser) -> None:
    add_window(p, "a certificate")


_DOCTOR = ("Per host: SSH with the strict host key, login, the remote root writable (a "
           "temporary file made and removed), the config test, the reload command present and "
           "allowed (not run), and nginx -T pointing each certificate's names at "
           "<root>/live/<cert>/. Per certificate: the _acme-challenge zone (CNAMEs followed), "
           "a test TXT value added and removed through the DNS method and seen on every "
           "authoritative server, CAA allowing the CA. The CA: directory, account, terms. "
           "Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.")
_AUDIT = ("On each host read nginx's full configuration (nginx -T, run like the config test), "
          "every server block's names and certificate and key files, those certificates, and "
          "what a TLS handshake for each name really serves. Reports, most urgent first: what "
          "certfan manages and its state, what it does not manage and its expiry, a name "
          "served differently on different hosts, names expiring within the window, files "
          "referenced but missing. Changes nothing. Exit 0 OK, 1 WARNING, 2 CRITICAL, "
          "3 UNKNOWN.")


def register(sub: Any) -> None:
    for name, handler, summary, description in (
        ("doctor", cmd_doctor, "prove the whole path online before a rollout needs it "
         "(changes nothing that serves)", _DOCTOR),
        ("audit", cmd_audit, "list every certificate the fleet's nginx uses, managed or not "
         "(reads only)", _AUDIT),
    ):
        p = command(sub, name, handler, help=summary, description=description)
        p.add_argument("--host", dest="hosts", action="append", metavar="H",
                       help="only this host (repeatable)")
        if name == "doctor":
            p.add_argument("--cert", dest="certs", action="append", metavar="NAME",
                           help="only this certificate (repeatable)")
        else:
            _window(p)
