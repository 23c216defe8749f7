"""What each host has on disk and actually serves, judged like a monitoring plugin.

Per host and certificate: the version its live pointer names (over SSH, one
read-only ``inspect`` per certificate), the leaf it presents for each name (a
TLS handshake to the host's own probe address), days until that leaf expires,
and drift: anything other than the store's current version. Each pair gets a
state (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); the report's state is the
worst, ordered CRITICAL > UNKNOWN > WARNING > OK: a host we cannot see may be
serving an expired certificate, so not knowing weighs more than a known drift.
A host that cannot be reached is UNKNOWN, never OK.

:func:`collect` gathers facts (network), :func:`evaluate` judges them (pure),
:mod:`certfan.commands.prometheus` renders the node_exporter textfile.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from certfan import defaults
from certfan.commands import notify
from certfan.config import Config, Host
from certfan.deploy import fanout, probe, ssh
from certfan.deploy import plan as remote
from certfan.deploy.hostrun import Connect
from certfan.errors import CertfanError, ConfigError, ProbeError
from certfan.state import history
from certfan.state.deploy import DeployState
from certfan.state.revocations import Holds, revoked_versions
from certfan.state.store import Release, Store

log = logging.getLogger(__name__)

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
_SEVERITY = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
DEFAULT_WARN_DAYS = defaults.STATUS_WARN_DAYS
DEFAULT_CRIT_DAYS = defaults.STATUS_CRIT_DAYS
DAY = 86400.0


def worst(states: Sequence[int]) -> int:
    return max(states, key=_SEVERITY.__getitem__, default=OK)


@dataclass(frozen=True)
class Served:
    """What a host presented for one certificate name."""

    name: str  # the certificate's DNS name
    sni: str  # what was asked for (a concrete label for a wildcard)
    sha256: str | None = None
    not_after: datetime | None = None
    serial: str | None = None
    version: str | None = None  # the stored version with this leaf, if any
    revoked: str | None = None  # the reason, when certfan revoked that version
    error: str | None = None
    chain: tuple[bytes, ...] = ()  # all presented (DER), if the prober says; how it differs
    chain_problem: str | None = None  # from the version's fullchain.pem


@dataclass(frozen=True)
class Check:
    host: str
    cert: str
    current: str | None  # the store's current version
    current_sha256: str | None
    on_disk: str | None = None  # what live/<cert> names ("certbot directory" for certbot's)
    disk_error: str | None = None
    served: tuple[Served, ...] = ()
    held: str | None = None  # held on this version by a partial rollback
    state: int = UNKNOWN
    reasons: tuple[str, ...] = ()

    def days_left(self, now: datetime) -> float | None:
        left = [(s.not_after - now).total_seconds() / DAY for s in self.served if s.not_after]
        return min(left) if left else None

    @property
    def drift(self) -> bool:
        if self.current is None:
            return False
        disk = self.disk_error is None and self.on_disk != self.current
        return disk or any(s.sha256 and s.sha256 != self.current_sha256 for s in self.served)


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]
    now: datetime
    warn_days: float
    crit_days: float
    current_expiry: dict[str, datetime] = field(default_factory=dict)  # per certificate
    history: history.History = field(default_factory=history.History)

    @property
    def state(self) -> int:
        if not self.checks:
            return UNKNOWN  # nothing to look at is a misconfigured check, not a healthy one
        return worst([c.state for c in self.checks])

    def count(self, state: int) -> int:
        return sum(1 for c in self.checks if c.state == state)


# ---------------------------------------------------------------- judging (pure)


def evaluate(check: Check, now: datetime, warn_days: float, crit_days: float) -> Check:
    states: list[int] = []
    reasons: list[str] = []

    def say(state: int, text: str) -> None:
        states.append(state)
        reasons.append(text)

    if check.disk_error:
        say(UNKNOWN, f"cannot read the host: {check.disk_error}")
    for s in check.served:
        if s.error or s.not_after is None:
            say(UNKNOWN, f"{s.name}: {s.error or 'no certificate seen'}")
            continue
        days = (s.not_after - now).total_seconds() / DAY
        when = f"{s.not_after:%Y-%m-%d %H:%M}Z"
        if days < 0:
            say(CRITICAL, f"{s.name}: served certificate EXPIRED on {when}")
        elif days < crit_days:
            say(CRITICAL, f"{s.name}: served certificate expires in {days:.1f} days ({when})")
        elif days < warn_days:
            say(WARNING, f"{s.name}: served certificate expires in {days:.1f} days ({when})")
        if s.revoked:
            say(CRITICAL, f"{s.name}: serves {s.version}, which was revoked ({s.revoked})")
        if s.chain_problem:  # not the deployed fullchain (crypto.same_chain)
            say(WARNING, f"{s.name}: served chain: {s.chain_problem}")
        if check.current_sha256 and s.sha256 != check.current_sha256:
            seen = s.version or f"an unknown certificate (sha256 {(s.sha256 or '')[:12]})"
            say(WARNING, f"{s.name}: serves {seen}, not the current {check.current}")
    if check.current is None:
        say(WARNING, "no version in the store yet (certfan issue or certfan import)")
    elif check.disk_error is None and check.on_disk != check.current:
        say(WARNING, f"on disk: {check.on_disk or 'nothing'}, current: {check.current}")
    if check.held and check.current and check.held != check.current:
        reasons.append(f"held on {check.held} by a rollback")
    return replace(check, state=worst(states), reasons=tuple(reasons))


# ---------------------------------------------------------------- collecting


def pairs(cfg: Config, certs: Sequence[str] = (), hosts: Sequence[str] = ()
          ) -> list[tuple[Host, list[str]]]:
    """The selected hosts (config order) with the selected certificates each receives."""
    for name in certs:
        cfg.certificate(name)
    for name in hosts:
        cfg.host(name)
    chosen = []
    for host in cfg.hosts.values():
        if hosts and host.name not in hosts:
            continue
        mine = [c.name for c in cfg.certificates.values()
                if host.name in c.hosts and (not certs or c.name in certs)]
        if mine:
            chosen.append((host, mine))
    if not chosen:
        raise ConfigError(str(cfg.path), "no host receives the selected certificate(s)",
                          key="certificates.deploy_to")
    return chosen


def collect(cfg: Config, store: Store, *, certs: Sequence[str] = (), hosts: Sequence[str] = (),
            connect: Connect = ssh.connect, prober: probe.ChainProber = probe.served_chain,
            now: datetime | None = None, warn_days: float = DEFAULT_WARN_DAYS,
            crit_days: float = DEFAULT_CRIT_DAYS) -> Report:
    """Look at every selected host (concurrently) and judge what it has."""
    now = now or datetime.now(UTC)
    selected = pairs(cfg, certs, hosts)
    names = sorted({c for _, mine in selected for c in mine})
    known: Known = {c: {r.sha256: r.version for r in store.versions(c)} for c in names}
    revoked = {c: revoked_versions(store, c) for c in names}
    current: Current = {c: store.current(c) for c in names}
    deploy = DeployState(cfg.state_dir)
    holds: Held = {c: Holds(cfg.state_dir).active(c, deploy) for c in names}
    policy = cfg.rollout
    certs_of = {h.name: mine for h, mine in selected}

    def job(host: Host) -> list[Check]:
        found = _look(host, certs_of[host.name], cfg, current, known, holds, connect, prober)
        return [replace(c, served=tuple(replace(s, revoked=revoked[c.cert].get(s.version or ""),
                chain_problem=store.chain_problem(c.cert, s.version, s.chain)) for s in c.served))
                for c in found]

    def budget(mine: list[str]) -> float:  # the disk read bounds a host: probes run alongside
        return policy.connect_timeout + policy.command_timeout * len(mine) + 2

    deadline = max(budget(mine) for _, mine in selected)
    looked = [h for h, _ in selected]
    done = dict(zip([h.name for h in looked], fanout.fan_out(
        looked, job, concurrency=policy.concurrency, deadline=deadline, name=lambda h: h.name),
        strict=True))
    checks: list[Check] = []
    for host, mine in selected:
        outcome = done[host.name]
        if outcome.ok and outcome.value is not None:
            found = outcome.value
        else:
            why = f"no answer within {deadline:g}s" if outcome.lost else repr(outcome.error)
            found = [_blank(host, c, current, holds, disk_error=why) for c in mine]
        checks += [evaluate(c, now, warn_days, crit_days) for c in found]
    expiry = {c: r.not_after for c, r in current.items() if r is not None}
    report = Report(tuple(checks), now, warn_days, crit_days, expiry, history.load(cfg.state_dir))
    notify.fire_expiring(cfg, notify.expiring_items(report), now=now)
    return report


Current = dict[str, Release | None]  # certificate -> the store's current version
Known = dict[str, dict[str, str]]  # certificate -> leaf sha256 -> stored version
Held = dict[str, dict[str, str]]  # certificate -> host -> version held on


def _blank(host: Host, cert: str, current: Current, holds: Held, *, on_disk: str | None = None,
           disk_error: str | None = None, served: tuple[Served, ...] = ()) -> Check:
    release = current[cert]
    return Check(host.name, cert, release.version if release else None,
                 release.sha256 if release else None, on_disk=on_disk, disk_error=disk_error,
                 served=served, held=holds[cert].get(host.name))


def _look(host: Host, certs: Sequence[str], cfg: Config, current: Current, known: Known,
          holds: Held, connect: Connect, prober: probe.ChainProber) -> list[Check]:
    """The disk read (SSH) and every name's TLS probe at once: a host cut off
    costs one connect timeout, not one more per name after the SSH attempt."""
    timeout = cfg.rollout.connect_timeout
    names = {c: _names(cfg, current, c) for c in certs}
    probes = [(c, n) for c in certs for n in names[c]]
    jobs: list[tuple[str, str] | None] = [None, *probes]  # None: the disk read

    def run(job: tuple[str, str] | None) -> Disks | Served:
        if job is None:
            return _on_disk(host, certs, cfg, current, connect)
        return _probe(host, job[1], known[job[0]], prober, timeout)

    limit = timeout + cfg.rollout.command_timeout * len(certs) + 1
    done = fanout.fan_out(jobs, run, concurrency=len(jobs), deadline=limit,
                          name=lambda j: f"{host.name}-{'disk' if j is None else j[1]}")
    first = done[0].value
    disks = first if isinstance(first, dict) else dict.fromkeys(certs, (None, done[0].why(limit)))
    seen: dict[tuple[str, str], Served] = {}
    for job, d in zip(probes, done[1:], strict=True):
        seen[job] = d.value if isinstance(d.value, Served) else Served(
            job[1], probe.sni_for(job[1]), error=d.why(limit))
    checks = []
    for cert in certs:
        served = tuple(seen[(cert, n)] for n in names[cert])
        on_disk, error = disks[cert]
        checks.append(_blank(host, cert, current, holds, on_disk=on_disk, disk_error=error,
                             served=served))
    return checks


Disks = dict[str, tuple[str | None, str | None]]  # cert -> (live pointer's version, or why not)


def _names(cfg: Config, current: Current, cert: str) -> tuple[str, ...]:
    release = current[cert]
    return tuple(dict.fromkeys(release.names if release else cfg.certificates[cert].domains))


def _on_disk(host: Host, certs: Sequence[str], cfg: Config, current: Current,
             connect: Connect) -> Disks:
    """Per certificate: (what the live pointer names, or why it is not known)."""
    found: dict[str, tuple[str | None, str | None]] = {}
    try:
        session = connect(host, timeout=cfg.rollout.connect_timeout)
    except CertfanError as exc:
        log.warning("%s", exc, extra={"host": host.name, "step": "connect"})  # names the host
        return dict.fromkeys(certs, (None, str(exc)))
    try:
        for cert in certs:
            release = current[cert]
            step = remote.plan_inspect(host, cert, release.version if release else "-")
            log.info("%s: %s: %s", host.name, step.name, step.summary,
                     extra={"host": host.name, "cert": cert, "step": step.name})
            try:
                result = session.run(step.argv, timeout=cfg.rollout.command_timeout)
            except CertfanError as exc:
                found[cert] = (None, str(exc))
                continue
            if not result.ok:
                found[cert] = (None, f"inspect: exit status {result.status}: {result.tail(3)}")
                continue
            found[cert] = (_pointer(remote.parse_inspect(result.stdout)), None)
    finally:
        session.close()
    return found


def _pointer(facts: remote.LiveFacts) -> str | None:
    if facts.live == remote.LIVE_LINK:
        return Path(facts.target or "").name or None
    if facts.live == remote.LIVE_DIR:
        return "certbot directory"
    if facts.live == remote.LIVE_OTHER:
        return "not a link or directory"
    return None


def _probe(host: Host, name: str, known: dict[str, str], prober: probe.ChainProber,
           timeout: float) -> Served:
    sni = probe.sni_for(name)
    try:
        leaf, chain = probe.leaf_and_chain(prober(host.probe, sni, timeout))
        facts = probe.facts_of(leaf)
    except ProbeError as exc:
        log.warning("%s: %s", host.name, exc, extra={"host": host.name, "step": "probe"})
        return Served(name, sni, error=str(exc))
    except ValueError as exc:
        return Served(name, sni, error=f"unparsable certificate: {exc}")
    log.info("%s: probe %s: sha256 %s..., expires %s", host.name, sni, facts.sha256[:16],
             facts.not_after.isoformat(), extra={"host": host.name, "step": "probe"})
    return Served(name, sni, facts.sha256, facts.not_after, facts.serial,
                  known.get(facts.sha256), chain=chain)
