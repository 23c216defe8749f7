"""rollback: the previous version to some or all of a certificate's hosts, as a
push of it (same upload, flip, test, reload, proof)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from certfan.commands.tools import Tools, note_rollout
from certfan.config import Config
from certfan.deploy import fleet
from certfan.errors import ConfigError, StoreError
from certfan.state.revocations import Holds, revoked_versions
from certfan.state.store import Release, Store

log = logging.getLogger(__name__)


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
