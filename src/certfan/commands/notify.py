"""Tell a person: the ``[[notify]]`` entries, fired when something needs one.

Events (``Notice.event``):

* ``failed``: a ``renew``, ``push`` or ``reissue`` that failed or left hosts
  behind (partial);
* ``halted``: a rollout that spent its failure budget and stopped;
* ``expiring``: ``status`` found a certificate inside its warning window; at
  most once a day per certificate, remembered in ``<state_dir>/notify/``.

A webhook gets one HTTP POST with a JSON body. ``format = "certfan"`` (the
default) sends the document :func:`payload` builds::

    {"certfan": 1, "event": "halted", "command": "renew", "severity": "critical",
     "summary": "media: rollout of 0002-3f9a1c0d2b7e halted at sally (prove): ...",
     "origin": "certfan-01", "time": "2026-12-02T00:01:05Z",
     "items": [{"cert": "media", "host": "sally", "version": "0002-3f9a1c0d2b7e",
                "detail": "failed at prove: serves ..."}, ...]}

``slack`` sends ``{"text": ...}`` and ``discord`` ``{"content": ...}`` (their
incoming webhooks), ``matrix`` ``{"text": ..., "msgtype": "m.text"}`` (the
shape matrix-hookshot's generic webhooks take); the text is the summary and
one line per item. A ``command`` runs as argv, without a shell, with that
JSON document on stdin and ``CERTFAN_EVENT``, ``CERTFAN_COMMAND``,
``CERTFAN_SEVERITY`` and ``CERTFAN_SUMMARY`` in its environment.

Delivery never fails or blocks the run that fires it: every entry has a
timeout (``timeout``, default 5 s), all entries run at once under one
deadline, and whatever cannot be delivered is logged as a WARNING and
dropped. A webhook URL is a secret: logs name it by scheme and host only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from certfan.commands.notify_send import MAX_DETAIL, Delivery, Item, Notice, send
from certfan.config.model import Config
from certfan.errors import CertfanError
from certfan.state import fsutil

if TYPE_CHECKING:  # the reports' own types, for the checker only (no import at run time)
    from certfan.commands.renew import RenewReport
    from certfan.commands.status import Report
    from certfan.deploy.fleet import Report as RolloutReport
    from certfan.deploy.model import HostOutcome

__all__ = ["Delivery", "Item", "Notice", "fire", "fire_expiring", "expiring_items",
           "renew_notice", "rollout_notice", "send"]

log = logging.getLogger(__name__)

EXPIRY_QUIET = 86400.0  # one expiry notice per certificate per day


# ---------------------------------------------------------------- notices from reports




def _outcome_item(o: HostOutcome) -> Item:
    result = getattr(o.result, "value", o.result)
    detail = f"{result}" + (f" at {o.failed_step}" if o.failed_step else "")
    if o.error:
        detail += f": {o.error}"
    return Item(o.cert, o.host, o.version, detail[:MAX_DETAIL])


def rollout_notice(command: str, report: RolloutReport | None,
                   extra: Iterable[Item] = ()) -> Notice | None:
    """``halted`` for a halted rollout, ``failed`` for hosts left behind (or ``extra``
    failures, e.g. an order that failed); None when all is well."""
    bad = [_outcome_item(o) for o in (report.outcomes if report else ()) if not o.ok]
    items = [*extra, *bad]
    if not items:
        return None
    halted = report.halted_by if report else None
    if halted is not None:
        where = f"{halted.host} ({halted.failed_step or 'failed'})"
        summary = f"{halted.cert}: rollout of {halted.version} halted at {where}"
        event = "halted"
    else:
        what = sorted({i.cert for i in items if i.cert})
        summary = f"{', '.join(what) or command}: {len(items)} problem(s)"
        event = "failed"
    hosts_failed = len(bad)
    if hosts_failed:
        summary += f"; {hosts_failed} host(s) do not serve the new version"
    return Notice(event, command, f"certfan {command}: {summary}", tuple(items))




def renew_notice(report: RenewReport) -> Notice | None:
    """What a renew run has to tell: orders that failed, a halted or partial rollout."""
    failed = [Item(o.cert, detail=f"not renewed: {o.error}"[:MAX_DETAIL])
              for o in report.failed_issues]
    return rollout_notice("renew", report.rollout, failed)




def expiring_items(report: Report) -> list[Item]:
    """A status report's (certificate, host) pairs that serve a certificate inside the
    warning window."""
    items = []
    for c in report.checks:
        days = c.days_left(report.now)
        if days is not None and days < report.warn_days:
            when = "expired" if days < 0 else f"expires in {days:.1f} days"
            items.append(Item(c.cert, c.host, c.current, f"served certificate {when}"))
    return items


def expiring_notice(items: Sequence[Item]) -> Notice | None:
    if not items:
        return None
    certs = sorted({i.cert for i in items if i.cert})
    return Notice("expiring", "status",
                  f"certfan status: {', '.join(certs)} inside the warning window", tuple(items))


def fire(cfg: Config, notice: Notice | None, **kwargs: Any) -> list[Delivery]:
    """Send ``notice`` (if any) to the config's entries; never raises, never blocks
    beyond the deadline."""
    if notice is None or not cfg.notify:
        return []
    return send(cfg.notify, notice, **kwargs)


# ---------------------------------------------------------------- expiry, once a day


def _memory_path(state_dir: Path) -> Path:
    return state_dir / "notify" / "expiring.json"


def _memory(state_dir: Path) -> dict[str, float]:
    try:
        doc = fsutil.read_json(_memory_path(state_dir), "notification memory")
    except CertfanError as exc:
        log.warning("%s", exc)
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): float(v) for k, v in doc.items() if isinstance(v, (int, float))}


def fire_expiring(cfg: Config, items: Sequence[Item], *, now: datetime | None = None,
                  **kwargs: Any) -> list[Delivery]:
    """Notify about certificates inside the warning window, each at most once a day.

    A certificate counts as told once at least one entry took the notice; an
    undeliverable notice is tried again on the next run."""
    wanted = [n for n in cfg.notify if "expiring" in n.on]
    if not items or not wanted:
        return []
    now = now or datetime.now(UTC)
    stamp = now.timestamp()
    told = _memory(cfg.state_dir)
    fresh = [i for i in items if stamp - told.get(i.cert or "", 0.0) >= EXPIRY_QUIET]
    notice = expiring_notice(fresh)
    if notice is None:
        log.debug("notify: expiry already told today for %s",
                  ", ".join(sorted({i.cert or "" for i in items})))
        return []
    deliveries = send(wanted, notice, now=now, **kwargs)
    if any(d.ok for d in deliveries):
        told.update({i.cert: stamp for i in fresh if i.cert})
        try:
            path = fsutil.ensure_dir(_memory_path(cfg.state_dir).parent)
            fsutil.atomic_write(path / "expiring.json",
                                json.dumps(told, sort_keys=True).encode())
        except OSError as exc:
            log.warning("notify: cannot remember the expiry notice: %s", exc)
    return deliveries
