"""DNS queries to the configured servers only (never the system resolver).

CNAME chains, the zone of a name by its SOA, the authoritative servers of a
zone from its NS records, and whether each of them serves a TXT value yet.
One of the two modules importing dnspython (with ``dnsupdate``); its errors
become :class:`DnsError` here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

from certfan.config import DnsConfig, Endpoint
from certfan.errors import DnsError
from certfan.issue import polling

log = logging.getLogger(__name__)

QUERY_TIMEOUT = 3.0
MAX_CNAME_HOPS = 8


class Lookup:
    """Queries to configured servers only; every query has a timeout."""

    def __init__(self, cfg: DnsConfig):
        self.cfg = cfg
        self.resolvers: tuple[Endpoint, ...] = cfg.resolvers or (Endpoint(cfg.server, cfg.port),)
        self.queries = 0  # sent, for tests and benchmarks counting round trips

    def ask(
        self,
        name: str,
        rdtype: str,
        servers: Sequence[Endpoint] | None = None,
        *,
        rd: bool = True,
        timeout: float = QUERY_TIMEOUT,
    ) -> dns.message.Message:
        """The first answer from ``servers`` (default: the resolvers)."""
        query = dns.message.make_query(absolute(name), rdtype)
        if not rd:
            query.flags &= ~dns.flags.RD
        problems = []
        for server in servers or self.resolvers:
            self.queries += 1
            try:
                response, _ = dns.query.udp_with_fallback(
                    query, server.address, timeout=timeout, port=server.port
                )
            except (dns.exception.DNSException, OSError) as exc:
                problems.append(f"{server}: {describe(exc)}")
                continue
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response
            problems.append(f"{server}: {dns.rcode.to_text(response.rcode())}")
        raise DnsError(f"cannot look up {name} {rdtype}: {'; '.join(problems)}")

    def resolve_target(self, name: str) -> str:
        """Follow a CNAME chain from ``name``; the last name is where TXT goes."""
        current = absolute(name)
        seen = [current]
        for _ in range(MAX_CNAME_HOPS):
            cname = _find(self.ask(current, "CNAME").answer, current, "CNAME")
            if cname is None:
                if current != seen[0]:
                    log.debug("%s is a CNAME chain to %s", name, current)
                return current
            current = str(cname[0].target)
            if current in seen:
                raise DnsError(f"CNAME loop at {name}: {' -> '.join([*seen, current])}")
            seen.append(current)
        raise DnsError(f"CNAME chain from {name} longer than {MAX_CNAME_HOPS}: {' -> '.join(seen)}")

    def find_zone(self, name: str) -> str:
        """The zone holding ``name``, from the SOA in the answer or authority section."""
        labels = dns.name.from_text(name)
        while True:
            response = self.ask(labels.to_text(), "SOA")
            for section in (response.answer, response.authority):
                for rrset in section:
                    if rrset.rdtype == dns.rdatatype.SOA and labels.is_subdomain(rrset.name):
                        return str(rrset.name.to_text())
            if labels == dns.name.root:
                raise DnsError(f"no SOA found for {name}: cannot tell which zone to update")
            labels = labels.parent()

    def authoritative(self, zone: str) -> tuple[Endpoint, ...]:
        """Configured ``dns.nameservers``, else the zone's NS hosts at ``dns.ns_port``."""
        if self.cfg.nameservers:
            return self.cfg.nameservers
        ns_rrset = _find(self.ask(zone, "NS").answer, zone, "NS")
        if ns_rrset is None:
            raise DnsError(f"zone {zone}: no NS records; set dns.nameservers")
        endpoints: list[Endpoint] = []
        for ns in ns_rrset:
            host = str(ns.target)
            for rdtype in ("A", "AAAA"):
                for rdata in _find(self.ask(host, rdtype).answer, host, rdtype) or ():
                    endpoint = Endpoint(rdata.address, self.cfg.ns_port)
                    if endpoint not in endpoints:
                        endpoints.append(endpoint)
        if not endpoints:
            raise DnsError(f"zone {zone}: no address for its nameservers; set dns.nameservers")
        return tuple(endpoints)

    def serves(self, server: Endpoint, name: str, value: str,
               timeout: float = QUERY_TIMEOUT) -> bool:
        """Whether ``server`` answers ``name`` TXT with ``value`` (no recursion)."""
        try:
            response = self.ask(name, "TXT", [server], rd=False, timeout=timeout)
        except DnsError as exc:
            log.debug("poll %s: %s", server, exc)
            return False
        wanted = value.encode()
        # An authoritative answer may carry a CNAME chain first; look at every TXT.
        return any(
            b"".join(r.strings) == wanted
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for r in rrset
        )

    def wait_propagated(
        self,
        pending: Iterable[tuple[str, str, tuple[Endpoint, ...]]],
        *,
        timeout: float,
        interval: float,
        cancel: threading.Event | None = None,
    ) -> int:
        """Poll until every server serves every (name, value); returns the poll rounds.

        No fixed sleep: the first round runs at once, then every ``interval``.
        """
        todo = {(name, value, server) for name, value, servers in pending for server in servers}
        started = time.monotonic()
        deadline = started + timeout
        rounds = 0
        while True:
            rounds += 1
            # A dead server must not hold the round past the deadline.
            wait = max(0.05, min(QUERY_TIMEOUT, deadline - time.monotonic()))
            todo = {(n, v, s) for n, v, s in todo if not self.serves(s, n, v, wait)}
            if not todo:
                log.info("TXT values served by every nameserver after %d polls (%.2fs)",
                         rounds, time.monotonic() - started)
                return rounds
            left = deadline - time.monotonic()
            if left <= 0:
                missing = ", ".join(sorted(f"{n} at {s}" for n, _, s in todo))
                raise DnsError(
                    f"TXT value not served after {timeout:g}s (dns.propagation_timeout): {missing}"
                )
            polling.pause(min(interval, left), cancel, "waiting for DNS propagation")


def absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__


def _find(section: list[dns.rrset.RRset], name: str, rdtype: str) -> dns.rrset.RRset | None:
    wanted = dns.name.from_text(name)
    kind = dns.rdatatype.from_text(rdtype)
    for rrset in section:
        if rrset.name == wanted and rrset.rdtype == kind:
            return rrset
    return None
