"""Text for the commands' reports: pure functions returning lines; the CLI prints them.

Lines are meant for a terminal, a cron mail or the journal. ``spaced`` (a
terminal) puts a blank line before each detail block; off a terminal the
lines follow one another, so a mail or the journal shows no empty entries.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: building the parser and --help stay light
    from certfan.commands import status as status_mod
    from certfan.commands.importing import Imported
    from certfan.commands.prune import PruneReport
    from certfan.commands.reissue import ReissueReport
    from certfan.commands.renew import RenewReport
    from certfan.commands.rollback import RollbackReport
    from certfan.deploy.fleet import Report
    from certfan.deploy.hostrun import Event, HostOutcome, HostPlan
    from certfan.issue.order import Status
    from certfan.state.store import Release



def when(value: datetime | None) -> str:
    return "never" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, the first row the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def gap(spaced: bool) -> list[str]:
    return [""] if spaced else []


def next_due(statuses: tuple[Status, ...]) -> str:
    waiting = [s for s in statuses if not s.decision.due]
    if not waiting:
        return ""
    soonest = min(waiting, key=lambda s: s.decision.at)
    return f"next renewal: {soonest.cert} at {when(soonest.decision.at)}"


# ---------------------------------------------------------------- push (and every rollout)


def _serves(o: HostOutcome) -> str:
    return o.serving or "?"


def rollout_lines(report: Report, *, spaced: bool = True) -> list[str]:
    """A table of hosts (target version, what each serves now, result), then each
    failure with its output tail, then the count served."""
    from certfan.deploy.model import FAILED, ROLLED_BACK

    rows = [("HOST", "CERT", "VERSION", "SERVES", "RESULT", "FAILED STEP", "SECONDS")]
    for o in report.outcomes:
        rows.append((o.host, o.cert, o.version, _serves(o), str(o.result), o.failed_step or "-",
                     f"{o.seconds:.1f}"))
    lines = table(rows)
    for o in report.outcomes:
        if o.result in (FAILED, ROLLED_BACK) and o.error:
            lines += gap(spaced) + [f"{o.host} ({o.cert}): {o.failed_step or o.result}: {o.error}"]
            lines += [f"    | {line}" for line in o.output_tail.splitlines()[-8:]]
    if report.halted_by is not None:
        h = report.halted_by
        lines += gap(spaced)
        lines += [f"rollout halted: {h.host} failed at {h.failed_step} (failure budget spent)"]
    lines += [f"warning: {warning}" for warning in report.warnings]
    served = sum(1 for o in report.outcomes if o.ok)
    lines += gap(spaced) + [f"{served} of {len(report.outcomes)} host(s) serve the version"]
    return lines


def interrupted_lines(report: Report | None, finish: Sequence[str], *,
                      spaced: bool = True) -> list[str]:
    """After Ctrl-C/SIGTERM: where each host stands, and what finishes the job."""
    lines = rollout_lines(report, spaced=spaced) if report is not None else []
    lines += gap(spaced) + ["interrupted: no further host was started"]
    if finish:
        lines += ["to finish the job, run:"] + [f"    {c}" for c in finish]
    return lines


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


def live_line(event: Event, seconds: float) -> str:
    """A host's line in the live display: where it is, ``seconds`` after it started."""
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
    return [f"{o.cert}: renewal failed: {o.error}" for o in report.failed_issues]


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
    if result.unchanged:
        return [f"{result.release.cert}: already the current version {result.release.version}; "
                "nothing stored"]
    return release_lines(result.release) + [f"warning: {w}" for w in result.warnings]


def release_lines(release: Release) -> list[str]:
    return [
        f"{release.cert}: stored version {release.version}",
        f"  serial:    {release.serial}",
        f"  sha256:    {release.sha256}",
        f"  names:     {', '.join(release.names)}",
        f"  not after: {when(release.not_after)}",
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


def status_headline(report: status_mod.Report) -> str:
    """The monitoring plugin's summary: state and counts, short enough not to wrap."""
    from certfan.commands import status as status_mod

    state = status_mod.STATE_NAMES[report.state]
    counts = ", ".join(f"{report.count(s)} {status_mod.STATE_NAMES[s].lower()}"
                       for s in (status_mod.CRITICAL, status_mod.WARNING, status_mod.UNKNOWN,
                                 status_mod.OK))
    return f"CERTFAN {state}: {counts} ({len(report.checks)} host/certificate pair(s))"


def status_perfdata(report: status_mod.Report) -> str:
    """Days left per host and certificate; Nagios range "N:" alerts below N."""
    return " ".join(f"'{c.host} {c.cert}'={days:.2f};{report.warn_days:g}:;{report.crit_days:g}:"
                    for c in report.checks if (days := c.days_left(report.now)) is not None)


def status_summary(report: status_mod.Report) -> str:
    """Headline and perfdata on one line (what a plugin's first line may carry)."""
    perf = status_perfdata(report)
    return f"{status_headline(report)} | {perf}" if perf else status_headline(report)


def status_text(report: status_mod.Report) -> list[str]:
    """The headline, the table, each reason; the perfdata last, after ``|`` (the
    plugin API takes perfdata from the long output), so a human reads the state first."""
    from certfan.commands import status as status_mod

    rows = [("HOST", "CERT", "CURRENT", "ON DISK", "SERVES", "DAYS LEFT", "STATE")]
    for c in report.checks:
        served = sorted({s.version or (f"other ({s.sha256[:12]})" if s.sha256 else "?")
                         for s in c.served})
        days = c.days_left(report.now)
        rows.append((c.host, c.cert, c.current or "-",
                     "?" if c.disk_error else c.on_disk or "-",
                     ", ".join(served) or "-", "-" if days is None else f"{days:.1f}",
                     status_mod.STATE_NAMES[c.state]))
    lines = [status_headline(report), *table(rows)]
    lines += [f"{c.host} ({c.cert}): {reason}" for c in report.checks for reason in c.reasons]
    lines.append(f"last successful renew: {when(report.history.renew_last_success)}")
    perf = status_perfdata(report)
    if perf:
        lines.append(f"| {perf}")
    return lines
