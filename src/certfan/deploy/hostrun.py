"""Take one host to one release over one SSH connection, or leave it as it was.

Per host (see remote.py for the steps as data)::

    inspect -> [already serving? leave it alone]
            -> [convert certbot layout] -> upload -> flip -> test -> reload -> prove
    a failure after the flip: flip back (-> test -> reload -> prove the old leaf)

A :class:`HostRun` never raises: it ends in one :class:`HostOutcome` and reports
its progress as :class:`Event` values. Which hosts run, when, and which are
moved back after a halt is the fleet policy, in rollout.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from certfan.config import Endpoint, Host, RolloutPolicy
from certfan.deploy import plan as remote
from certfan.deploy import probe, ssh
from certfan.deploy.plan import FileSpec, PlanError, Step
from certfan.errors import ProbeError, SshError
from certfan.state.store import Release

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
class Undo:
    """How to move a deployed host back, should the rollout halt later."""

    previous_target: str | None
    old_sha256: str | None


def _version_of(target: str | None) -> str | None:
    return Path(target).name if target else None


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

    def deploy(self) -> tuple[HostOutcome, Undo | None]:
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

    def undo(self, undo: Undo, why: str) -> HostOutcome:
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
            return self.outcome(
                FAILED,
                failed_step=failure.step,
                output_tail=failure.output,
                error=f"{why}; rolling back failed: {failure.message}; host state unknown",
                rollback=f"failed at {failure.step.removeprefix('rollback:')}: {failure.message}",
                serving=None,
            )
        self._emit_step("done", "done", f"{ROLLED_BACK} (rollout halted)")
        return self.outcome(
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

    def _deploy_on(self, session: Session) -> tuple[HostOutcome, Undo | None]:
        cert = self.release.cert
        try:
            facts = self._inspect(session)
            if self._already_serving(facts):
                self._emit_step("done", "done", UNCHANGED)
                return self.outcome(UNCHANGED, serving=self.release.version), None
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
        outcome = self.outcome(DEPLOYED, serving=self.release.version)
        if plan.already_live:
            return outcome, None  # not flipped by this rollout: nothing to move back to
        return outcome, Undo(plan.previous_target, old_sha)

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

    def outcome(self, result: str, **fields: object) -> HostOutcome:
        """This host's outcome, timed since the run began (the fleet's too: skipped, lost)."""
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
        return self.outcome(
            FAILED,
            failed_step=failure.step,
            error=error,
            output_tail=failure.output,
            rollback=rollback,
            serving=serving,
        )
