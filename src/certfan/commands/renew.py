"""renew: what the timer runs.

due-ness (the CA only when ARI asks for it) -> issue the due ones -> roll out
to every host that is behind: the new versions, and hosts that missed or
failed an earlier rollout (deploy state).

A run that has nothing to do reads local files only: due-ness comes from the
store and the cached ACME directory, "every host is current" from the deploy
state, so it needs neither the CA, nor DNS, nor SSH, and imports none of their
code (issuance, ACME, DNS and the rollout are imported when there is work for
them; tests/unit/test_cli_imports.py holds it to that). The CLI holds the lock.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from certfan.commands import notify
from certfan.commands.tools import Tools, catch_up, note_rollout
from certfan.config import Config
from certfan.errors import CertfanError
from certfan.issue.dnspending import PendingTxt
from certfan.issue.due import Status, renewal_status
from certfan.state import history
from certfan.state.revocations import Holds
from certfan.state.store import Store

if TYPE_CHECKING:
    from certfan.deploy import fleet
    from certfan.issue.order import Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenewReport:
    statuses: tuple[Status, ...]  # due-ness when the run started
    issued: tuple[Outcome, ...]
    targets: tuple[tuple[str, str, tuple[str, ...]], ...]  # (cert, version, hosts) rolled out
    held: tuple[tuple[str, str, str], ...]  # (cert, host, version) held back by a rollback
    rollout: fleet.Report | None
    next_due: tuple[Status, ...]  # due-ness after the run
    seconds: float = 0.0

    @property
    def failed_issues(self) -> list[Outcome]:
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
    if _left_over(cfg, store):
        from certfan.issue import order

        order.remove_dns_leftovers(cfg, tools.dns)
        order.adopt_unactivated(cfg, store, now)
    acme = tools.ari_for(cfg)
    statuses = tuple(renewal_status(cfg, store, now, acme=acme, rng=rng))
    due = [s.cert for s in statuses if s.decision.due]
    for status in statuses:
        log.info("%s: %s: %s", status.cert, "due" if status.decision.due else "not due",
                 status.decision.reason, extra={"cert": status.cert})
    issued: tuple[Outcome, ...] = ()
    if due:
        from certfan.issue import order

        issued = tuple(order.issue_many(cfg, store, due, acme=acme.client(), dns=tools.dns))
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
        after = tuple(renewal_status(cfg, store, now, acme=acme, rng=rng))
    return RenewReport(
        statuses=statuses,
        issued=issued,
        targets=tuple((r.cert, r.version, tuple(h.name for h in hs)) for r, hs in targets),
        held=tuple(behind.held),
        rollout=report,
        next_due=after,
        seconds=time.monotonic() - started,
    )


def _left_over(cfg: Config, store: Store) -> bool:
    """Whether a killed run left TXT values (dns01.PendingTxt) or an unactivated version.

    Local files only; when it says no, the issuance and DNS code stay unimported.
    """
    try:
        if PendingTxt(cfg.state_dir).leftovers():
            return True
    except CertfanError:
        return True  # unreadable: order.remove_dns_leftovers reads it again and says why
    return any(store.unactivated(name) is not None for name in cfg.certificates)
