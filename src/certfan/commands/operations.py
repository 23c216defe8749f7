"""What a timer or an operator runs: renew, reissue, rollback, import.

    renew     due-ness (the CA only when ARI asks for it) -> issue the due ones
              -> roll out to every host that is behind: the new versions, and
              hosts that missed or failed an earlier rollout (deploy state)
    reissue   fresh key, order now -> every host of the certificate, canary
              first -> revoke the previous certificate once all serve the new one
    rollback  the previous version to some or all hosts (a push of it: same
              upload, flip, test, reload, proof)
    import    adopt a key and fullchain (what certbot left) as a new current version

Nothing here takes the run lock (the CLI does, see lock.py), prints or exits.
A run that has nothing to do reads local files only: due-ness comes from the
store and the cached ACME directory, "every host is current" from the deploy
state, so it needs neither the CA, nor DNS, nor SSH.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from certfan.config import Config, Host, RolloutPolicy
from certfan.deploy import fleet, hostrun, probe, ssh
from certfan.errors import CertfanError, ConfigError, StoreError
from certfan.issue import crypto, order
from certfan.issue.acme import AcmeClient, Dns01Publisher
from certfan.state import fsutil, history
from certfan.state.deploy import DeployState, hosts_behind
from certfan.state.store import Release, Store

log = logging.getLogger(__name__)

# Whether the CA offers ARI changes about never; a day-old answer is fine and
# spares a no-op run the directory request.
DIRECTORY_CACHE_TTL = 24 * 3600.0

# RFC 5280 section 5.3.1 codes that ACME CAs accept from subscribers.
REVOCATION_REASONS = {
    "unspecified": 0,
    "keyCompromise": 1,
    "affiliationChanged": 3,
    "superseded": 4,
    "cessationOfOperation": 5,
}


@dataclass(frozen=True)
class Tools:
    """The collaborators an operation talks through; tests hand in their own."""

    acme: AcmeClient | None = None
    dns: Dns01Publisher | None = None
    connect: hostrun.Connect = ssh.connect
    prober: hostrun.Prober = probe.served_leaf
    on_event: Callable[[hostrun.Event], None] | None = None

    def acme_for(self, cfg: Config) -> AcmeClient:
        if self.acme is not None:
            return self.acme
        return AcmeClient(cfg.acme, cfg.state_dir, directory_cache_ttl=DIRECTORY_CACHE_TTL)

    def push(self, cfg: Config, targets: Sequence[tuple[Release, Sequence[Host]]],
             policy: RolloutPolicy | None = None) -> fleet.Report:
        return fleet.push(targets, policy or cfg.rollout, connect=self.connect,
                            prober=self.prober, on_event=self.on_event,
                            deploy_state=DeployState(cfg.state_dir))


# ---------------------------------------------------------------- holds


class Holds:
    """Hosts a rollback of only some hosts left on an older version, per certificate.

    ``renew`` does not bring a held host forward (that would undo the rollback
    at the next timer run); the hold ends when a new version of the
    certificate is issued, when every host is rolled back, or when the host is
    no longer on the held version (a push moved it). ``<state>/holds.json``.
    """

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / "holds.json"

    def get(self, cert: str) -> dict[str, str]:
        return dict(self._read().get(cert, {}))

    def active(self, cert: str, deploy: DeployState) -> dict[str, str]:
        """The holds still in force: the host is (still) on the held version."""
        recorded = deploy.get(cert)
        return {host: version for host, version in self.get(cert).items()
                if host in recorded and recorded[host].deployed == version}

    def hold(self, cert: str, hosts: Sequence[str], version: str) -> None:
        doc = self._read()
        doc.setdefault(cert, {}).update(dict.fromkeys(hosts, version))
        self._write(doc)

    def clear(self, cert: str) -> None:
        doc = self._read()
        if doc.pop(cert, None) is not None:
            self._write(doc)

    def _read(self) -> dict[str, dict[str, str]]:
        doc = fsutil.read_json(self.path, "holds")
        if doc is None:
            return {}
        if not isinstance(doc, dict):
            raise StoreError(f"{self.path}: invalid holds file")
        return {str(c): {str(h): str(v) for h, v in hosts.items()} for c, hosts in doc.items()}

    def _write(self, doc: dict[str, dict[str, str]]) -> None:
        try:
            fsutil.ensure_dir(self.path.parent)
            fsutil.atomic_write(self.path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot write holds: {exc}") from exc


@dataclass(frozen=True)
class CatchUp:
    targets: list[tuple[Release, tuple[Host, ...]]]  # current release -> hosts behind on it
    held: list[tuple[str, str, str]]  # (cert, host, version) left alone: held by a rollback


def catch_up(cfg: Config, store: Store) -> CatchUp:
    """Each certificate's current release and its hosts not known to serve it, held ones aside.

    Local files only (store, deploy state, holds): this is what lets a run with
    nothing to do skip SSH entirely.
    """
    deploy, holds = DeployState(cfg.state_dir), Holds(cfg.state_dir)
    found = CatchUp([], [])
    for cert, names in hosts_behind(cfg, store, deploy).items():
        held = holds.active(cert, deploy)
        found.held.extend((cert, h, held[h]) for h in names if h in held)
        late = [h for h in names if h not in held]
        release = store.current(cert)
        if late and release is not None:
            found.targets.append((release, tuple(cfg.hosts[h] for h in late)))
    return found


def note_rollout(cfg: Config, store: Store, report: fleet.Report) -> None:
    """Record, for monitoring, each certificate whose whole fleet now serves its current version."""
    behind = hosts_behind(cfg, store, DeployState(cfg.state_dir))
    done = []
    for cert in dict.fromkeys(o.cert for o in report.outcomes):
        release = store.current(cert)
        mine = [o for o in report.outcomes if o.cert == cert]
        if release and cert not in behind and all(o.ok for o in mine):
            done.append((cert, release.version))
    history.record_rollouts(cfg.state_dir, done)


# ---------------------------------------------------------------- renew


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


# ---------------------------------------------------------------- reissue


@dataclass(frozen=True)
class ReissueReport:
    release: Release  # the new version
    previous: Release | None  # what was current before
    rollout: fleet.Report
    revoke_requested: bool
    revoked: bool = False
    revoke_error: str | None = None  # why the previous certificate is not revoked

    @property
    def ok(self) -> bool:
        return self.rollout.ok and (self.revoked or not self.revoke_requested)


def reissue(cfg: Config, store: Store, cert_name: str, tools: Tools | None = None, *,
            revoke_old: bool = False, reason: str = "superseded",
            canary: bool = True) -> ReissueReport:
    """Fresh key, new order now, every host of the certificate; then revoke the old one.

    The previous certificate is revoked only when every host is proven to
    serve the new one: revoking earlier would break the hosts still on it.
    """
    tools = tools or Tools()
    if reason not in REVOCATION_REASONS:
        raise ConfigError(str(cfg.path), f"unknown revocation reason {reason!r} "
                          f"(one of {', '.join(REVOCATION_REASONS)})")
    cert = cfg.certificate(cert_name)
    previous = store.current(cert.name)
    acme = tools.acme_for(cfg)
    fresh = replace(cert, reuse_key=False)  # the point is a key that never leaked
    release = order.issue(cfg, fresh, store, acme=acme, dns=tools.dns)
    Holds(cfg.state_dir).clear(cert.name)
    policy = cfg.rollout if canary else replace(cfg.rollout, canary=0)
    hosts = tuple(cfg.hosts[h] for h in cert.hosts)
    log.info("%s: reissued as %s; rolling out to %d host(s)%s", cert.name, release.version,
             len(hosts), "" if canary else " without a canary", extra={"cert": cert.name})
    report = tools.push(cfg, [(release, hosts)], policy)
    note_rollout(cfg, store, report)
    result = ReissueReport(release, previous, report, revoke_requested=revoke_old)
    if not revoke_old:
        return result
    if previous is None:
        return replace(result, revoke_error="there was no previous certificate")
    if not report.ok:
        late = [o.host for o in report.outcomes if not o.ok]
        return replace(result, revoke_error=f"not revoked: {', '.join(late)} may still serve it")
    try:
        revoke(acme, store, previous, reason)
    except CertfanError as exc:
        return replace(result, revoke_error=str(exc))
    return replace(result, revoked=True)


def revoke(acme: AcmeClient, store: Store, release: Release, reason: str) -> None:
    """Revoke a stored certificate; keyCompromise is signed with the certificate's key."""
    try:
        cert_pem = release.file("cert.pem").read_bytes()
        key_pem = release.file("privkey.pem").read_bytes() if reason == "keyCompromise" else None
    except OSError as exc:
        raise StoreError(f"{release.path}: cannot read the certificate to revoke: {exc}") from exc
    acme.revoke(cert_pem, REVOCATION_REASONS[reason], key_pem=key_pem)
    log.info("%s: revoked %s (serial %s, %s)", release.cert, release.version, release.serial,
             reason, extra={"cert": release.cert})
    _record_revoked(store, release, reason)


def revoked_versions(store: Store, cert: str) -> dict[str, str]:
    """Versions certfan revoked: version -> reason (``<state>/certs/<cert>/revoked.json``)."""
    path = store.cert_dir(cert) / "revoked.json"
    doc = fsutil.read_json(path, "revocations") or {}
    return {str(v): str(entry.get("reason")) for v, entry in doc.items()}


def _record_revoked(store: Store, release: Release, reason: str) -> None:
    path = store.cert_dir(release.cert) / "revoked.json"
    try:
        doc = json.loads(path.read_text()) if path.exists() else {}
        doc[release.version] = {"reason": reason, "serial": release.serial,
                                "at": datetime.now(UTC).isoformat()}
        fsutil.atomic_write(path, json.dumps(doc, indent=2).encode() + b"\n")
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: revoked at the CA, but cannot record it: {exc}") from exc


# ---------------------------------------------------------------- rollback


@dataclass(frozen=True)
class RollbackReport:
    release: Release  # the version the hosts were pointed back at
    replaced: Release  # the version that was current
    rollout: fleet.Report
    whole_fleet: bool  # every host of the certificate was selected
    activated: bool = False  # the store's current version is now ``release``
    held: tuple[str, ...] = ()


def rollback(cfg: Config, store: Store, cert_name: str, hosts: Sequence[str] = (),
             tools: Tools | None = None) -> RollbackReport:
    """Point ``hosts`` (default: all of the certificate's) back at the previous version.

    All hosts: the previous version becomes current in the store again, so no
    later run rolls the fleet forward to the version just rolled back. Some
    hosts: they are held on the previous version until a new one is issued.
    """
    tools = tools or Tools()
    cert = cfg.certificate(cert_name)
    current = store.current(cert.name)
    target = store.previous(cert.name)
    if current is None or target is None:
        raise StoreError(f"{cert.name}: no previous version to roll back to "
                         f"({len(store.versions(cert.name))} version(s) stored)")
    revoked = revoked_versions(store, cert.name)
    if target.version in revoked:
        raise StoreError(f"{cert.name}: the previous version {target.version} was revoked "
                         f"({revoked[target.version]}); not rolling back to it "
                         f"(`certfan reissue {cert.name}` makes a new one)")
    for name in hosts:
        if cfg.host(name).name not in cert.hosts:
            raise ConfigError(str(cfg.path), f"host {name!r} does not receive {cert.name}",
                              key="certificates.deploy_to")
    chosen = [h for h in cert.hosts if not hosts or h in hosts]
    whole = set(chosen) == set(cert.hosts)
    log.info("%s: rolling %s back from %s to %s", cert.name, ", ".join(chosen), current.version,
             target.version, extra={"cert": cert.name})
    report = tools.push(cfg, [(target, tuple(cfg.hosts[h] for h in chosen))])
    result = RollbackReport(target, current, report, whole_fleet=whole)
    moved = tuple(o.host for o in report.outcomes if o.ok)
    if whole and moved:
        store.activate(target)
        Holds(cfg.state_dir).clear(cert.name)
        note_rollout(cfg, store, report)
        return replace(result, activated=True)
    if moved:
        Holds(cfg.state_dir).hold(cert.name, moved, target.version)
    return replace(result, held=moved)


# ---------------------------------------------------------------- import


@dataclass(frozen=True)
class Imported:
    release: Release
    warnings: tuple[str, ...] = field(default_factory=tuple)


def import_cert(cfg: Config, store: Store, cert_name: str, key_file: Path,
                fullchain_file: Path, *, now: datetime | None = None) -> Imported:
    """Store an existing key and fullchain as a new current version of ``cert_name``."""
    cert = cfg.certificate(cert_name)
    try:
        key_pem = Path(key_file).read_bytes()
    except OSError as exc:
        raise StoreError(f"{key_file}: cannot read the key: {exc.strerror or exc}") from exc
    try:
        fullchain_pem = Path(fullchain_file).read_bytes()
    except OSError as exc:
        raise StoreError(f"{fullchain_file}: cannot read the fullchain: "
                         f"{exc.strerror or exc}") from exc
    try:
        key_type = crypto.key_type_of(crypto.load_key(key_pem))
    except CertfanError as exc:
        raise StoreError(f"{key_file}: {exc}") from exc
    release = store.save(cert.name, key_pem, fullchain_pem, order_url=None, key_type=key_type)
    store.activate(release)
    Holds(cfg.state_dir).clear(cert.name)
    warnings = []
    wanted = {d.lower() for d in cert.domains}
    if set(release.names) != wanted:
        warnings.append(f"it names {', '.join(release.names)}, the config {', '.join(cert.domains)}:"
                        " the next renew replaces it")
    if key_type != cert.key_type:
        warnings.append(f"its key is {key_type}, the config says {cert.key_type}: "
                        "the next renew replaces it")
    if release.not_after <= (now or datetime.now(UTC)):
        warnings.append(f"it expired on {release.not_after:%Y-%m-%d %H:%M}Z")
    log.info("%s: imported %s as %s (serial %s)", cert.name, fullchain_file, release.version,
             release.serial, extra={"cert": cert.name})
    return Imported(release, tuple(warnings))
