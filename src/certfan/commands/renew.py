"""renew: what the timer runs.

due-ness (the CA only when ARI asks for it) -> issue the due ones -> roll out
to every host that is behind: the new versions, and hosts that missed or
failed an earlier rollout (deploy state).

A run that has nothing to do reads local files only: due-ness comes from the
store and the cached ACME directory, "every host is current" from the deploy
state, so it needs neither the CA, nor DNS, nor SSH. The CLI holds the lock.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from certfan.commands import notify
from certfan.commands.tools import Tools, catch_up, note_rollout
from certfan.config import Config
from certfan.deploy import fleet
from certfan.issue import order
from certfan.state import history
from certfan.state.revocations import Holds
from certfan.state.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenewReport:
    statuses: tuple[order.Status, ...]  # due-ness when the run started
    issued: tuple[order.Outcome, ...]
    targets: tuple[tuple[str, str, tuple[str, ...]], ...]  # (cert, version, hosts) rolled out
    held: tuple[tuple[str, str, str], ...]  # (cert, host, version) held back by a rollback
    rollout: fleet.Report | None
    next_due: tuple[order.Status, ...]  # due-ness after the run
    seconds: float = 0.0

    @property
    def failed_issues(self) -> list[order.Outcome]:
        return [o for o in self.issued if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.failed_issues and (self.rollout is None or self.rollout.ok)


def renew(cfg: Config, store: Store, tools: Tools | None = None, *,
          now: datetime | None = None, rng: random.Random | None = None) -> RenewReport:
    """Renew what is due, then bring every host that is behind to its current version."""
    try:
        result = _renew(cfg, store, tools or Tools(), now, rng)
    except BaseException:
        history.record_renew(cfg.state_dir, "error", ok=False)
        raise
    history.record_renew(cfg.state_dir, "ok" if result.ok else "failed", ok=result.ok)
    notify.fire(cfg, notify.renew_notice(result))
    return result


def _renew(cfg: Config, store: Store, tools: Tools, now: datetime | None,
           rng: random.Random | None) -> RenewReport:
    started = time.monotonic()
    # What a killed run left: TXT values in DNS, a certificate stored but not yet current.
    order.remove_dns_leftovers(cfg, tools.dns)
    order.adopt_unactivated(cfg, store, now)
    acme = tools.acme_for(cfg)
    statuses = tuple(order.renewal_status(cfg, store, now, acme=acme, rng=rng))
    due = [s.cert for s in statuses if s.decision.due]
    for status in statuses:
        log.info("%s: %s: %s", status.cert, "due" if status.decision.due else "not due",
                 status.decision.reason, extra={"cert": status.cert})
    issued: tuple[order.Outcome, ...] = ()
    if due:
        issued = tuple(order.issue_many(cfg, store, due, acme=acme, dns=tools.dns))
        order.note_rate_limits(store, issued, now or datetime.now(UTC))
        for outcome in issued:
            if outcome.ok:
                Holds(cfg.state_dir).clear(outcome.cert)
    behind = catch_up(cfg, store)
    targets = behind.targets
    report = None
    if targets:
        for release, hosts in targets:
            log.info("%s: %s to %d host(s): %s", release.cert, release.version, len(hosts),
                     ", ".join(h.name for h in hosts), extra={"cert": release.cert})
        report = tools.push(cfg, targets)
        note_rollout(cfg, store, report)
    else:
        log.info("every host serves its certificate's current version")
    # Ask about new versions now, while the CA is known to answer, so that the
    # next run finds a fresh ARI state and need not.
    after = statuses
    if any(o.ok for o in issued):
        after = tuple(order.renewal_status(cfg, store, now, acme=acme, rng=rng))
    return RenewReport(
        statuses=statuses,
        issued=issued,
        targets=tuple((r.cert, r.version, tuple(h.name for h in hs)) for r, hs in targets),
        held=tuple(behind.held),
        rollout=report,
        next_due=after,
        seconds=time.monotonic() - started,
    )
