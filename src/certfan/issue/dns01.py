"""DNS-01: publish TXT values, prove they are served, always take them away.

Whatever the method, certfan does the DNS work itself: it follows the
``_acme-challenge`` CNAME chain and finds the zone by its SOA through the
configured resolvers (``dnslookup``), then hands the publisher the final
name and that zone:

* ``dnsupdate.Rfc2136``: RFC 2136 updates signed with TSIG;
* ``dnslexicon.LexiconDns``: a DNS provider's HTTP API through dns-lexicon
  (the ``certfan[lexicon]`` extra);
* ``dnshook.HookDns``: an executable of the operator's.

``Dns01.published(records)`` is a context manager that adds every value, polls
the zone's authoritative servers until each serves it, and removes every value
it added whatever happens (KeyboardInterrupt too); ``dnspending.PendingTxt``
records each value first, so values a killed run left are removed by the next.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from certfan.config import DnsConfig, Endpoint
from certfan.errors import DnsError
from certfan.issue.dnshook import HookDns
from certfan.issue.dnslookup import Lookup, absolute
from certfan.issue.dnspending import PENDING_FILE, PendingTxt, Published
from certfan.issue.dnsupdate import TXT_TTL, Rfc2136, read_tsig_secret

__all__ = ["PENDING_FILE", "Dns01", "Dns01Publisher", "HookDns", "Lookup", "PendingTxt",
           "Published", "Publisher",
           "Rfc2136", "make_publisher", "read_tsig_secret"]

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Adds one TXT value next to any others at ``fqdn`` in ``zone``; removes only it."""

    def add(self, fqdn: str, value: str, zone: str | None = None) -> None: ...

    def remove(self, fqdn: str, value: str, zone: str | None = None) -> None: ...


class Dns01Publisher(Protocol):
    """The DNS-01 step as the ACME layer sees it (``Dns01``, or a test's stand-in)."""

    def published(
        self, records: Sequence[tuple[str, str]], cancel: threading.Event | None = None
    ) -> AbstractContextManager[Any]: ...


def make_publisher(cfg: DnsConfig, lookup: Lookup) -> Publisher:
    """The publisher ``dns.method`` names."""
    if cfg.method == "hook":
        if cfg.hook is None:
            raise DnsError("dns.method = hook needs dns.hook")
        return HookDns(cfg.hook, cfg.hook_timeout, TXT_TTL)
    if cfg.method == "lexicon":
        from certfan.issue.dnslexicon import LexiconDns  # the optional extra

        return LexiconDns(cfg, TXT_TTL)
    return Rfc2136(cfg, lookup)


class Dns01:
    """What the ACME layer uses: ``with dns.published([(name, value), ...]):``."""

    def __init__(self, cfg: DnsConfig, publisher: Publisher | None = None,
                 lookup: Lookup | None = None, pending: PendingTxt | None = None):
        self.cfg = cfg
        self.lookup = lookup or Lookup(cfg)
        self.publisher = publisher or make_publisher(cfg, self.lookup)
        self.pending = pending
        self._swept = False
        self._sweep_lock = threading.Lock()

    def remove_leftovers(self) -> int:
        """Remove what earlier runs left (see PendingTxt); the number still left."""
        if self.pending is None:
            return 0
        with self._sweep_lock:
            if self._swept:
                return 0
            leftovers = self.pending.leftovers()
            if leftovers:
                log.warning("removing %d TXT value(s) an earlier run left in DNS", len(leftovers))
                self._remove_all(leftovers)
            left = len(self.pending.leftovers())
            self._swept = left == 0
            return left

    def plan(self, name: str, value: str) -> Published:
        """Where the value for challenge ``name`` goes (CNAMEs followed, zone found)."""
        target = self.lookup.resolve_target(name)
        return Published(absolute(name), target, self.lookup.find_zone(target), value)

    @contextmanager
    def published(
        self, records: Sequence[tuple[str, str]], cancel: threading.Event | None = None
    ) -> Iterator[list[Published]]:
        """Add every value, wait until served, yield; remove what was added, always."""
        added: list[Published] = []
        try:
            self.remove_leftovers()
            for name, value in records:
                item = self.plan(name, value)
                if self.pending is not None:
                    # First: a run killed after the add leaves a record. An add that
                    # fails stays recorded (a timed-out one may have landed); the next
                    # run's delete of a value that is not there is a no-op.
                    self.pending.add(item)
                self._change("add", item)
                added.append(item)
                log.info("published TXT for %s at %s (zone %s)", name, item.target, item.zone)
            self._wait(added, cancel)
            yield added
        finally:
            self._remove_all(added)

    def _change(self, action: str, item: Published) -> None:
        if isinstance(self.publisher, HookDns):  # the hook is also told the original name
            self.publisher.run(action, item)
        elif action == "add":
            self.publisher.add(item.target, item.value, item.zone)
        else:
            self.publisher.remove(item.target, item.value, item.zone)

    def _wait(self, added: list[Published], cancel: threading.Event | None) -> None:
        if not self.cfg.propagation_check:
            log.warning("dns.propagation_check = false: not checking that the TXT values are "
                        "served before the CA looks")
            return
        servers: dict[str | None, tuple[Endpoint, ...]] = {}
        pending = []
        for item in added:
            if item.zone not in servers:
                servers[item.zone] = self.lookup.authoritative(item.zone or item.target)
            pending.append((item.target, item.value, servers[item.zone]))
        self.lookup.wait_propagated(pending, timeout=self.cfg.propagation_timeout,
                                    interval=self.cfg.poll_interval, cancel=cancel)

    def _remove_all(self, added: list[Published]) -> None:
        for item in reversed(added):
            try:
                self._change("remove", item)
                log.info("removed TXT for %s at %s", item.challenge, item.target)
            except DnsError as exc:
                # Never mask the error that brought us here; the user must know, though.
                todo = ("recorded: the next run removes it" if self.pending is not None
                        else "remove it by hand")
                log.error("could not remove TXT value at %s (%s): %s", item.target, todo, exc)
                continue
            if self.pending is not None:
                try:
                    self.pending.drop(item)
                except DnsError as exc:  # removed from DNS; only the record is stale
                    log.warning("%s", exc)
