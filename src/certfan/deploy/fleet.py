"""Roll a release out to a fleet: canary first, then the rest, halt, roll back.

Each host is taken through its steps (upload, flip, test, reload, prove, or
flip back) by :class:`certfan.hostrun.HostRun`, over one SSH connection.

Fleet policy (``RolloutPolicy``): the first ``canary`` hosts one at a time,
each fully proven; then the rest, ``concurrency`` at a time. Each failure
spends the budget; when more hosts failed than ``failure_budget`` allows, no
further host is started (``skipped: halted``) and, with ``rollback_on_halt``,
hosts this rollout moved to the new version are moved back.

Every host gets exactly one :class:`HostOutcome`: a host thread that raises
is reported as failed, and one that outlives its deadline is reported as
lost rather than waited for forever.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from certfan.config import Config, Host, RolloutPolicy
from certfan.deploy import plan as remote
from certfan.deploy import probe, ssh
from certfan.deploy.hostrun import (
    FAILED,
    SKIPPED,
    Connect,
    Event,
    HostOutcome,
    HostPlan,
    HostRun,
    Prober,
    Undo,
)
from certfan.deploy.plan import FileSpec
from certfan.errors import ConfigError, StoreError
from certfan.state.deploy import DeployState
from certfan.state.store import Release, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    outcomes: tuple[HostOutcome, ...]
    halted_by: HostOutcome | None = None  # the failure that spent the budget
    warnings: tuple[str, ...] = ()  # e.g. the deploy state could not be saved

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def release_files(release: Release) -> tuple[FileSpec, ...]:
    """Sizes and digests of the files to upload (the remote side checks them)."""
    specs = []
    for name in remote.RELEASE_FILES:
        path = release.file(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read release file: {exc}") from exc
        specs.append(FileSpec(name, len(data), hashlib.sha256(data).hexdigest(), path))
    return tuple(specs)


# ---------------------------------------------------------------- the fleet

T = TypeVar("T")
_SKIP = object()  # fan-out marker: never started, the rollout had halted
_LOST = object()  # fan-out marker: no result before the host's deadline


def host_deadline(policy: RolloutPolicy) -> float:
    """Upper bound of one host's run: every connect, command and proof at its limit."""
    return 2 * policy.connect_timeout + 10 * policy.command_timeout + 2 * policy.verify_timeout + 1


def push(
    targets: Sequence[tuple[Release, Sequence[Host]]],
    policy: RolloutPolicy,
    *,
    connect: Connect = ssh.connect,
    prober: Prober = probe.served_leaf,
    on_event: Callable[[Event], None] | None = None,
    deploy_state: DeployState | None = None,
) -> Report:
    """Roll each release out to its hosts, in order; one halt stops all that follow."""
    fleet = _Fleet(policy, connect, prober, on_event, deploy_state)
    outcomes: list[HostOutcome] = []
    for release, hosts in targets:
        outcomes += fleet.roll(release, tuple(hosts))
    return Report(tuple(outcomes), fleet.halted_by, tuple(fleet.warnings))


def rollout(
    hosts: Sequence[Host],
    release: Release,
    policy: RolloutPolicy,
    *,
    connect: Connect = ssh.connect,
    prober: Prober = probe.served_leaf,
    on_event: Callable[[Event], None] | None = None,
    deploy_state: DeployState | None = None,
) -> Report:
    """One release to ``hosts``: :func:`push` with a single target."""
    return push(
        [(release, hosts)],
        policy,
        connect=connect,
        prober=prober,
        on_event=on_event,
        deploy_state=deploy_state,
    )


def plan(
    targets: Sequence[tuple[Release, Sequence[Host]]],
    policy: RolloutPolicy,
    *,
    connect: Connect = ssh.connect,
    prober: Prober = probe.served_leaf,
) -> list[HostPlan]:
    """What push would do, per host; connects and reads, changes nothing."""
    fleet = _Fleet(policy, connect, prober, None, None)
    plans: list[HostPlan] = []
    for release, hosts in targets:
        plans += fleet.plan(release, tuple(hosts))
    return plans


class _Fleet:
    def __init__(
        self,
        policy: RolloutPolicy,
        connect: Connect,
        prober: Prober,
        on_event: Callable[[Event], None] | None,
        state: DeployState | None,
    ):
        self.policy = policy
        self.connect = connect
        self.prober = prober
        self.state = state
        self.failures = 0
        self.halted_by: HostOutcome | None = None
        self.warnings: list[str] = []
        self._on_event = on_event
        self._event_lock = threading.Lock()

    def emit(self, event: Event) -> None:
        if self._on_event is None:
            return
        with self._event_lock:  # host threads report concurrently; renderers need not lock
            try:
                self._on_event(event)
            except Exception:  # a display bug must not abort a host half-way
                log.exception("event callback failed on %s", event)

    def run_for(self, host: Host, release: Release, files: Sequence[FileSpec]) -> HostRun:
        return HostRun(
            host,
            release,
            self.policy,
            files,
            connect=self.connect,
            prober=self.prober,
            emit=self.emit,
        )

    def roll(self, release: Release, hosts: tuple[Host, ...]) -> list[HostOutcome]:
        files = release_files(release)
        runs = {h.name: self.run_for(h, release, files) for h in hosts}
        outcomes: dict[str, HostOutcome] = {}
        undo: dict[str, Undo] = {}
        self._save(lambda s: s.set_desired(release.cert, list(runs), release.version))

        def finish(host: Host, value: object) -> None:
            outcome, done = self._outcome_of(runs[host.name], value)
            outcomes[host.name] = outcome
            if done is not None:
                undo[host.name] = done
            self._record(outcome)

        canaries, rest = hosts[: self.policy.canary], hosts[self.policy.canary :]
        self.fan_out(canaries, 1, lambda h: runs[h.name].deploy(), finish)
        self.fan_out(rest, self.policy.concurrency, lambda h: runs[h.name].deploy(), finish)
        halted = self.halted_by
        if halted is not None and self.policy.rollback_on_halt and undo:
            why = f"rollout halted after {halted.host} failed at {halted.failed_step}"
            back = [h for h in hosts if h.name in undo]
            self.fan_out(
                back,
                self.policy.concurrency,
                lambda h: (runs[h.name].undo(undo[h.name], why), None),
                finish,
                stoppable=False,
            )
        return [outcomes[h.name] for h in hosts]

    def plan(self, release: Release, hosts: tuple[Host, ...]) -> list[HostPlan]:
        files = release_files(release)
        found: dict[str, HostPlan] = {}

        def finish(host: Host, value: object) -> None:
            if isinstance(value, HostPlan):
                found[host.name] = value
            else:
                why = "no answer before the deadline" if value is _LOST else repr(value)
                found[host.name] = HostPlan(host.name, release.cert, release.version, error=why)

        job = lambda h: self.run_for(h, release, files).plan()
        self.fan_out(hosts, self.policy.concurrency, job, finish, stoppable=False)
        return [found[h.name] for h in hosts]

    def _outcome_of(self, run: HostRun, value: object) -> tuple[HostOutcome, Undo | None]:
        if isinstance(value, tuple):
            return value  # type: ignore[return-value]
        if value is _SKIP:
            outcome = run.outcome(SKIPPED, error="not started: the rollout halted")
            outcome = replace(outcome, seconds=0.0)
        elif value is _LOST:
            outcome = run.outcome(
                FAILED,
                failed_step=run.step,
                error=f"no result within {host_deadline(self.policy):g}s; host state unknown",
            )
        else:
            outcome = run.outcome(
                FAILED, failed_step=run.step, error=f"internal error: {value!r}; host state unknown"
            )
        self.emit(Event(outcome.host, outcome.cert, "done", "done", outcome.result))
        return outcome, None

    def _record(self, outcome: HostOutcome) -> None:
        if outcome.result == FAILED:
            self.failures += 1
            if self.halted_by is None and self.failures > self.policy.failure_budget:
                self.halted_by = outcome
                log.error(
                    "rollout halted: %d failure(s), budget %d; last %s at %s",
                    self.failures,
                    self.policy.failure_budget,
                    outcome.host,
                    outcome.failed_step,
                )
        error = f"{outcome.failed_step}: {outcome.error}" if outcome.failed_step else outcome.error
        untouched = outcome.result == SKIPPED or outcome.failed_step in ("connect", "inspect")
        if untouched:  # what the host had is still what it has: keep the record
            self._save(lambda s: s.record(outcome.cert, outcome.host, error=error))
        else:  # serving None: the host's state is unknown now
            deployed = outcome.serving
            self._save(
                lambda s: s.record(outcome.cert, outcome.host, deployed=deployed, error=error)
            )

    def _save(self, change: Callable[[DeployState], None]) -> None:
        if self.state is None:
            return
        try:
            change(self.state)
        except StoreError as exc:  # the rollout itself stands; say the record is stale
            log.error("deploy state not saved: %s", exc)
            self.warnings.append(f"deploy state not saved: {exc}")

    def fan_out(
        self,
        hosts: Sequence[Host],
        concurrency: int,
        job: Callable[[Host], T],
        finish: Callable[[Host, object], None],
        *,
        stoppable: bool = True,
    ) -> None:
        """Run ``job`` per host, ``concurrency`` at a time; ``finish`` every host exactly once.

        ``finish`` gets the job's value, the exception it raised, _SKIP (not
        started because the rollout halted) or _LOST (past the host deadline;
        its thread is a daemon and its late result is dropped).
        """
        results: queue.Queue[tuple[str, object]] = queue.Queue()
        by_name = {h.name: h for h in hosts}
        pending = deque(hosts)
        running: dict[str, float] = {}
        limit = host_deadline(self.policy)

        def worker(host: Host) -> None:
            try:
                value: object = job(host)
            except BaseException as exc:  # reported as the host's outcome, never lost
                log.exception("%s: unexpected error", host.name)
                value = exc
            results.put((host.name, value))

        while pending or running:
            while pending and len(running) < max(1, concurrency):
                if stoppable and self.halted_by is not None:
                    break
                host = pending.popleft()
                running[host.name] = time.monotonic() + limit
                threading.Thread(
                    target=worker, args=(host,), name=f"certfan-{host.name}", daemon=True
                ).start()
            if stoppable and self.halted_by is not None:
                while pending:
                    finish(pending.popleft(), _SKIP)
            if not running:
                break
            try:
                name, value = results.get(
                    timeout=max(0.0, min(running.values()) - time.monotonic())
                )
            except queue.Empty:
                now = time.monotonic()
                for name, deadline in list(running.items()):
                    if deadline <= now:
                        del running[name]
                        finish(by_name[name], _LOST)
                continue
            if running.pop(name, None) is not None:
                finish(by_name[name], value)
            else:
                log.warning("%s: result arrived after its deadline; ignored", name)


# ---------------------------------------------------------------- selection


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
