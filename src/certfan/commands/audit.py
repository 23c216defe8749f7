"""audit: every certificate on the fleet, managed by certfan or not. It only reads.

Per host, over SSH: nginx's full configuration (``nginx -T``, run the way the
config test is), each ``server`` block's names and certificate and key files,
those certificates read (keys only looked for, never read). Then a TLS
handshake per server name records what is really served. The findings, per
host and across the fleet: what certfan manages and its state, what it does
not manage and when that expires, a name served with different certificates
on different hosts, names expiring within the warning window, files
referenced but missing.

Two fan-outs, each with the rollout deadlines: the hosts (one connect, two
commands), then every (host, name) handshake.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from certfan.commands import nginxconf
from certfan.commands.status import CRITICAL, OK, UNKNOWN, WARNING, worst
from certfan.config import Config, Host
from certfan.deploy import fanout, probe
from certfan.deploy.model import Connect, default_connect
from certfan.errors import CertfanError
from certfan.issue import crypto
from certfan.state.store import Store

log = logging.getLogger(__name__)

DAY = 86400.0
MAX_CERT_BYTES = 64 * 1024
Prober = Callable[..., bytes]

# Each argument is "c:PATH" (read it: a certificate) or "k:PATH" (a key: only whether
# it is there). Paths are the host's own nginx config values, passed as arguments,
# never spliced into the script.
_READ_FILES = r"""for a do
  f=${a#?:}
  if [ ! -e "$f" ]; then printf '%s\n' "==certfan-missing== $f"
  elif [ ! -r "$f" ]; then printf '%s\n' "==certfan-unreadable== $f"
  elif [ "${a%%:*}" = k ]; then printf '%s\n' "==certfan-present== $f"
  else printf '%s\n' "==certfan-file== $f"; head -c 65536 -- "$f"; printf '\n'
  fi
done"""
_MARK = re.compile(r"^==certfan-(missing|unreadable|present|file)== (.*)$")
_NGINX_MISSING = re.compile(r'cannot load certificate(?: key)? "([^"]+)"')


@dataclass(frozen=True)
class FileFacts:
    path: str
    state: str  # "file", "present" (a key), "missing", "unreadable", "unparsable"
    facts: crypto.CertFacts | None = None
    certificates: int = 0  # how many the file holds: the leaf and its intermediates


@dataclass(frozen=True)
class Served:
    name: str  # the server name
    sni: str
    sha256: str | None = None
    not_after: datetime | None = None
    error: str | None = None


@dataclass(frozen=True)
class Site:
    """One server block's certificate on one host."""

    host: str
    file: str  # nginx config file and line of the block
    names: tuple[str, ...]
    cert: FileFacts
    key: FileFacts | None
    managed: str | None  # the certificate name, when the file is certfan's live path
    current_sha256: str | None = None  # of that certificate's current version
    served: tuple[Served, ...] = ()
    state: int = OK
    notes: tuple[str, ...] = ()

    def days_left(self, now: datetime) -> float | None:
        when = self.cert.facts.not_after if self.cert.facts else None
        return None if when is None else (when - now).total_seconds() / DAY


@dataclass(frozen=True)
class HostAudit:
    host: str
    sites: tuple[Site, ...] = ()
    error: str | None = None  # could not read the host at all


@dataclass(frozen=True)
class Report:
    hosts: tuple[HostAudit, ...]
    conflicts: tuple[str, ...] = ()  # the same name served differently across hosts
    generated: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def sites(self) -> list[Site]:
        return [s for h in self.hosts for s in h.sites]

    @property
    def state(self) -> int:
        states = [s.state for s in self.sites] + [UNKNOWN for h in self.hosts if h.error]
        return worst([*states, WARNING if self.conflicts else OK])


def audit(cfg: Config, store: Store, *, hosts: Sequence[str] = (),
          connect: Connect = default_connect, prober: Prober = probe.served_leaf,
          warn_days: float = 20.0, crit_days: float = 7.0,
          now: datetime | None = None) -> Report:
    now = now or datetime.now(UTC)
    targets = [cfg.hosts[h] for h in hosts] if hosts else list(cfg.hosts.values())
    policy = cfg.rollout
    budget = policy.connect_timeout + 2 * policy.command_timeout  # connect, dump, read files
    read = fanout.fan_out(targets, lambda h: _read_host(cfg, store, h, connect),
                          concurrency=policy.concurrency, deadline=budget, name=lambda h: h.name)
    audits = [d.value if d.ok and d.value is not None else HostAudit(h.name, error=d.why(budget))
              for h, d in zip(targets, read, strict=True)]
    audits = _probe_all(cfg, audits, prober)
    judged = tuple(HostAudit(a.host, tuple(_judge(s, now, warn_days, crit_days) for s in a.sites),
                             a.error) for a in audits)
    return Report(judged, _conflicts(judged), now)


def _read_host(cfg: Config, store: Store, host: Host, connect: Connect) -> HostAudit:
    policy = cfg.rollout
    session = connect(host, timeout=policy.connect_timeout)
    try:
        dump = session.run(nginxconf.dump_argv(host.config_test), timeout=policy.command_timeout)
        if dump.lost or not dump.ok:
            missing = _NGINX_MISSING.findall(dump.stderr.decode("utf-8", "replace"))
            why = dump.lost or f"exit {dump.status}: {dump.tail(lines=3)}"
            if missing:
                why += f" (files referenced but missing: {', '.join(sorted(set(missing)))})"
            return HostAudit(host.name, error=f"nginx -T failed: {why}")
        blocks = [b for b in nginxconf.server_blocks(dump.stdout.decode("utf-8", "replace"))
                  if b.certificates]
        paths = sorted({f"c:{c}" for b in blocks for c in b.certificates}
                       | {f"k:{k}" for b in blocks for k in b.keys})
        files: dict[str, FileFacts] = {}
        if paths:
            out = session.run(["sh", "-c", _READ_FILES, "sh", *paths],
                              timeout=policy.command_timeout)
            if out.lost:
                return HostAudit(host.name, error=f"reading certificate files: {out.lost}")
            files = _parse_files(out.stdout.decode("utf-8", "replace"))
    finally:
        session.close()
    managed = _managed_paths(cfg, host)
    sites = []
    for block in blocks:
        for i, cert_path in enumerate(block.certificates):
            key_path = block.keys[i] if i < len(block.keys) else None
            cert_name = managed.get(cert_path)
            current = store.current(cert_name) if cert_name else None
            sites.append(Site(
                host=host.name, file=f"{block.file}:{block.line}", names=block.names,
                cert=files.get(cert_path, FileFacts(cert_path, "unreadable")),
                key=files.get(key_path, FileFacts(key_path, "unreadable")) if key_path else None,
                managed=cert_name, current_sha256=current.sha256 if current else None))
    return HostAudit(host.name, tuple(sites))


def _parse_files(text: str) -> dict[str, FileFacts]:
    found: dict[str, FileFacts] = {}
    current: str | None = None
    body: list[str] = []

    def close() -> None:
        if current is None:
            return
        pem = "\n".join(body).encode()
        try:
            found[current] = FileFacts(current, "file", crypto.cert_facts(pem),
                                       len(crypto.split_pem_chain(pem)))
        except CertfanError:
            found[current] = FileFacts(current, "unparsable")

    for line in text.splitlines():
        mark = _MARK.match(line)
        if not mark:
            body.append(line)
            continue
        close()
        current, body = None, []
        state, path = mark.group(1), mark.group(2)
        if state == "file":
            current = path
        else:
            found[path] = FileFacts(path, state)
    close()
    return found


def _managed_paths(cfg: Config, host: Host) -> dict[str, str]:
    """certfan's live fullchain path on ``host`` -> certificate name."""
    root = host.root.rstrip("/")
    return {f"{root}/live/{c.name}/fullchain.pem": c.name
            for c in cfg.certificates.values() if host.name in c.hosts}


def sni_of(server_name: str) -> str | None:
    """The SNI to probe a server_name with; None for names no client sends
    (``_``, regular expressions, variables)."""
    name = server_name.strip().lower()
    if not name or name == "_" or name.startswith("~") or "$" in name or name == "localhost":
        return None
    if name.startswith("."):  # ".example.org": the name and its subdomains
        name = name[1:]
    if name.endswith(".*"):
        return None
    return probe.sni_for(name)


def _probe_all(cfg: Config, audits: list[HostAudit], prober: Prober) -> list[HostAudit]:
    jobs = sorted({(a.host, n) for a in audits for s in a.sites for n in s.names
                   if sni_of(n) is not None})
    timeout = cfg.rollout.verify_timeout

    def job(item: tuple[str, str]) -> bytes:
        host, name = item
        return prober(cfg.hosts[host].probe, sni_of(name), timeout)

    done = fanout.fan_out(jobs, job, concurrency=max(4, cfg.rollout.concurrency * 4),
                          deadline=timeout + 1.0, name=lambda item: f"{item[0]}/{item[1]}")
    served: dict[tuple[str, str], Served] = {}
    for (host, name), d in zip(jobs, done, strict=True):
        sni = sni_of(name) or name
        if d.ok and d.value is not None:
            facts = crypto.cert_facts_der(d.value)
            served[(host, name)] = Served(name, sni, facts.sha256, facts.not_after)
        else:
            served[(host, name)] = Served(name, sni, error=d.why(timeout + 1.0))
    return [replace(a, sites=tuple(
        replace(s, served=tuple(served[(a.host, n)] for n in s.names if (a.host, n) in served))
        for s in a.sites)) for a in audits]


def _judge(site: Site, now: datetime, warn_days: float, crit_days: float) -> Site:
    notes: list[tuple[int, str]] = []
    if site.cert.facts is None:
        notes.append((CRITICAL, f"certificate file {site.cert.path} {site.cert.state}"))
    if site.key is not None and site.key.state in ("missing", "unreadable"):
        notes.append((CRITICAL, f"key file {site.key.path} {site.key.state}"))
    facts = site.cert.facts
    if facts is not None and site.cert.certificates == 1 and facts.issuer != facts.subject:
        notes.append((WARNING, "the file holds the leaf alone, without the intermediate of "
                      f"its issuer {facts.issuer}: many clients reject that"))
    days = site.days_left(now)
    if days is not None:
        if days <= 0:
            notes.append((CRITICAL, "the certificate file has EXPIRED"))
        elif days <= crit_days:
            notes.append((CRITICAL, f"the certificate file expires in {days:.1f} days"))
        elif days <= warn_days:
            notes.append((WARNING, f"the certificate file expires in {days:.1f} days"))
    if site.cert.facts is not None:
        probed = [n for n in site.names if sni_of(n) is not None]
        missing = crypto.uncovered_names(site.cert.facts.names, probed)
        if missing:
            notes.append((WARNING, f"the certificate does not cover {', '.join(missing)}"))
    for s in site.served:
        if s.error:
            notes.append((UNKNOWN, f"{s.name}: handshake failed: {s.error}"))
            continue
        if site.cert.facts is not None and s.sha256 == site.cert.facts.sha256:
            continue  # serves the file: its expiry is the file's, judged above
        left = (s.not_after - now).total_seconds() / DAY if s.not_after else None
        notes.append((WARNING, f"{s.name}: serves another certificate than {site.cert.path}"))
        if left is not None and left <= warn_days:
            notes.append((CRITICAL if left <= crit_days else WARNING,
                          f"{s.name}: served certificate expires in {left:.1f} days"))
    if site.managed and site.cert.facts and site.current_sha256 not in (None,
                                                                        site.cert.facts.sha256):
        notes.append((WARNING, f"managed ({site.managed}) but not the current version"))
    if not site.managed:
        notes.append((OK, "not managed by certfan"))
    state = worst([n for n, _ in notes] or [OK])
    return replace(site, state=state, notes=tuple(text for _, text in notes))


def _conflicts(audits: Sequence[HostAudit]) -> tuple[str, ...]:
    seen: dict[str, dict[str, list[str]]] = {}
    for a in audits:
        for site in a.sites:
            for s in site.served:
                if s.sha256:
                    seen.setdefault(s.name.lower(), {}).setdefault(s.sha256, []).append(a.host)
    lines = []
    for name, by_sha in sorted(seen.items()):
        if len(by_sha) > 1:
            parts = [f"{sha[:12]} on {', '.join(sorted(set(hosts)))}"
                     for sha, hosts in sorted(by_sha.items())]
            lines.append(f"{name}: served with {len(by_sha)} different certificates: "
                         + "; ".join(parts))
    return tuple(lines)
