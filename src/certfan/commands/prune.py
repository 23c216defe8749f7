"""Delete old certificate versions, locally and on the hosts; never what is in use.

Kept locally, per certificate: the ``keep`` newest versions, the current one
and the one before it (what a rollback goes back to), and every version the
deploy state or a hold says a host serves or should serve. Kept on a host: the
versions kept locally, the one its live pointer names and the one before that
on the host. Only directories named like versions are ever deleted on a host
(``archive/<cert>/0007-1a2b3c4d5e6f``); certbot's copies (``certbot-<n>``) and
anything else are left alone.

Decide, then act: :func:`plan_local` and :func:`plan_host` are pure; the host
side lists (read-only), the plan is made here, then one delete step names the
directories, and re-checks on the host that none of them is live.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from certfan import defaults
from certfan.config import Config, Host
from certfan.deploy import fanout, ssh
from certfan.deploy.hostrun import Connect, Session
from certfan.deploy.plan import parse_prune_list as parse_list
from certfan.deploy.plan import prune_delete as delete_step
from certfan.deploy.plan import prune_list as list_step
from certfan.errors import CertfanError, StoreError
from certfan.state.deploy import DeployState
from certfan.state.revocations import Holds
from certfan.state.store import VERSION_RE, Store

log = logging.getLogger(__name__)

DEFAULT_KEEP = defaults.PRUNE_KEEP
_VERSION = VERSION_RE


@dataclass(frozen=True)
class LocalPlan:
    cert: str
    keep: tuple[str, ...]
    delete: tuple[str, ...]


@dataclass(frozen=True)
class HostResult:
    host: str
    cert: str
    live: str | None = None
    deleted: tuple[str, ...] = ()  # deleted, or to delete on a dry run
    kept: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class PruneReport:
    local: tuple[LocalPlan, ...]
    hosts: tuple[HostResult, ...]
    dry_run: bool = False
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.errors and all(h.error is None for h in self.hosts)


# ---------------------------------------------------------------- plans (pure)


def _number(version: str) -> int:
    return int(version.split("-", 1)[0])


def plan_local(cert: str, versions: Sequence[str], current: str | None, in_use: Iterable[str],
               keep: int) -> LocalPlan:
    """``versions`` oldest first; keep the newest ``keep``, current, its predecessor, in-use."""
    ordered = sorted(versions, key=lambda v: (_number(v), v))
    kept = set(ordered[-keep:]) if keep > 0 else set()
    kept.update(v for v in in_use if v in ordered)
    if current in ordered:
        kept.add(current)
        older = [v for v in ordered if _number(v) < _number(current)]
        if older:
            kept.add(older[-1])
    return LocalPlan(cert, tuple(v for v in ordered if v in kept),
                     tuple(v for v in ordered if v not in kept))


def plan_host(listed: Sequence[str], live: str | None, keep: Iterable[str]) -> tuple[str, ...]:
    """Version directories on a host to delete: not kept, not live, not the one before live."""
    versions = sorted((v for v in listed if _VERSION.match(v)), key=lambda v: (_number(v), v))
    kept = set(keep)
    if live is not None:
        kept.add(live)
        if _VERSION.match(live):
            older = [v for v in versions if _number(v) < _number(live)]
            if older:
                kept.add(older[-1])
    return tuple(v for v in versions if v not in kept)


# ---------------------------------------------------------------- running


def prune(cfg: Config, store: Store, *, keep: int = DEFAULT_KEEP, certs: Sequence[str] = (),
          dry_run: bool = False, connect: Connect = ssh.connect) -> PruneReport:
    """Prune every selected certificate (default: all) locally, then on its hosts."""
    if keep < 1:
        raise StoreError(f"--keep must be at least 1, got {keep}")
    names = list(dict.fromkeys(certs)) or list(cfg.certificates)
    for name in names:
        cfg.certificate(name)
    plans = tuple(_plan(cfg, store, name, keep) for name in names)
    errors = [] if dry_run else _delete_local(store, plans)
    kept = {p.cert: set(p.keep) for p in plans}
    hosts = [cfg.hosts[h] for h in dict.fromkeys(h for n in names
                                                  for h in cfg.certificates[n].hosts)]

    def job(host: Host) -> list[HostResult]:
        mine = [n for n in names if host.name in cfg.certificates[n].hosts]
        return _prune_host(host, mine, kept, cfg, dry_run, connect)

    deadline = cfg.rollout.connect_timeout + 2 * cfg.rollout.command_timeout * len(names) + 1
    done = dict(zip([h.name for h in hosts], fanout.fan_out(
        hosts, job, concurrency=cfg.rollout.concurrency, deadline=deadline, name=lambda h: h.name),
        strict=True))
    results: list[HostResult] = []
    for host in hosts:
        outcome = done[host.name]
        if outcome.ok and outcome.value is not None:
            results += outcome.value
            continue
        why = (f"no answer within {deadline:g}s" if outcome.lost else str(outcome.error))
        results += [HostResult(host.name, n, error=why) for n in names
                    if host.name in cfg.certificates[n].hosts]
    return PruneReport(plans, tuple(results), dry_run, tuple(errors))


def _plan(cfg: Config, store: Store, cert: str, keep: int) -> LocalPlan:
    current = store.current(cert)
    deploy = DeployState(cfg.state_dir)
    in_use = set(Holds(cfg.state_dir).active(cert, deploy).values())
    for entry in deploy.get(cert).values():
        in_use.update(v for v in (entry.deployed, entry.desired) if v)
    versions = [r.version for r in store.versions(cert)]
    return plan_local(cert, versions, current.version if current else None, in_use, keep)


def _delete_local(store: Store, plans: Sequence[LocalPlan]) -> list[str]:
    errors = []
    for plan in plans:
        for version in plan.delete:
            try:
                store.delete(store.get(plan.cert, version))
            except StoreError as exc:
                errors.append(str(exc))
                log.error("%s", exc)
    return errors


def _prune_host(host: Host, certs: Sequence[str], kept: dict[str, set[str]], cfg: Config,
                dry_run: bool, connect: Connect) -> list[HostResult]:
    timeout = cfg.rollout.command_timeout
    results = []
    session = connect(host, timeout=cfg.rollout.connect_timeout)
    try:
        for cert in certs:
            step = list_step(host, cert)
            log.info("%s: %s: %s", host.name, step.name, step.summary,
                     extra={"host": host.name, "cert": cert, "step": step.name})
            listed = session.run(step.argv, timeout=timeout)
            if not listed.ok:
                results.append(HostResult(host.name, cert, error=f"list: exit status "
                                          f"{listed.status}: {listed.tail(3)}"))
                continue
            live, dirs = parse_list(listed.stdout)
            doomed = plan_host(dirs, live, kept[cert])
            result = HostResult(host.name, cert, live, doomed,
                                tuple(d for d in dirs if d not in doomed))
            if doomed and not dry_run:
                result = _delete_on(session, host, cert, doomed, timeout, result)
            results.append(result)
    finally:
        session.close()
    return results


def _delete_on(session: Session, host: Host, cert: str, doomed: Sequence[str],
               timeout: float, result: HostResult) -> HostResult:
    step = delete_step(host, cert, doomed)
    log.info("%s: %s: %s", host.name, step.name, step.summary,
             extra={"host": host.name, "cert": cert, "step": step.name})
    try:
        done = session.run(step.argv, timeout=timeout)
    except CertfanError as exc:
        return HostResult(host.name, cert, result.live, (), result.kept, error=f"delete: {exc}")
    gone = tuple(line.split(" ", 1)[1] for line in done.stdout.decode().splitlines()
                 if line.startswith("deleted "))
    if not done.ok:
        return HostResult(host.name, cert, result.live, gone, result.kept,
                          error=f"delete: exit status {done.status}: {done.tail(3)}")
    return HostResult(host.name, cert, result.live, gone, result.kept)
