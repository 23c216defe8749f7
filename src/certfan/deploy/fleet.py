"""Roll a release out to a fleet: canary first, every other host staged meanwhile.

Each host is taken through its steps by :class:`certfan.deploy.hostrun.HostRun`
over one SSH connection, all on the one fan-out (fanout.py).

The wave: every host connects at once (``concurrency`` at a time). The canary
(the first host in order, see policy.retried_first) does its whole exchange
and is proven; meanwhile every other host connects and stages the version
(nothing live changes). A canary that cannot be reached hands its role to the
next staged host. Once ``canary`` hosts are proven, the staged hosts only
flip, test, reload and prove. A rejected canary leaves every other live
pointer where it was (their staged directories are left for prune).

Failures are classified and judged by policy.py: rejected hosts spend the
failure budget, unreachable ones only the unreachable guard; only a spent
failure budget moves hosts back (``rollback_on_halt``), and never to a
version that is revoked or about to expire. Every host gets exactly one
:class:`HostOutcome`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from certfan.config import Host, RolloutPolicy
from certfan.deploy import plan as remote
from certfan.deploy import policy as rules
from certfan.deploy.fanout import Done, DoneKind, fan_out
from certfan.deploy.hostrun import HostRun
from certfan.deploy.model import (
    DEPLOYED,
    FAILED,
    INTERRUPTED,
    SKIPPED,
    Connect,
    Event,
    Failure,
    HostOutcome,
    HostPlan,
    Prober,
    Undo,
    default_connect,
    default_prober,
)
from certfan.deploy.plan import FileSpec
from certfan.deploy.targets import select_targets
from certfan.errors import CertfanError, StoreError
from certfan.state import fsutil

if TYPE_CHECKING:
    from certfan.state.deploy import DeployState, HostDeploy
    from certfan.state.store import Release

log = logging.getLogger(__name__)

Result = tuple[HostOutcome, Undo | None]
__all__ = ["Report", "plan", "push", "release_files", "select_targets"]


@dataclass(frozen=True)
class Report:
    outcomes: tuple[HostOutcome, ...]
    halted_by: HostOutcome | None = None  # the failure that spent the budget
    warnings: tuple[str, ...] = ()  # held forward, deploy state not saved, ...

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


def release_files(release: Release) -> tuple[tuple[FileSpec, ...], bytes]:
    """The files to upload (sizes and digests the remote side checks) and stdin for them."""
    contents = {}
    for name in remote.RELEASE_FILES:
        path = release.file(name)
        try:
            contents[name] = path.read_bytes()
        except OSError as exc:
            raise StoreError(f"{path}: cannot read release file: {exc}") from exc
    return remote.release_specs(release, contents), b"".join(contents.values())


def host_deadline(policy: RolloutPolicy) -> float:
    """Upper bound of one host's exchange: connects, execs and proofs at their limits."""
    exec_limit = 2 * policy.command_timeout + policy.verify_timeout
    return 2 * policy.connect_timeout + 3 * exec_limit + 3 * policy.verify_timeout + 1


def push(
    targets: Sequence[tuple[Release, Sequence[Host]]],
    policy: RolloutPolicy,
    *,
    connect: Connect = default_connect,
    prober: Prober = default_prober,
    on_event: Callable[[Event], None] | None = None,
    deploy_state: DeployState | None = None,
    stop: Callable[[], bool] | None = None,
) -> Report:
    """Roll each release out to its hosts, in order; one halt stops all that follow.

    ``stop`` true (the CLI: Ctrl-C or SIGTERM): no further host is started or
    flipped (``skipped: interrupted``); hosts in flight finish or roll back."""
    fleet = _Fleet(policy, connect, prober, on_event, deploy_state, stop)
    outcomes: list[HostOutcome] = []
    for release, hosts in targets:
        outcomes += fleet.roll(release, tuple(hosts))
    return Report(tuple(outcomes), fleet.halted_by, tuple(fleet.warnings))


def plan(
    targets: Sequence[tuple[Release, Sequence[Host]]],
    policy: RolloutPolicy,
    *,
    connect: Connect = default_connect,
    prober: Prober = default_prober,
) -> list[HostPlan]:
    """What push would do, per host; connects and reads, changes nothing."""
    plans: list[HostPlan] = []
    for release, hosts in targets:
        files, _ = release_files(release)
        runs = [HostRun(h, release, policy, files, b"", connect=connect, prober=prober,
                        emit=lambda e: None) for h in hosts]
        done = fan_out(runs, HostRun.plan, concurrency=policy.concurrency,
                       deadline=host_deadline(policy), name=lambda r: r.host.name)
        plans += [d.value if d.ok and d.value else HostPlan(
            r.host.name, release.cert, release.version, error=d.why(host_deadline(policy)))
            for r, d in zip(runs, done, strict=True)]
    return plans


class _Gate:
    """The canary gate: staged hosts wait here until enough canaries are proven."""

    GO, CANARY, STOP = "go", "canary", "stop"

    def __init__(self, needed: int, first_busy: bool):
        self.needed = needed
        self.proven = 0
        self.busy = first_busy  # a canary is at work
        self.shut = False
        self.waiting: set[int] = set()
        self.cond = threading.Condition()

    @property
    def open(self) -> bool:
        return self.proven >= self.needed

    def wait(self, index: int, deadline: float) -> str:
        with self.cond:
            self.waiting.add(index)
            try:
                while True:
                    if self.open:
                        return self.GO
                    if self.shut:
                        return self.STOP
                    if not self.busy and index == min(self.waiting):
                        self.busy = True
                        return self.CANARY
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return self.STOP
                    self.cond.wait(left)
            finally:
                self.waiting.discard(index)

    def report(self, outcome: HostOutcome | None) -> None:
        with self.cond:
            self.busy = False
            if outcome is not None and outcome.ok:
                self.proven += 1
            elif outcome is None or outcome.failure is not Failure.UNREACHABLE:
                self.shut = True  # a rejected canary: nothing else is touched
            self.cond.notify_all()


class _Fleet:
    def __init__(
        self,
        policy: RolloutPolicy,
        connect: Connect,
        prober: Prober,
        on_event: Callable[[Event], None] | None,
        state: DeployState | None,
        stop: Callable[[], bool] | None = None,
    ):
        self.stopped = stop or (lambda: False)
        self.policy = policy
        self.connect = connect
        self.prober = prober
        self.state = state
        self.halted_by: HostOutcome | None = None
        self.rollback = False  # the halt was the failure budget: move flipped hosts back
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

    def roll(self, release: Release, hosts: tuple[Host, ...]) -> list[HostOutcome]:
        files, stdin = release_files(release)
        given = hosts
        if self.state is not None:
            hosts = rules.retried_first(hosts, self._recorded(release.cert))
        runs = [HostRun(h, release, self.policy, files, stdin, connect=self.connect,
                        prober=self.prober, emit=self.emit) for h in hosts]
        self._save(lambda s: s.set_desired(release.cert, [h.name for h in hosts],
                                           release.version))
        canaries = min(self.policy.canary, len(hosts))
        gate = _Gate(canaries, first_busy=canaries > 0)
        budget = rules.allowed(self.policy.failure_budget, len(hosts))
        guard = rules.allowed(self.policy.max_unreachable, len(hosts))
        counts = {Failure.REJECTED: 0, Failure.UNREACHABLE: 0}
        deadline = host_deadline(self.policy) * (2 + canaries)
        outcomes: dict[str, HostOutcome] = {}
        undo: dict[str, Undo] = {}

        def job(run: HostRun) -> Result:
            index = runs.index(run)
            if index == 0 and canaries:
                result: Result | None = None
                try:
                    result = run.deploy()
                finally:
                    gate.report(result[0] if result else None)
                return result
            if gate.open or self.halted_by is not None:
                return self._late(run)
            promoted = interrupted = False

            def verdict() -> bool:  # staged: wait at the gate, over the open exec
                nonlocal promoted, interrupted
                said = gate.wait(index, time.monotonic() + deadline / 2)
                promoted = said == gate.CANARY
                interrupted = self.halted_by is None and self.stopped()
                return said != gate.STOP and self.halted_by is None and not interrupted

            result = None
            try:
                result = run.held(verdict)
            finally:
                if promoted:
                    gate.report(result[0] if result else None)
            if interrupted and result[0].result is SKIPPED:
                return replace(result[0], result=INTERRUPTED,
                               error="not changed: the run was interrupted"), None
            return result

        def finish(run: HostRun, done: Done[Result]) -> None:
            outcome, flipped = self._outcome_of(run, done)
            outcomes[run.host.name] = outcome
            if flipped is not None and outcome.result is DEPLOYED:
                undo[run.host.name] = flipped
            self._record(outcome)
            kind = Failure.REJECTED if outcome.failure is Failure.ROLLBACK_FAILED else (
                outcome.failure)
            if kind is None or self.halted_by is not None:
                return
            counts[kind] += 1
            limit = budget if kind is Failure.REJECTED else guard
            if counts[kind] > limit:
                self.halted_by, self.rollback = outcome, kind is Failure.REJECTED
                log.error("rollout halted: %d %s host(s), %s tolerated; last %s at %s",
                          counts[kind], kind.value, limit, outcome.host, outcome.failed_step,
                          extra={"host": outcome.host, "cert": outcome.cert,
                                 "step": outcome.failed_step})
                with gate.cond:
                    gate.shut = True
                    gate.cond.notify_all()

        fan_out(runs, job, concurrency=self.policy.concurrency, deadline=deadline,
                name=lambda r: r.host.name,
                stop=lambda: self.halted_by is not None or self.stopped(), on_done=finish)
        if self.rollback and self.policy.rollback_on_halt and undo:
            self._move_back(release, runs, undo, outcomes)
        return [outcomes[h.name] for h in given]

    def _late(self, run: HostRun) -> Result:
        """A host started after the gate opened: all in one exec, as the canary did."""
        if self.halted_by is not None:
            return run.skipped("not started: the rollout halted"), None
        if self.stopped():
            return run.skipped("not started: the run was interrupted", INTERRUPTED), None
        return run.deploy()

    def _move_back(self, release: Release, runs: list[HostRun], undo: dict[str, Undo],
                   outcomes: dict[str, HostOutcome]) -> None:
        halted = self.halted_by
        why = f"rollout halted after {halted.host} failed at {halted.failed_step}" if halted else ""
        revoked = _revoked(release)
        back = []
        for run in runs:
            step = undo.get(run.host.name)
            if step is None:
                continue
            held = rules.hold_forward_reason(step.previous_target, revoked,
                                             _not_after(step.old_fullchain), datetime.now(UTC))
            if held is None:
                back.append(run)
                continue
            note = f"{run.host.name} held on {release.version}, not rolled back: {held}"
            log.warning("%s", note, extra={"host": run.host.name, "cert": release.cert})
            self.warnings.append(note)
            outcomes[run.host.name] = replace(outcomes[run.host.name], note=note)

        def job(run: HostRun) -> Result:
            return run.undo(undo[run.host.name], why), None

        def finish(run: HostRun, done: Done[Result]) -> None:
            outcome, _ = self._outcome_of(run, done)
            outcomes[run.host.name] = outcome
            self._record(outcome)

        fan_out(back, job, concurrency=self.policy.concurrency,
                deadline=host_deadline(self.policy), name=lambda r: r.host.name,
                on_done=finish)

    def _outcome_of(self, run: HostRun, done: Done[Result]) -> Result:
        if done.ok and done.value is not None:
            return done.value
        if done.kind is DoneKind.SKIPPED and self.halted_by is None and self.stopped():
            outcome = replace(run.outcome(INTERRUPTED, error="not started: the run was "
                                          "interrupted"), seconds=0.0)
        elif done.kind is DoneKind.SKIPPED:
            outcome = replace(run.outcome(SKIPPED, error="not started: the rollout halted"),
                              seconds=0.0)
        elif done.lost:
            outcome = run.outcome(
                FAILED, failed_step=run.step, failure=Failure.ROLLBACK_FAILED,
                error=f"no result within {host_deadline(self.policy):g}s; host state unknown")
        else:
            outcome = run.outcome(FAILED, failed_step=run.step, failure=Failure.ROLLBACK_FAILED,
                                  error=f"internal error: {done.error!r}; host state unknown")
        self.emit(Event(outcome.host, outcome.cert, "done", "done", outcome.result))
        return outcome, None

    def _record(self, outcome: HostOutcome) -> None:
        error = f"{outcome.failed_step}: {outcome.error}" if outcome.failed_step else None
        if outcome.result is SKIPPED:
            return  # untouched; its last error (what retried_first looks at) stays its own
        if outcome.result is INTERRUPTED or outcome.failure is Failure.UNREACHABLE:
            # What the host had is still what it has: keep the record, note the error.
            self._save(lambda s: s.record(outcome.cert, outcome.host,
                                          error=error or outcome.error))
        else:  # serving None: the host's state is unknown now
            deployed = outcome.serving
            self._save(
                lambda s: s.record(outcome.cert, outcome.host, deployed=deployed, error=error)
            )

    def _recorded(self, cert: str) -> dict[str, HostDeploy]:
        try:
            return self.state.get(cert) if self.state is not None else {}
        except StoreError as exc:
            self.warnings.append(f"deploy state not read: {exc}")
            return {}

    def _save(self, change: Callable[[DeployState], None]) -> None:
        if self.state is None:
            return
        try:
            change(self.state)
        except StoreError as exc:  # the rollout itself stands; say the record is stale
            log.error("deploy state not saved: %s", exc)
            self.warnings.append(f"deploy state not saved: {exc}")


def _revoked(release: Release) -> dict[str, str]:
    """Versions certfan revoked (``<state>/certs/<cert>/revoked.json``): version -> reason."""
    try:
        doc = fsutil.read_json(release.path.parent.parent / "revoked.json", "revocations") or {}
    except StoreError:
        return {}
    return {str(v): str(e.get("reason")) for v, e in doc.items() if isinstance(e, dict)}


def _not_after(fullchain: bytes) -> datetime | None:
    if not fullchain:
        return None
    from certfan.issue import crypto  # only a halted rollout with hosts to move back gets here

    try:
        return crypto.cert_facts(fullchain).not_after
    except CertfanError:
        return None
