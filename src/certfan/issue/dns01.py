"""DNS-01: publish TXT values, prove they are served, always take them away.

The only module importing dnspython. Three pieces:

* ``Rfc2136`` and ``HookDns`` publish one TXT value (``add``) and take it
  away (``remove``). RFC 2136 "add" adds one RR to the RRset and "delete" with
  rdata removes that one RR (RFC 2136 section 2.5.1 and 2.5.4), so an apex and
  its wildcard can both have a value at ``_acme-challenge.<apex>`` and values
  someone else put there are never touched.
* ``Lookup`` asks only the configured servers (never the system resolver):
  CNAME chains, the zone of a name by its SOA, the authoritative servers of a
  zone, and whether each of them serves a value yet.
* ``Dns01.published(records)`` ties them together as a context manager that
  removes every value it added, whatever happens (KeyboardInterrupt too).
* ``PendingTxt`` is the one thing a ``finally`` cannot do: a run killed with
  SIGKILL (or a DNS server down at cleanup time) leaves values behind, so each
  value is written to ``<state>/dns-pending.json`` before it is added and
  struck off once it is removed; the next run removes what a dead run left.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import secrets
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from certfan.config import DnsConfig, Endpoint
from certfan.errors import DnsError, Interrupted
from certfan.state import fsutil

log = logging.getLogger(__name__)

TXT_TTL = 60
QUERY_TIMEOUT = 3.0
UPDATE_TIMEOUT = 10.0
HOOK_TIMEOUT = 60.0
MAX_CNAME_HOPS = 8
PENDING_FILE = "dns-pending.json"
_STDERR_TAIL = 800


@dataclass(frozen=True)
class Published:
    """One TXT value certfan put into DNS (the key for removing it again)."""

    challenge: str  # _acme-challenge.<domain>
    target: str  # where the TXT lives after following CNAMEs
    zone: str | None  # the zone updated (None for the hook method)
    value: str


# ------------------------------------------------------------------ lookups


class Lookup:
    """Queries to configured servers only; every query has a timeout."""

    def __init__(self, cfg: DnsConfig):
        self.cfg = cfg
        self.resolvers: tuple[Endpoint, ...] = cfg.resolvers or (Endpoint(cfg.server, cfg.port),)

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
        query = dns.message.make_query(_absolute(name), rdtype)
        if not rd:
            query.flags &= ~dns.flags.RD
        problems = []
        for server in servers or self.resolvers:
            try:
                response, _ = dns.query.udp_with_fallback(
                    query, server.address, timeout=timeout, port=server.port
                )
            except (dns.exception.DNSException, OSError) as exc:
                problems.append(f"{server}: {_describe(exc)}")
                continue
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response
            problems.append(f"{server}: {dns.rcode.to_text(response.rcode())}")
        raise DnsError(f"cannot look up {name} {rdtype}: {'; '.join(problems)}")

    def resolve_target(self, name: str) -> str:
        """Follow a CNAME chain from ``name``; the last name is where TXT goes."""
        current = _absolute(name)
        seen = [current]
        for _ in range(MAX_CNAME_HOPS):
            response = self.ask(current, "CNAME")
            cname = _find(response.answer, current, "CNAME")
            if cname is None:
                if current != seen[0]:
                    log.debug("%s is a CNAME chain to %s", name, current)
                return current
            current = str(cname[0].target)  # type: ignore[attr-defined]
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
                        return rrset.name.to_text()
            if labels == dns.name.root:
                raise DnsError(f"no SOA found for {name}: cannot tell which zone to update")
            labels = labels.parent()

    def authoritative(self, zone: str) -> tuple[Endpoint, ...]:
        """Configured ``dns.nameservers``, else the zone's NS hosts at ``dns.ns_port``."""
        if self.cfg.nameservers:
            return self.cfg.nameservers
        response = self.ask(zone, "NS")
        ns_rrset = _find(response.answer, zone, "NS")
        if ns_rrset is None:
            raise DnsError(f"zone {zone}: no NS records; set dns.nameservers")
        endpoints: list[Endpoint] = []
        for ns in ns_rrset:
            host = str(ns.target)  # type: ignore[attr-defined]
            for rdtype in ("A", "AAAA"):
                addresses = _find(self.ask(host, rdtype).answer, host, rdtype)
                for rdata in addresses or ():
                    endpoint = Endpoint(rdata.address, self.cfg.ns_port)  # type: ignore[attr-defined]
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
            b"".join(r.strings) == wanted  # type: ignore[attr-defined]
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
            if cancel is not None and cancel.wait(min(interval, left)):
                raise Interrupted("interrupted while waiting for DNS propagation")
            if cancel is None:
                time.sleep(min(interval, left))


# ------------------------------------------------------------------ publishers


def read_tsig_secret(path: Path) -> str:
    """A bare base64 line, or BIND's ``key "n" { algorithm ..; secret "..."; };``.

    Messages never include the file's content.
    """
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise DnsError(f"{path}: cannot read TSIG secret: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: TSIG secret file is readable by group or others (mode %o); chmod 600",
                    path, stat.S_IMODE(info.st_mode))
    match = re.search(r'secret\s+"([^"]+)"', text)
    secret = match.group(1) if match else "".join(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
    try:
        if not base64.b64decode(secret, validate=True):
            raise ValueError("empty")
    except (binascii.Error, ValueError):
        raise DnsError(f"{path}: TSIG secret is not base64 (nor a BIND key clause)") from None
    return secret


class Rfc2136:
    """Dynamic updates to ``dns.server``, signed with the configured TSIG key."""

    def __init__(self, cfg: DnsConfig, lookup: Lookup | None = None):
        if not cfg.tsig_key_name or not cfg.tsig_secret_file:
            raise DnsError("dns.method = rfc2136 needs dns.tsig_key_name and dns.tsig_secret_file")
        self.cfg = cfg
        self.lookup = lookup or Lookup(cfg)
        self.server = Endpoint(cfg.server, cfg.port)
        self._key = dns.tsig.Key(
            cfg.tsig_key_name, read_tsig_secret(cfg.tsig_secret_file), cfg.tsig_algorithm
        )

    def add(self, fqdn: str, value: str, zone: str | None = None) -> None:
        zone = zone or self.lookup.find_zone(fqdn)
        update = dns.update.UpdateMessage(zone, keyring=self._key)
        update.add(_absolute(fqdn), TXT_TTL, "TXT", _txt(value))
        self._send(update, zone, f"add TXT at {fqdn}")

    def remove(self, fqdn: str, value: str, zone: str | None = None) -> None:
        zone = zone or self.lookup.find_zone(fqdn)
        update = dns.update.UpdateMessage(zone, keyring=self._key)
        update.delete(_absolute(fqdn), "TXT", _txt(value))  # this RR only, not the RRset
        self._send(update, zone, f"remove TXT at {fqdn}")

    def _send(self, update: dns.update.UpdateMessage, zone: str, what: str) -> None:
        where = f"zone {zone} at {self.server}"
        key = self.cfg.tsig_key_name
        try:
            response = dns.query.tcp(
                update, self.server.address, timeout=UPDATE_TIMEOUT, port=self.server.port
            )
        except dns.tsig.PeerBadKey:
            raise DnsError(f"{what}: {where} refused: BADKEY, the server does not know "
                           f"TSIG key {key!r} (dns.tsig_key_name / dns.tsig_algorithm)") from None
        except (dns.tsig.PeerBadSignature, dns.tsig.BadSignature):
            raise DnsError(f"{what}: {where} refused: BADSIG, wrong secret for TSIG key "
                           f"{key!r} (dns.tsig_secret_file)") from None
        except dns.tsig.PeerBadTime:
            raise DnsError(f"{what}: {where} refused: BADTIME, clocks differ too much") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsError(f"{what}: {where}: {_describe(exc)}") from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            hint = {dns.rcode.REFUSED: " (updates not allowed for this key?)",
                    dns.rcode.NOTAUTH: " (server not authoritative, or TSIG rejected)",
                    dns.rcode.NOTZONE: " (name outside the zone)"}.get(rcode, "")
            raise DnsError(f"{what}: {where} refused: {dns.rcode.to_text(rcode)}{hint}")
        log.debug("%s in %s: NOERROR", what, where)


class HookDns:
    """An executable adds/removes one TXT value.

    Called as ``<hook> add <fqdn> <value>`` and ``<hook> remove <fqdn> <value>``
    with CERTFAN_DNS_ACTION, CERTFAN_DNS_NAME (the ``_acme-challenge`` name,
    no trailing dot) and CERTFAN_DNS_VALUE in the environment. Exit 0 means
    done; anything else fails the issuance, naming the exit status and the
    tail of stderr. CNAME following, if any, is the hook's business.
    """

    def __init__(self, hook: Path, timeout: float = HOOK_TIMEOUT):
        self.hook = hook
        self.timeout = timeout

    def add(self, fqdn: str, value: str, zone: str | None = None) -> None:
        self._run("add", fqdn, value)

    def remove(self, fqdn: str, value: str, zone: str | None = None) -> None:
        self._run("remove", fqdn, value)

    def _run(self, action: str, fqdn: str, value: str) -> None:
        name = fqdn.rstrip(".")
        env = dict(os.environ, CERTFAN_DNS_ACTION=action, CERTFAN_DNS_NAME=name,
                   CERTFAN_DNS_VALUE=value)
        try:
            done = subprocess.run([str(self.hook), action, name, value], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DnsError(f"dns hook {self.hook} {action} {name}: no exit after "
                           f"{self.timeout:g}s") from None
        except OSError as exc:
            raise DnsError(f"dns hook {self.hook}: cannot run: {exc.strerror}") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
            raise DnsError(f"dns hook {self.hook} {action} {name} exited with status "
                           f"{done.returncode}" + (f": {tail}" if tail else ""))
        log.debug("dns hook %s %s: ok", action, name)


# ------------------------------------------------------------------ the journal


class PendingTxt:
    """TXT values published and not yet removed, in ``<state>/dns-pending.json``.

    An entry is written before its value is added (a timed-out add may still
    have landed) and dropped once the value is removed. Entries of another run
    are leftovers: the run lock (lock.py) lets only one run use a state
    directory, so another run's entries are those of a run that died (SIGKILL,
    power loss) or could not reach the server at cleanup time.
    """

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / PENDING_FILE
        self.run = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._lock = threading.Lock()

    def add(self, item: Published) -> None:
        entry = {"run": self.run, "challenge": item.challenge, "target": item.target,
                 "zone": item.zone, "value": item.value}
        with self._lock:
            self._write([*self._read(), entry])

    def drop(self, item: Published) -> None:
        with self._lock:
            entries = self._read()
            kept = [e for e in entries if (e["target"], e["value"]) != (item.target, item.value)]
            if len(kept) != len(entries):
                self._write(kept)

    def leftovers(self) -> list[Published]:
        """Values another (dead) run published and never removed."""
        with self._lock:
            entries = self._read()
        return [Published(str(e["challenge"]), str(e["target"]), e["zone"], str(e["value"]))
                for e in entries if e.get("run") != self.run]

    def _read(self) -> list[dict[str, str | None]]:
        doc = fsutil.read_json(self.path, "pending TXT values", DnsError)
        if doc is None:
            return []
        if not isinstance(doc, list) or not all(
            isinstance(e, dict) and {"challenge", "target", "zone", "value"} <= e.keys()
            for e in doc
        ):
            raise DnsError(f"{self.path}: not a list of pending TXT values; remove the listed "
                           "values by hand, then the file")
        return doc

    def _write(self, entries: list[dict[str, str | None]]) -> None:
        try:
            fsutil.ensure_dir(self.path.parent)
            fsutil.atomic_write(self.path, json.dumps(entries, indent=2).encode() + b"\n",
                                fsutil.KEY_MODE)
        except OSError as exc:
            raise DnsError(f"{self.path}: cannot record pending TXT values: {exc}") from exc


# ------------------------------------------------------------------ the whole step


class Dns01:
    """What the ACME layer uses: ``with dns.published([(name, value), ...]):``."""

    def __init__(self, cfg: DnsConfig, publisher: Rfc2136 | HookDns | None = None,
                 lookup: Lookup | None = None, pending: PendingTxt | None = None):
        self.cfg = cfg
        self.lookup = lookup or Lookup(cfg)
        if publisher is None:
            publisher = (HookDns(_hook_path(cfg)) if cfg.method == "hook"
                         else Rfc2136(cfg, self.lookup))
        self.publisher = publisher
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
        if isinstance(self.publisher, HookDns):
            return Published(name, _absolute(name), None, value)
        target = self.lookup.resolve_target(name)
        return Published(name, target, self.lookup.find_zone(target), value)

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
                self.publisher.add(item.target, value, item.zone)
                added.append(item)
                log.info("published TXT for %s at %s%s", name, item.target,
                         f" (zone {item.zone})" if item.zone else "")
            self._wait(added, cancel)
            yield added
        finally:
            self._remove_all(added)

    def _wait(self, added: list[Published], cancel: threading.Event | None) -> None:
        if isinstance(self.publisher, HookDns) and not self.cfg.nameservers:
            log.warning("dns hook without dns.nameservers: propagation is not checked")
            return
        servers: dict[str | None, tuple[Endpoint, ...]] = {}
        pending = []
        for item in added:
            if item.zone not in servers:
                servers[item.zone] = (self.cfg.nameservers if item.zone is None
                                      else self.lookup.authoritative(item.zone))
            pending.append((item.target, item.value, servers[item.zone]))
        self.lookup.wait_propagated(pending, timeout=self.cfg.propagation_timeout,
                                    interval=self.cfg.poll_interval, cancel=cancel)

    def _remove_all(self, added: list[Published]) -> None:
        for item in reversed(added):
            try:
                self.publisher.remove(item.target, item.value, item.zone)
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


def _hook_path(cfg: DnsConfig) -> Path:
    if cfg.hook is None:
        raise DnsError("dns.method = hook needs dns.hook")
    return cfg.hook


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _find(section: list, name: str, rdtype: str):  # type: ignore[no-untyped-def]
    wanted = dns.name.from_text(name)
    kind = dns.rdatatype.from_text(rdtype)
    for rrset in section:
        if rrset.name == wanted and rrset.rdtype == kind:
            return rrset
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
