"""reissue: the emergency path. A fresh key, an order now, every host of the
certificate (canary first unless told otherwise), then, once every host is
proven to serve the new one, the previous certificate revoked."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from certfan.commands import notify
from certfan.commands.tools import Tools, note_rollout
from certfan.config import Config
from certfan.deploy import fleet
from certfan.errors import CertfanError, ConfigError, StoreError
from certfan.issue import order
from certfan.issue.acme import AcmeClient
from certfan.state.revocations import DEFAULT_REASON, REVOCATION_REASONS, Holds, record_revoked
from certfan.state.store import Release, Store

log = logging.getLogger(__name__)


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
            revoke_old: bool = False, reason: str = DEFAULT_REASON,
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
    own = cfg.rollout_for(cert.name)
    policy = own if canary else replace(own, canary=0)
    hosts = tuple(cfg.hosts[h] for h in cert.hosts)
    log.info("%s: reissued as %s; rolling out to %d host(s)%s", cert.name, release.version,
             len(hosts), "" if canary else " without a canary", extra={"cert": cert.name})
    report = tools.push(cfg, [(release, hosts)], policy)
    note_rollout(cfg, store, report)
    notify.fire(cfg, notify.rollout_notice("reissue", report))
    result = ReissueReport(release, previous, report, revoke_requested=revoke_old)
    if not revoke_old:
        return result
    if previous is None:
        return replace(result, revoke_error="there was no previous certificate")
    if not report.ok:
        late = [o.host for o in report.outcomes if not o.ok]
        return replace(result, revoke_error=f"not revoked: {', '.join(late)} may still serve "
                       f"{previous.version}")
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
    record_revoked(store, release, reason)
