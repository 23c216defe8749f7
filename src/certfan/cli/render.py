"""Text and JSON for the commands' reports: pure functions; cli.py prints them.

Lines are meant for a terminal, a cron mail or the journal: the first line of
``status`` is a monitoring-plugin summary (``CERTFAN CRITICAL: ...``), and a
successful ``renew`` is one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from certfan.commands import status as status_mod
from certfan.commands.operations import Imported, ReissueReport, RenewReport, RollbackReport
from certfan.commands.prune import PruneReport
from certfan.deploy.fleet import Report
from certfan.deploy.hostrun import Event, HostPlan
from certfan.issue.order import Status
from certfan.state.store import Release


def _when(value: datetime | None) -> str:
    return "never" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _short(version: str | None) -> str:
    return version or "-"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, the first row the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def next_due(statuses: tuple[Status, ...]) -> str:
    waiting = [s for s in statuses if not s.decision.due]
    if not waiting:
        return ""
    soonest = min(waiting, key=lambda s: s.decision.at)
    return f"next renewal: {soonest.cert} at {_when(soonest.decision.at)}"


# ---------------------------------------------------------------- push (and every rollout)


def rollout_lines(report: Report) -> list[str]:
    """A table of hosts, then each failure with its output tail, then the count served."""
    rows = [("HOST", "CERT", "VERSION", "RESULT", "FAILED STEP", "SECONDS")]
    for o in report.outcomes:
        rows.append((o.host, o.cert, o.version, o.result, o.failed_step or "-", f"{o.seconds:.1f}"))
    lines = _table(rows)
    for o in report.outcomes:
        if o.result in ("failed", "rolled back") and o.error:
            lines += ["", f"{o.host} ({o.cert}): {o.failed_step or o.result}: {o.error}"]
            lines += [f"    | {line}" for line in o.output_tail.splitlines()[-8:]]
    if report.halted_by is not None:
        h = report.halted_by
        lines += ["", f"rollout halted: {h.host} failed at {h.failed_step} (failure budget spent)"]
    lines += [f"warning: {warning}" for warning in report.warnings]
    served = sum(1 for o in report.outcomes if o.ok)
    lines += ["", f"{served} of {len(report.outcomes)} host(s) serve the version"]
    return lines


def rollout_doc(report: Report, code: int) -> dict[str, Any]:
    halted = report.halted_by
    return {
        "exit": code,
        "ok": report.ok,
        "halted_by": {"host": halted.host, "cert": halted.cert, "step": halted.failed_step}
        if halted
        else None,
        "outcomes": [asdict(o) for o in report.outcomes],
        "warnings": list(report.warnings),
    }


def plan_lines(plans: Sequence[HostPlan], canary: int) -> list[str]:
    """push --dry-run: each host's numbered steps, the first ``canary`` of a cert marked."""
    lines = []
    seen: dict[str, int] = {}
    for plan in plans:
        index = seen[plan.cert] = seen.get(plan.cert, -1) + 1
        role = " (canary)" if index < canary else ""
        lines.append(f"{plan.host}{role}: {plan.cert} {plan.version}")
        if plan.error:
            lines.append(f"  cannot plan: {plan.error}")
        elif plan.unchanged:
            lines.append("  already serves this version: nothing to do")
        lines += [f"  {n}. {step.name}: {step.summary}" for n, step in enumerate(plan.steps, 1)]
    lines.append("dry run: nothing was changed")
    return lines


def plan_doc(plan: HostPlan) -> dict[str, Any]:
    return {
        "host": plan.host,
        "cert": plan.cert,
        "version": plan.version,
        "unchanged": plan.unchanged,
        "error": plan.error,
        "steps": [
            {"name": s.name, "summary": s.summary, "argv": list(s.argv) or None} for s in plan.steps
        ],
    }


def live_line(event: Event, seconds: float) -> str:
    """A host's line in push's live display: where it is, ``seconds`` after it started."""
    if event.status == "done":
        state = event.detail
    elif event.status == "start":
        state = f"{event.step} ..."
    else:
        state = f"{event.step} {event.status}"
        if event.status == "failed" and event.detail:
            state += f": {event.detail}"
    return f"  {event.host:<18} {event.cert:<10} {seconds:5.1f}s  {state}"


# ---------------------------------------------------------------- renew


def renew_summary(report: RenewReport) -> str:
    """One line: what was renewed and rolled out, or that there was nothing to do."""
    parts = []
    renewed = [o for o in report.issued if o.ok and o.release]
    if renewed:
        parts.append("renewed " + ", ".join(f"{o.cert} ({o.release.version})"
                                            for o in renewed if o.release))
    if report.failed_issues:
        parts.append("FAILED to renew " + ", ".join(o.cert for o in report.failed_issues))
    if report.rollout is not None:
        outcomes = report.rollout.outcomes
        served = sum(1 for o in outcomes if o.ok)
        parts.append(f"{served} of {len(outcomes)} host rollout(s) serve the version")
    if not parts:
        parts.append("nothing due" if report.held else "nothing due, every host current")
    if report.held:
        parts.append("held back by a rollback: " + ", ".join(f"{h} on {v} ({c})"
                                                              for c, h, v in report.held))
    due = next_due(report.next_due)
    if due:
        parts.append(due)
    return f"renew: {'; '.join(parts)} ({report.seconds:.2f}s)"


def renew_problems(report: RenewReport) -> list[str]:
    lines = []
    for outcome in report.failed_issues:
        lines.append(f"{outcome.cert}: renewal failed: {outcome.error}")
    return lines


def renew_doc(report: RenewReport) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "seconds": round(report.seconds, 3),
        "due": [{"cert": s.cert, "due": s.decision.due, "at": s.decision.at.isoformat(),
                 "reason": s.decision.reason} for s in report.statuses],
        "issued": [{"cert": o.cert, "version": o.release.version if o.release else None,
                    "error": str(o.error) if o.error else None} for o in report.issued],
        "rolled_out": [{"cert": c, "version": v, "hosts": list(h)}
                       for c, v, h in report.targets],
        "held": [{"cert": c, "host": h, "version": v} for c, h, v in report.held],
        "next_due": [{"cert": s.cert, "at": s.decision.at.isoformat(),
                      "reason": s.decision.reason} for s in report.next_due],
    }


# ---------------------------------------------------------------- reissue, rollback, import


def reissue_lines(report: ReissueReport) -> list[str]:
    new, old = report.release, report.previous
    replacing = old.version if old else "nothing"
    lines = [f"{new.cert}: reissued as {new.version} (serial {new.serial}, new key), "
             + f"replacing {replacing}"]
    served = sum(1 for o in report.rollout.outcomes if o.ok)
    lines.append(f"{served} of {len(report.rollout.outcomes)} host(s) serve {new.version}")
    if report.revoked and old is not None:
        lines.append(f"revoked the previous certificate {old.version} (serial {old.serial})")
    elif report.revoke_requested:
        lines.append(f"previous certificate NOT revoked: {report.revoke_error}")
    return lines


def rollback_lines(report: RollbackReport) -> list[str]:
    served = sum(1 for o in report.rollout.outcomes if o.ok)
    total = len(report.rollout.outcomes)
    lines = [f"{report.release.cert}: {served} of {total} host(s) back on "
             + f"{report.release.version} (from {report.replaced.version})"]
    if report.activated:
        lines.append(f"{report.release.version} is the current version again; "
                     f"{report.replaced.version} stays stored but is not rolled out")
    if report.held:
        lines.append(f"held on {report.release.version} until the next new version: "
                     f"{', '.join(report.held)} (certfan renew leaves them alone)")
    return lines


def imported_lines(result: Imported) -> list[str]:
    r = result.release
    lines = release_lines(r)
    lines += [f"warning: {w}" for w in result.warnings]
    return lines


def release_lines(release: Release) -> list[str]:
    return [
        f"{release.cert}: stored version {release.version}",
        f"  serial:    {release.serial}",
        f"  sha256:    {release.sha256}",
        f"  names:     {', '.join(release.names)}",
        f"  not after: {_when(release.not_after)}",
        f"  path:      {release.path}",
    ]


# ---------------------------------------------------------------- prune


def prune_lines(report: PruneReport) -> list[str]:
    verb = "would delete" if report.dry_run else "deleted"
    lines = []
    for plan in report.local:
        lines.append(f"{plan.cert}: local: {verb} {', '.join(plan.delete) or 'nothing'}; "
                     f"kept {', '.join(plan.keep) or 'nothing'}")
    for h in report.hosts:
        if h.error:
            lines.append(f"{h.host} ({h.cert}): FAILED: {h.error}")
        else:
            lines.append(f"{h.host} ({h.cert}): {verb} {', '.join(h.deleted) or 'nothing'}; "
                         f"live {h.live or '-'}")
    lines += [f"error: {e}" for e in report.errors]
    if report.dry_run:
        lines.append("dry run: nothing was deleted")
    return lines


# ---------------------------------------------------------------- status


def status_summary(report: status_mod.Report) -> str:
    state = status_mod.STATE_NAMES[report.state]
    counts = ", ".join(f"{report.count(s)} {status_mod.STATE_NAMES[s].lower()}"
                       for s in (status_mod.CRITICAL, status_mod.WARNING, status_mod.UNKNOWN,
                                 status_mod.OK))
    # Nagios range "N:" alerts below N (days left); thresholds are lower bounds here.
    perf = " ".join(f"'{c.host} {c.cert}'={days:.2f};{report.warn_days:g}:;{report.crit_days:g}:"
                    for c in report.checks if (days := c.days_left(report.now)) is not None)
    line = f"CERTFAN {state}: {counts} ({len(report.checks)} host/certificate pair(s))"
    return f"{line} | {perf}" if perf else line


def status_text(report: status_mod.Report) -> list[str]:
    rows = [("HOST", "CERT", "CURRENT", "ON DISK", "SERVES", "DAYS LEFT", "STATE")]
    for c in report.checks:
        served = sorted({s.version or (f"other ({s.sha256[:12]})" if s.sha256 else "?")
                         for s in c.served})
        days = c.days_left(report.now)
        rows.append((c.host, c.cert, _short(c.current),
                     "?" if c.disk_error else _short(c.on_disk),
                     ", ".join(served) or "-", "-" if days is None else f"{days:.1f}",
                     status_mod.STATE_NAMES[c.state]))
    lines = [status_summary(report)]
    lines += _table(rows)
    for c in report.checks:
        for reason in c.reasons:
            lines.append(f"{c.host} ({c.cert}): {reason}")
    h = report.history
    lines.append(f"last successful renew: {_when(h.renew_last_success)}")
    return lines


def status_doc(report: status_mod.Report) -> dict[str, Any]:
    return {
        "state": status_mod.STATE_NAMES[report.state],
        "exit": report.state,
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


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
