"""The JSON bodies of the commands' documents (pure). ``output.document`` adds
the keys every document has (command, schema, exit, ok, error); docs/cli.md
describes each command's keys. A key, once documented, keeps its meaning."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: building the parser and --help stay light
    from certfan.commands import status as status_mod
    from certfan.commands.importing import Imported
    from certfan.commands.prune import PruneReport
    from certfan.commands.renew import RenewReport
    from certfan.config import Config
    from certfan.deploy.fleet import Report
    from certfan.deploy.hostrun import HostPlan
    from certfan.state.store import Release



def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def config_doc(cfg: Config) -> dict[str, Any]:
    return {
        "config": str(cfg.path),
        "acme_directory": cfg.acme.directory,
        "dns": {"method": cfg.dns.method, "server": cfg.dns.server, "port": cfg.dns.port},
        "state_dir": str(cfg.state_dir),
        "hosts": list(cfg.hosts),
        "groups": {g: list(members) for g, members in cfg.groups.items()},
        "certificates": [{"name": c.name, "domains": list(c.domains), "key_type": c.key_type,
                          "hosts": list(c.hosts)} for c in cfg.certificates.values()],
    }


def release_doc(release: Release) -> dict[str, Any]:
    return {"cert": release.cert, "version": release.version, "serial": release.serial,
            "sha256": release.sha256, "names": list(release.names),
            "not_after": _iso(release.not_after), "path": str(release.path)}


def imported_doc(result: Imported) -> dict[str, Any]:
    return {"release": release_doc(result.release), "warnings": list(result.warnings),
            "unchanged": result.unchanged}


def rollout_doc(report: Report) -> dict[str, Any]:
    halted = report.halted_by
    return {
        "halted_by": {"host": halted.host, "cert": halted.cert, "step": halted.failed_step}
        if halted else None,
        "outcomes": [{**asdict(o), "result": str(o.result), "ok": o.ok} for o in report.outcomes],
        "warnings": list(report.warnings),
    }


def plan_doc(plan: HostPlan) -> dict[str, Any]:
    return {
        "host": plan.host,
        "cert": plan.cert,
        "version": plan.version,
        "unchanged": plan.unchanged,
        "error": plan.error,
        "steps": [{"name": s.name, "summary": s.summary, "argv": list(s.argv) or None}
                  for s in plan.steps],
    }


def renew_doc(report: RenewReport) -> dict[str, Any]:
    return {
        "seconds": round(report.seconds, 3),
        "due": [{"cert": s.cert, "due": s.decision.due, "at": s.decision.at.isoformat(),
                 "reason": s.decision.reason} for s in report.statuses],
        "issued": [{"cert": o.cert, "version": o.release.version if o.release else None,
                    "error": str(o.error) if o.error else None} for o in report.issued],
        "rolled_out": [{"cert": c, "version": v, "hosts": list(h)} for c, v, h in report.targets],
        "held": [{"cert": c, "host": h, "version": v} for c, h, v in report.held],
        "next_due": [{"cert": s.cert, "at": s.decision.at.isoformat(),
                      "reason": s.decision.reason} for s in report.next_due],
        "rollout": rollout_doc(report.rollout) if report.rollout else None,
    }


def prune_doc(report: PruneReport) -> dict[str, Any]:
    return {
        "dry_run": report.dry_run,
        "local": [{"cert": p.cert, "kept": list(p.keep), "deleted": list(p.delete)}
                  for p in report.local],
        "hosts": [{"host": h.host, "cert": h.cert, "live": h.live, "deleted": list(h.deleted),
                   "kept": list(h.kept), "error": h.error} for h in report.hosts],
        "errors": list(report.errors),
    }


def status_doc(report: status_mod.Report) -> dict[str, Any]:
    from certfan.commands import status as status_mod

    return {
        "state": status_mod.STATE_NAMES[report.state],
        "generated_at": report.now.isoformat(),
        "warn_days": report.warn_days,
        "crit_days": report.crit_days,
        "last_renew_success": _iso(report.history.renew_last_success),
        "last_rollout_success": {c: _iso(w) for c, w in
                                 report.history.rollout_last_success.items()},
        "checks": [
            {
                "host": c.host,
                "cert": c.cert,
                "state": status_mod.STATE_NAMES[c.state],
                "current": c.current,
                "on_disk": c.on_disk,
                "disk_error": c.disk_error,
                "drift": c.drift,
                "held": c.held,
                "days_left": _round(c.days_left(report.now)),
                "reasons": list(c.reasons),
                "served": [
                    {"name": s.name, "sni": s.sni, "sha256": s.sha256, "serial": s.serial,
                     "version": s.version, "not_after": _iso(s.not_after), "error": s.error,
                     "current": None if s.sha256 is None or c.current_sha256 is None
                     else s.sha256 == c.current_sha256}
                    for s in c.served
                ],
            }
            for c in report.checks
        ],
    }
