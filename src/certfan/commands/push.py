"""push: the current version of the selected certificates to the selected hosts.

:func:`select` names what would go where (unknown names are a ConfigError),
:func:`dry_run` connects and reads to show each host's steps, :func:`push`
rolls out and records the result for status. The CLI holds the run lock.
"""

from __future__ import annotations

from collections.abc import Sequence

from certfan.commands import notify
from certfan.commands.tools import Tools, note_rollout
from certfan.config import Config, Host
from certfan.deploy import fleet
from certfan.deploy.hostrun import HostPlan
from certfan.state.store import Release, Store

Selection = list[tuple[Release, tuple[Host, ...]]]


def select(cfg: Config, store: Store, *, certs: Sequence[str] = (), hosts: Sequence[str] = (),
           groups: Sequence[str] = ()) -> Selection:
    """Each selected certificate's current release and its selected hosts (empty: nothing)."""
    return fleet.select_targets(cfg, store, certs=certs, hosts=hosts, groups=groups)


def dry_run(cfg: Config, targets: Selection, tools: Tools | None = None) -> list[HostPlan]:
    """What a push would do on each host; connects and reads, changes nothing."""
    return (tools or Tools()).plan(cfg, targets)


def push(cfg: Config, store: Store, targets: Selection, tools: Tools | None = None
         ) -> fleet.Report:
    """Roll ``targets`` out under the fleet policy; record for monitoring what finished."""
    report = (tools or Tools()).push(cfg, targets)
    note_rollout(cfg, store, report)
    notify.fire(cfg, notify.rollout_notice("push", report))
    return report
