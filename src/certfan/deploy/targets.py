"""Which release goes to which hosts: the selection push and the CLI's options make."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from certfan.config import Config, Host
from certfan.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from certfan.state.store import Release, Store

log = logging.getLogger(__name__)


def select_targets(
    cfg: Config,
    store: Store,
    *,
    certs: Sequence[str] = (),
    hosts: Sequence[str] = (),
    groups: Sequence[str] = (),
) -> list[tuple[Release, tuple[Host, ...]]]:
    """Each selected certificate's current release and the selected hosts receiving it.

    No certificate named: all of them. No host or group named: every host a
    certificate is deployed to. Unknown names raise ConfigError (exit 2), and
    so does a named host that receives none of the selected certificates.
    """
    for name in certs:
        cfg.certificate(name)
    chosen: set[str] | None = None
    if hosts or groups:
        chosen = {cfg.host(name).name for name in hosts}
        for group in groups:
            if group not in cfg.groups:
                raise ConfigError(str(cfg.path), f"unknown group {group!r}", key="groups")
            chosen.update(cfg.groups[group])
    names = list(dict.fromkeys(certs)) or list(cfg.certificates)
    receiving: set[str] = set()
    targets: list[tuple[Release, tuple[Host, ...]]] = []
    for name in names:
        cert = cfg.certificates[name]
        picked = [h for h in cert.hosts if chosen is None or h in chosen]
        receiving.update(picked)
        if not picked:
            continue
        release = store.current(name)
        if release is None:
            if name in certs:
                raise StoreError(f"{name}: no stored release to push (run `certfan issue {name}`)")
            log.warning("%s: no stored release yet; not pushed", name)
            continue
        targets.append((release, tuple(cfg.hosts[h] for h in picked)))
    idle = sorted((chosen or set()) - receiving)
    if idle:
        raise ConfigError(
            str(cfg.path),
            f"host {', '.join(idle)} receives none of the certificates {', '.join(names)}",
            key="certificates.deploy_to",
        )
    return targets
