"""Roll a release out to a fleet: canary first, then the rest, halt, roll back.

Per host, over one SSH connection (see remote.py for the steps as data)::

    inspect -> [already serving? leave it alone]
            -> [convert certbot layout] -> upload -> flip -> test -> reload -> prove
    a failure after the flip: flip back (-> test -> reload -> prove the old leaf)

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
from pathlib import Path
from typing import Protocol, TypeVar

from certfan import probe, remote, ssh
from certfan.config import Config, Endpoint, Host, RolloutPolicy
from certfan.deploystate import DeployState
from certfan.errors import ConfigError, ProbeError, SshError, StoreError
from certfan.remote import FileSpec, PlanError, Step
from certfan.store import Release, Store

log = logging.getLogger(__name__)

DEPLOYED = "deployed"  # proven to serve the new version
UNCHANGED = "unchanged"  # already served it; nothing touched
FAILED = "failed"  # see failed_step, error and rollback
ROLLED_BACK = "rolled back"  # was deployed, moved back because the rollout halted
SKIPPED = "skipped: halted"  # never started: the rollout had halted

# After a reload, old nginx workers may still take a connection or two while they
# close their listeners: the new leaf must be seen several rounds in a row.
PROVE_ROUNDS = 3
PROVE_SPACING = 0.05


class Session(Protocol):
    def run(
        self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None
    ) -> ssh.Result: ...

    def close(self) -> None: ...


Connect = Callable[..., Session]  # connect(host, *, timeout) -> Session
Prober = Callable[[Endpoint, str, float], bytes]  # served_leaf(endpoint, sni, timeout) -> DER


@dataclass(frozen=True)
class HostOutcome:
    host: str
    cert: str
    version: str
    result: str  # DEPLOYED, UNCHANGED, FAILED, ROLLED_BACK, SKIPPED
    failed_step: str | None = None
    error: str | None = None
    output_tail: str = ""
    seconds: float = 0.0
    rollback: str | None = None  # None: nothing to undo; "ok" or "failed at <step>: ..."
    serving: str | None = None  # the version the live pointer is known to hold now

    @property
    def ok(self) -> bool:
        """The host serves the version."""
        return self.result in (DEPLOYED, UNCHANGED)


@dataclass(frozen=True)
class Event:
    """Progress of one host, for live display: step started / ok / failed, or done."""

    host: str
    cert: str
    step: str  # connect, inspect, convert, upload, flip, test, reload, prove,
    #            rollback:<step>, or "done" with the result in detail
    status: str  # start, ok, failed, done
    detail: str = ""


@dataclass(frozen=True)
class Report:
    outcomes: tuple[HostOutcome, ...]
    halted_by: HostOutcome | None = None  # the failure that spent the budget
    warnings: tuple[str, ...] = ()  # e.g. the deploy state could not be saved

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)


@dataclass(frozen=True)
class HostPlan:
    """What --dry-run shows for a host: its steps, or why they are unknown."""

    host: str
    cert: str
    version: str
    steps: tuple[Step, ...] = ()
    unchanged: bool = False
    error: str | None = None


class StepFailed(Exception):
    def __init__(self, step: str, message: str, output: str = "", connection: bool = False):
        self.step = step
        self.message = message
        self.output = output
        self.connection = connection  # the SSH connection itself failed
        super().__init__(f"{step}: {message}")


@dataclass(frozen=True)
class _Undo:
    """How to move a deployed host back, should the rollout halt later."""

    previous_target: str | None
    old_sha256: str | None


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


def _version_of(target: str | None) -> str | None:
    return Path(target).name if target else None


# ---------------------------------------------------------------- one host


class HostRun:
    """Take one host to one release, or leave it as it was; never raises."""

    def __init__(
        self,
        host: Host,
        release: Release,
        policy: RolloutPolicy,
        files: Sequence[FileSpec],
        *,
        connect: Connect,
        prober: Prober,
        emit: Callable[[Event], None],
    ):
        self.host = host
        self.release = release
        self.policy = policy
        self.files = tuple(files)
        self.connect = connect
        self.prober = prober
        self._emit = emit
        self.step = "connect"
        self._t0 = time.monotonic()
        self._spent = 0.0  # seconds of earlier phases (a deploy before its undo)

    # -------------------------------------------------------- entry points

    def deploy(self) -> tuple[HostOutcome, _Undo | None]:
        self._t0 = time.monotonic()
        try:
            session = self._open()
        except StepFailed as failure:
            return self._failed(failure), None
        try:
            outcome, undo = self._deploy_on(session)
        finally:
            session.close()
        self._spent = outcome.seconds
        return outcome, undo

    def undo(self, undo: _Undo, why: str) -> HostOutcome:
        """Move a deployed host back (the rollout halted after it succeeded)."""
        self._t0 = time.monotonic()  # _outcome adds the time the deploy took
        steps = remote.plan_rollback(
            self.host,
            self.release.cert,
            undo.previous_target,
            self.release.names,
            undo.old_sha256,
            reload=True,
        )
        try:
            session = self._open(prefix="rollback:")
            try:
                for step in steps:
                    self._do(session, step, prefix="rollback:")
            finally:
                session.close()
        except StepFailed as failure:
            self._emit_step("done", "done", f"{FAILED} at {failure.step}")
            return self._outcome(
                FAILED,
                failed_step=failure.step,
                output_tail=failure.output,
                error=f"{why}; rolling back failed: {failure.message}; host state unknown",
                rollback=f"failed at {failure.step.removeprefix('rollback:')}: {failure.message}",
                serving=None,
            )
        self._emit_step("done", "done", f"{ROLLED_BACK} (rollout halted)")
        return self._outcome(
            ROLLED_BACK, error=why, rollback="ok", serving=_version_of(undo.previous_target)
        )

    def plan(self) -> HostPlan:
        """Connect, look (read-only) and return the steps a push would take."""
        base = HostPlan(self.host.name, self.release.cert, self.release.version)
        try:
            session = self._open()
            try:
                facts = self._inspect(session)
            finally:
                session.close()
            if self._already_serving(facts):
                return replace(base, unchanged=True)
            plan = remote.plan_push(self.host, self.release, facts, self.files)
        except StepFailed as failure:
            return replace(base, error=str(failure))
        except PlanError as exc:
            return replace(base, error=str(exc))
        return replace(base, steps=plan.steps)

    # -------------------------------------------------------- deploy

    def _deploy_on(self, session: Session) -> tuple[HostOutcome, _Undo | None]:
        cert = self.release.cert
        try:
            facts = self._inspect(session)
            if self._already_serving(facts):
                self._emit_step("done", "done", UNCHANGED)
                return self._outcome(UNCHANGED, serving=self.release.version), None
            plan = remote.plan_push(self.host, self.release, facts, self.files)
        except StepFailed as failure:
            return self._failed(failure), None
        except PlanError as exc:
            return self._failed(StepFailed("inspect", str(exc))), None
        old_sha = probe.leaf_sha256_from_pem(facts.fullchain_pem)
        flipped = reloaded = False
        try:
            for step in plan.steps:
                # Set before running: a flip or reload that timed out may still have happened.
                flipped = flipped or step.name == "flip"
                reloaded = reloaded or step.name == "reload"
                self._do(session, step)
        except StepFailed as failure:
            if not flipped:
                serving = (
                    self.release.version if plan.already_live else _version_of(plan.previous_target)
                )
                return self._failed(failure, serving=serving), None
            rollback = self._roll_back(session, failure, plan.previous_target, old_sha, reloaded)
            ok = rollback == "ok"
            return self._failed(
                failure,
                rollback=rollback,
                serving=_version_of(plan.previous_target) if ok else None,
            ), None
        log.info("%s: %s %s deployed", self.host.name, cert, self.release.version)
        self._emit_step("done", "done", DEPLOYED)
        outcome = self._outcome(DEPLOYED, serving=self.release.version)
        if plan.already_live:
            return outcome, None  # not flipped by this rollout: nothing to move back to
        return outcome, _Undo(plan.previous_target, old_sha)

    def _roll_back(
        self,
        session: Session,
        failure: StepFailed,
        previous: str | None,
        old_sha: str | None,
        reloaded: bool,
    ) -> str:
        steps = remote.plan_rollback(
            self.host, self.release.cert, previous, self.release.names, old_sha, reload=reloaded
        )
        log.warning("%s: %s failed; flipping back to %s", self.host.name, failure.step, previous)
        fresh: Session | None = None
        try:
            if failure.connection:
                # The old connection is gone or wedged; one new attempt, same deadlines.
                fresh = session = self._open(prefix="rollback:")
            for step in steps:
                self._do(session, step, prefix="rollback:")
        except StepFailed as again:
            return f"failed at {again.step.removeprefix('rollback:')}: {again.message}"
        finally:
            if fresh is not None:
                fresh.close()
        return "ok"

    # -------------------------------------------------------- steps

    def _open(self, prefix: str = "") -> Session:
        name = f"{prefix}connect"
        self._emit_step(name, "start")
        try:
            session = self.connect(self.host, timeout=self.policy.connect_timeout)
        except SshError as exc:
            self._emit_step(name, "failed", str(exc))
            raise StepFailed(name, str(exc), connection=True) from exc
        self._emit_step(name, "ok")
        return session

    def _inspect(self, session: Session) -> remote.LiveFacts:
        step = remote.plan_inspect(self.host, self.release.cert, self.release.version)
        return remote.parse_inspect(self._run(session, step).stdout)

    def _already_serving(self, facts: remote.LiveFacts) -> bool:
        """The pointer is at the version AND a handshake shows it, for every name."""
        target = remote.version_target(self.release.cert, self.release.version)
        if facts.live != remote.LIVE_LINK or facts.target != target:
            return False
        timeout = min(self.policy.connect_timeout, self.policy.verify_timeout)
        for sni in remote.probe_snis(self.release.names):
            try:
                der = self.prober(self.host.probe, sni, timeout)
            except ProbeError:
                return False
            if probe.sha256_hex(der) != self.release.sha256:
                return False
        return True

    def _do(self, session: Session, step: Step, prefix: str = "") -> None:
        if step.local:
            self._prove(step, prefix)
        else:
            self._run(session, step, prefix)

    def _run(self, session: Session, step: Step, prefix: str = "") -> ssh.Result:
        name = prefix + step.name
        self.step = name
        self._emit_step(name, "start", step.summary)
        log.info("%s: %s: %s", self.host.name, name, step.summary)
        try:
            stdin = b"".join(p.read_bytes() for p in step.stdin_files) if step.stdin_files else None
        except OSError as exc:
            self._emit_step(name, "failed", str(exc))
            raise StepFailed(name, f"cannot read release file: {exc}") from exc
        try:
            result = session.run(step.argv, timeout=self.policy.command_timeout, stdin=stdin)
        except SshError as exc:
            self._emit_step(name, "failed", str(exc))
            raise StepFailed(name, str(exc), connection=True) from exc
        if result.status != 0:
            message = f"exit status {result.status}"
            said = result.stderr.decode("utf-8", "replace").strip().splitlines()
            if said:
                message += f": {said[0][:200]}"
            self._emit_step(name, "failed", message)
            raise StepFailed(name, message, result.tail())
        self._emit_step(name, "ok")
        return result

    def _prove(self, step: Step, prefix: str = "") -> None:
        """Every SNI presents the expected leaf, PROVE_ROUNDS times in a row, in time."""
        name = prefix + step.name
        self.step = name
        self._emit_step(name, "start", step.summary)
        log.info("%s: %s: %s", self.host.name, name, step.summary)
        deadline = time.monotonic() + self.policy.verify_timeout
        spacing = min(PROVE_SPACING, self.policy.verify_timeout / 10)
        streak, backoff, last_bad = 0, spacing, ""
        while True:
            bad = self._probe_round(step.snis, step.expect_sha256 or "", deadline)
            if bad is None:
                streak += 1
                if streak >= PROVE_ROUNDS:
                    break
                pause = spacing
            else:
                streak, last_bad, pause = 0, bad, backoff
                backoff = min(backoff * 2, 1.0)
            if time.monotonic() + pause > deadline:
                message = f"{last_bad or 'not stable'} (for {self.policy.verify_timeout:g}s)"
                self._emit_step(name, "failed", message)
                raise StepFailed(name, message)
            time.sleep(pause)  # bounded by the deadline checked above
        self._emit_step(name, "ok")

    def _probe_round(self, snis: Sequence[str], expect: str, deadline: float) -> str | None:
        """None when every SNI shows ``expect``; else what was seen instead."""
        for sni in snis:
            timeout = max(0.1, min(deadline - time.monotonic(), self.policy.connect_timeout))
            try:
                got = probe.sha256_hex(self.prober(self.host.probe, sni, timeout))
            except ProbeError as exc:
                return str(exc)
            if got != expect:
                return (
                    f"{self.host.probe} (SNI {sni}) serves sha256 {got[:16]}..., "
                    f"expected {expect[:16]}..."
                )
        return None

    # -------------------------------------------------------- outcomes

    def _emit_step(self, step: str, status: str, detail: str = "") -> None:
        self._emit(Event(self.host.name, self.release.cert, step, status, detail))

    def _outcome(self, result: str, **fields: object) -> HostOutcome:
        return HostOutcome(
            host=self.host.name,
            cert=self.release.cert,
            version=self.release.version,
            result=result,
            seconds=round(self._spent + time.monotonic() - self._t0, 3),
            **fields,  # type: ignore[arg-type]
        )

    def _failed(
        self, failure: StepFailed, rollback: str | None = None, serving: str | None = None
    ) -> HostOutcome:
        error = failure.message
        if rollback == "ok":
            error += "; flipped back to the previous version"
        elif rollback:
            error += f"; ROLLBACK {rollback}: host state unknown"
        log.warning(
            "%s: %s failed at %s: %s", self.host.name, self.release.cert, failure.step, error
        )
        self._emit_step("done", "done", f"{FAILED} at {failure.step}")
        return self._outcome(
            FAILED,
            failed_step=failure.step,
            error=error,
            output_tail=failure.output,
            rollback=rollback,
            serving=serving,
        )


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
        undo: dict[str, _Undo] = {}
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

    def _outcome_of(self, run: HostRun, value: object) -> tuple[HostOutcome, _Undo | None]:
        if isinstance(value, tuple):
            return value  # type: ignore[return-value]
        if value is _SKIP:
            outcome = run._outcome(SKIPPED, error="not started: the rollout halted")
            outcome = replace(outcome, seconds=0.0)
        elif value is _LOST:
            outcome = run._outcome(
                FAILED,
                failed_step=run.step,
                error=f"no result within {host_deadline(self.policy):g}s; host state unknown",
            )
        else:
            outcome = run._outcome(
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
