"""What the commands share: the collaborators they talk through, and the fleet bookkeeping.

:class:`Tools` carries the CA client, the DNS publisher, the SSH connect and
the TLS prober, so a test hands in its own; the CA code is imported only
when a command asks the CA something (``push`` and ``rollback`` never do, and
a ``renew`` whose ARI answers are all remembered does not either: see
:class:`LazyAcme`), and the SSH and rollout code only when a rollout starts.
:func:`catch_up` finds hosts behind their certificate's current version from
local files only; :func:`note_rollout` records finished rollouts for status.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from certfan.config import Config, Host, RolloutPolicy
from certfan.deploy.model import Connect, Prober, default_connect, default_prober
from certfan.state import history
from certfan.state.deploy import DeployState, hosts_behind
from certfan.state.revocations import Holds
from certfan.state.store import Release, Store

if TYPE_CHECKING:
    from certfan.deploy import fleet, hostrun
    from certfan.issue.acme import AcmeClient, Dns01Publisher
    from certfan.issue.due import AriWindow

log = logging.getLogger(__name__)

Targets = Sequence[tuple[Release, Sequence[Host]]]


@dataclass(frozen=True)
class Tools:
    """The collaborators an operation talks through; tests hand in their own.

    ``stop``, when set (the CLI sets it on Ctrl-C or SIGTERM), makes a rollout
    start no further host; the hosts in flight finish or roll back.
    """

    acme: AcmeClient | None = None
    dns: Dns01Publisher | None = None
    connect: Connect = default_connect  # ssh.connect, imported on the first connection
    prober: Prober = default_prober  # probe.served_leaf, likewise
    on_event: Callable[[hostrun.Event], None] | None = None
    stop: Stop | None = None

    def acme_for(self, cfg: Config) -> AcmeClient:
        if self.acme is not None:
            return self.acme
        from certfan.issue.acme import client_for  # the one ACME client factory

        return client_for(cfg)

    def ari_for(self, cfg: Config) -> LazyAcme:
        """The CA as the due check sees it, built (and the ACME code imported) on first use."""
        return LazyAcme(cfg, self)

    def push(self, cfg: Config, targets: Targets,
             policy: RolloutPolicy | None = None) -> fleet.Report:
        """Each release under ``policy``, else under its certificate's own (rollout_for).

        Releases that share a policy go out as one rollout, where one halt stops
        all that follow; a certificate with a policy of its own is rolled out,
        and halts, on its own."""
        from certfan.deploy import fleet

        runs: list[tuple[RolloutPolicy, list[tuple[Release, Sequence[Host]]]]] = []
        for release, hosts in targets:
            own = policy or cfg.rollout_for(release.cert)
            same = [run for run in runs if run[0] == own]
            if same:
                same[0][1].append((release, hosts))
            else:
                runs.append((own, [(release, hosts)]))
        reports: list[fleet.Report] = []
        with self.stop.rollout() if self.stop else nullcontext(None) as stop:
            for own, part in runs or [(policy or cfg.rollout, [])]:
                reports.append(fleet.push(part, own, connect=self.connect,
                                          prober=self.prober, on_event=self.on_event,
                                          deploy_state=DeployState(cfg.state_dir),
                                          stop=stop.is_set if stop else None))
        if len(reports) == 1:
            return reports[0]
        return fleet.Report(tuple(o for r in reports for o in r.outcomes),
                            next((r.halted_by for r in reports if r.halted_by), None),
                            tuple(w for r in reports for w in r.warnings))

    def plan(self, cfg: Config, targets: Targets) -> list[hostrun.HostPlan]:
        from certfan.deploy import fleet

        return fleet.plan(targets, cfg.rollout, connect=self.connect, prober=self.prober)


class LazyAcme:
    """The CA client of ``tools`` for ``cfg``, made on first use (an ``AriSource``).

    Whether the CA offers ARI comes from the directory cache while it is fresh
    (what the client itself would answer), so a run whose ARI windows are all
    remembered and not yet due for a fetch imports no ACME, JOSE or HTTP code.
    """

    def __init__(self, cfg: Config, tools: Tools) -> None:
        self.cfg, self.tools = cfg, tools
        self._client: AcmeClient | None = tools.acme

    def client(self) -> AcmeClient:
        if self._client is None:
            self._client = self.tools.acme_for(self.cfg)
        return self._client

    @property
    def supports_ari(self) -> bool:
        if self._client is None:
            from certfan.issue.acmestate import DIRECTORY_CACHE_TTL, CaState

            cached = CaState(self.cfg.state_dir, self.cfg.acme.directory).cached_ari(
                DIRECTORY_CACHE_TTL)
            if cached is not None:
                return cached
        return self.client().supports_ari

    def renewal_info(self, cert_pem: bytes) -> AriWindow | None:
        return self.client().renewal_info(cert_pem)


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


class Stop:
    """A request to stop, set from outside (the CLI: Ctrl-C or SIGTERM).

    During a rollout it means: start no further host; hosts in flight finish
    or roll back within their deadlines. ``rolling`` tells whoever sets it
    whether a rollout is under way to honour it (outside one the CLI stops
    the run at once).
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self._rolling = 0
        self._guard = threading.Lock()

    @property
    def rolling(self) -> bool:
        return self._rolling > 0

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    @contextmanager
    def rollout(self) -> Iterator[threading.Event]:
        with self._guard:
            self._rolling += 1
        try:
            yield self.event
        finally:
            with self._guard:
                self._rolling -= 1
