"""Take one host to one release over one SSH connection, or leave it as it was.

Per host, one exec request does the remote work (scripts.DEPLOY; plan.py
builds its argv and reads its report), then the controller proves every name
at once by TLS handshakes::

    connect -> exec: inspect, upload, [convert], flip, test, reload, settle -> prove
    a failed test or reload: the script flips back (and reloads) in the same exec
    a failed proof: one more exec flips back, tests, reloads; the old leaf is proven

The fleet may split the exec in two: :meth:`HostRun.stage` (connect, upload;
nothing live changes) while the canary is proven, :meth:`HostRun.apply` after.
A :class:`HostRun` never raises: it ends in one :class:`HostOutcome` and
reports its progress as :class:`Event` values. Which hosts run, when, and
which are moved back after a halt is the fleet policy, in fleet.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from certfan.config import Host, RolloutPolicy
from certfan.deploy import plan
from certfan.deploy.model import (
    DEPLOYED,
    FAILED,
    ROLLED_BACK,
    SKIPPED,
    UNCHANGED,
    Connect,
    Event,
    Failure,
    Hold,
    HostLog,
    HostOutcome,
    HostPlan,
    OutcomeKind,
    Prober,
    Result,
    Session,
    StepFailed,
    Undo,
)
from certfan.deploy.plan import FileSpec, PlanError, RemoteReport
from certfan.deploy.prove import Prover
from certfan.errors import SshError

if TYPE_CHECKING:
    from certfan.state.store import Release

log = logging.getLogger(__name__)

__all__ = [
    "DEPLOYED", "FAILED", "ROLLED_BACK", "SKIPPED", "UNCHANGED", "Connect", "Event", "Failure",
    "HostOutcome", "HostPlan", "HostRun", "OutcomeKind", "Prober", "Session", "StepFailed", "Undo",
]

T = TypeVar("T")
Result_ = tuple[HostOutcome, Undo | None]

_STEPS = ("upload", "convert", "flip", "test", "reload", "settle")


def _version_of(target: str | None) -> str | None:
    return Path(target).name if target else None


class HostRun:
    """Take one host to one release, or leave it as it was; never raises."""

    settle = True  # wait on the host for the old workers (bench/proof_rounds.py turns it off)

    def __init__(
        self,
        host: Host,
        release: Release,
        policy: RolloutPolicy,
        files: Sequence[FileSpec],
        stdin: bytes,
        *,
        connect: Connect,
        prober: Prober,
        emit: Callable[[Event], None],
    ):
        self.host = host
        self.release = release
        self.policy = policy
        self.files = tuple(files)
        self.stdin = stdin
        self.connect = connect
        self.prober = prober
        self._emit = emit
        self.step = "connect"
        self.log = HostLog(log, {"host": host.name, "cert": release.cert})
        self.prover = Prover(host, plan.probe_snis(release.names), policy, prober,
                             self._emit_step, self.log)
        try:  # what every name must be served with, whole (leaf and intermediates)
            self.fullchain: bytes | None = release.file("fullchain.pem").read_bytes()
        except OSError:
            self.fullchain = None  # the upload fails on it first; the proof asks the leaf
        self._spent = 0.0  # seconds on this host so far (not waiting for a canary)
        self._t0: float | None = None  # when the current phase began

    # -------------------------------------------------------- entry points

    def deploy(self) -> tuple[HostOutcome, Undo | None]:
        """Everything in one exec: the canary's way, and every host's without one."""
        return self._timed(lambda: self._connected(lambda s: self._push(s, plan.PUSH)))

    def held(self, verdict: Callable[[], bool]) -> tuple[HostOutcome, Undo | None]:
        """One exec that uploads, then waits for ``verdict()`` (the canary gate: True is go)
        before it flips, tests and reloads; the wait does not count as this host's time."""
        waited = 0.0

        def answer(_: bytes) -> bytes:
            nonlocal waited
            self._emit_step("upload", "ok", "staged; waiting for the canary")
            began = time.monotonic()
            go = verdict()
            waited += time.monotonic() - began
            return b"go\n" if go else b"stop\n"

        outcome, undo = self._timed(lambda: self._connected(
            lambda s: self._push(s, plan.HELD, hold=(plan.HELD_MARK, answer))))
        self._spent -= waited
        return replace(outcome, seconds=round(max(0.0, outcome.seconds - waited), 3)), undo

    def skipped(self, why: str, kind: OutcomeKind = SKIPPED) -> HostOutcome:
        self._emit_step("done", "done", kind)
        return self.outcome(kind, error=why)

    def undo(self, undo: Undo, why: str) -> HostOutcome:
        """Move a deployed host back (the rollout halted after it succeeded)."""

        def go(session: Session) -> Result_:
            rollback = self._roll_back(session, undo, prefix="rollback:")
            if rollback != "ok":
                self._emit_step("done", "done", f"{FAILED} at rollback")
                return self.outcome(
                    FAILED, failed_step="rollback", failure=Failure.ROLLBACK_FAILED,
                    error=f"{why}; rolling back failed: {rollback}; host state unknown",
                    rollback=f"failed at {rollback}", serving=None), None
            self._emit_step("done", "done", f"{ROLLED_BACK} (rollout halted)")
            return self.outcome(ROLLED_BACK, error=why, rollback="ok",
                                serving=_version_of(undo.previous_target)), None

        return self._timed(lambda: self._connected(go, prefix="rollback:"))[0]

    def plan(self) -> HostPlan:
        """Connect, look (read-only) and return the steps a push would take."""
        base = HostPlan(self.host.name, self.release.cert, self.release.version)
        try:
            session = self._open()
            try:
                report, result = self._exec(session, plan.INSPECT)
            finally:
                session.close()
            if not result.ok:
                raise self._why("inspect", result, report)
            facts = report.facts
            target = plan.version_target(self.release.cert, self.release.version)
            if facts.target == target and self._probe_round(self._snis(), time.monotonic() + (
                    self.policy.verify_timeout)) is None:
                return replace(base, unchanged=True)
            steps = plan.plan_push(self.host, self.release, facts, self.files)
        except (StepFailed, PlanError) as exc:
            return replace(base, error=str(exc))
        return replace(base, steps=steps)

    # -------------------------------------------------------- the exchange

    def _timed(self, go: Callable[[], T]) -> T:
        """Run a phase; the time it takes counts as this host's (waiting for a canary not)."""
        self._t0 = time.monotonic()
        try:
            return go()
        finally:
            self._spent += time.monotonic() - self._t0
            self._t0 = None

    def _connected(self, go: Callable[[Session], Result_], session: Session | None = None,
                   prefix: str = "") -> Result_:
        try:
            session = session or self._open(prefix)
        except StepFailed as failure:
            return self._failed(failure, Failure.UNREACHABLE), None
        try:
            return go(session)
        finally:
            session.close()

    def _push(self, session: Session, phases: str,
              hold: Hold | None = None) -> tuple[HostOutcome, Undo | None]:
        stdin = self.stdin if plan.STAGE in phases else None
        try:
            report, result = self._exec(session, phases, stdin, hold=hold)
        except StepFailed as failure:
            return self._failed(failure, Failure.UNREACHABLE), None
        if "verdict" in report.marks:  # staged, then told to stop: nothing live changed
            return self.skipped("not changed: the canary was not proven"), None
        facts = report.facts
        previous = report.previous
        old = Undo(previous or None, facts.leaf_sha256, facts.fullchain_pem)
        if result.lost and previous is None:  # apply never began: nothing live changed
            return self._failed(self._why("upload", result, report), Failure.UNREACHABLE,
                                serving=_version_of(facts.target)), None
        if result.lost or report.failed:
            return self._after_failure(session, result, report, old), None
        if report.marks.get("flip") == "already":
            return self._already_live(session)
        try:
            self._prove(self.release.sha256, settled=report.marks.get("settle") == "ok")
        except StepFailed as failure:
            rollback = self._roll_back(session, old, prefix="rollback:")
            return self._failed(failure, Failure.REJECTED if rollback == "ok"
                                else Failure.ROLLBACK_FAILED, rollback=rollback,
                                serving=_version_of(previous) if rollback == "ok" else None), None
        self.log.info("%s: %s %s deployed", self.host.name, self.release.cert,
                      self.release.version, extra={"step": "done"})
        self._emit_step("done", "done", DEPLOYED)
        return self.outcome(DEPLOYED, serving=self.release.version), old

    def _already_live(self, session: Session) -> tuple[HostOutcome, Undo | None]:
        """The pointer is at the version: proven as it is, or config-tested and reloaded."""
        deadline = time.monotonic() + min(self.policy.verify_timeout, self.policy.connect_timeout)
        if self._probe_round(self._snis(), deadline) is None:
            self._emit_step("done", "done", UNCHANGED)
            return self.outcome(UNCHANGED, serving=self.release.version), None
        try:
            report, result = self._exec(session, plan.APPLY, back=plan.REFRESH)
            if result.lost or report.failed:
                raise self._why(report.failed or "reload", result, report)
            self._prove(self.release.sha256, settled=report.marks.get("settle") == "ok")
        except StepFailed as failure:  # nothing to flip back to: it was already live
            return self._failed(failure, Failure.REJECTED, serving=None), None
        self._emit_step("done", "done", DEPLOYED)
        return self.outcome(DEPLOYED, serving=self.release.version), None

    def _after_failure(self, session: Session, result: Result, report: RemoteReport,
                       old: Undo) -> HostOutcome:
        failure = self._why(report.failed or self.step.removeprefix("rollback:"), result, report)
        if not report.flipped and result.lost is None:  # upload, convert or flip refused
            return self._failed(failure, Failure.REJECTED, serving=_version_of(
                report.previous if report.previous is not None else report.facts.target))
        if result.lost is None and report.undo_ok is not None:  # the script flipped back
            rollback = "ok" if report.undo_ok else report.marks["undo"].removeprefix("failed:")
            if rollback == "ok" and report.reloaded and old.old_sha256:
                try:
                    self._prove(old.old_sha256, settled=report.marks.get("settle") == "ok",
                                prefix="rollback:", version=_version_of(old.previous_target))
                except StepFailed as again:
                    rollback = f"prove: {again.message}"
        else:  # the link went or a command hung: flip back over a fresh connection
            self.log.warning("%s: %s did not finish; flipping back to %s", self.host.name,
                             failure.step, _version_of(old.previous_target)
                             or "what it served before", extra={"step": failure.step})
            rollback = self._roll_back(None, old, prefix="rollback:")
        if rollback != "ok":
            rollback = f"failed at {rollback}"
        ok = rollback == "ok"
        return self._failed(failure, Failure.REJECTED if ok else Failure.ROLLBACK_FAILED,
                            rollback=rollback,
                            serving=_version_of(old.previous_target) if ok else None)

    def _roll_back(self, session: Session | None, undo: Undo, prefix: str) -> str:
        """Flip back, test, reload, prove the old leaf: "ok" or "<step>: <why>"."""
        fresh: Session | None = None
        try:
            if session is None:
                fresh = session = self._open(prefix)
            report, result = self._exec(session, plan.ROLLBACK, back=undo.previous_target or "-",
                                        prefix=prefix)
            if result.lost or report.failed or report.undo_ok is False:
                step = (report.marks.get("undo") or "failed:flip").removeprefix("failed:")
                said = Result(result.status, b"", result.stderr).tail(3)
                return f"{step}: {result.lost or said or 'failed'}"
            if undo.previous_target and undo.old_sha256:
                self._prove(undo.old_sha256, settled=report.marks.get("settle") == "ok",
                            prefix=prefix, version=_version_of(undo.previous_target))
        except StepFailed as failure:
            return f"{failure.step.removeprefix(prefix)}: {failure.message}"
        finally:
            if fresh is not None:
                fresh.close()
        return "ok"

    # -------------------------------------------------------- steps

    def _open(self, prefix: str = "") -> Session:
        name = f"{prefix}connect"
        self.step = name
        self._emit_step(name, "start")
        try:
            session = self.connect(self.host, timeout=self.policy.connect_timeout)
        except SshError as exc:
            self._emit_step(name, "failed", str(exc))
            raise StepFailed(name, str(exc), connection=True) from exc
        self._emit_step(name, "ok")
        return session

    def _exec(self, session: Session, phases: str, stdin: bytes | None = None, *,
              back: str = "-", prefix: str = "", hold: Hold | None = None
              ) -> tuple[RemoteReport, Result]:
        """One DEPLOY exec; its report, and events for the steps it took."""
        first = {plan.INSPECT: "inspect", plan.ROLLBACK: "flip"}.get(phases, "upload")
        if phases == plan.APPLY:
            first = "flip"
        self.step = prefix + first
        argv = plan.deploy_argv(self.host, self.release, self.files, phases, back=back,
                                settle_for=self.policy.verify_timeout if self.settle else 0)
        self._emit_step(self.step, "start", phases)
        self.log.info("%s: %s: %s", self.host.name, self.step, phases,
                      extra={"step": self.step})
        # The whole exchange is one command: its deadline covers test, reload and settle.
        timeout = 2 * self.policy.command_timeout + self.policy.verify_timeout
        try:
            result = (session.run(argv, timeout=timeout, stdin=stdin, hold=hold) if hold
                      else session.run(argv, timeout=timeout, stdin=stdin))
        except SshError as exc:
            self._emit_step(self.step, "failed", str(exc))
            raise StepFailed(self.step, str(exc), connection=True) from exc
        report = plan.parse_report(result.stdout)
        for step in _STEPS:
            said = report.marks.get(step)
            if said is not None:
                self.step = prefix + step
                self._emit_step(self.step, "failed" if said == "failed" else "ok", said)
        if report.failed:
            self.step = prefix + report.failed
        elif not report.done and self.step != prefix + "settle":  # cut off: the next step
            reached = self.step.removeprefix(prefix)
            if reached in _STEPS and reached in report.marks:
                self.step = prefix + _STEPS[_STEPS.index(reached) + 1]
        return report, result

    def _why(self, step: str, result: Result, report: RemoteReport) -> StepFailed:
        # stdout is the script's report; what the commands said went to stderr.
        tail = Result(result.status, b"", result.stderr).tail()
        if result.lost:
            return StepFailed(step, result.lost, tail, connection=True)
        message = f"exit status {result.status}"
        said = result.stderr.decode("utf-8", "replace").strip().splitlines()
        if said:
            message += f": {said[-1][:200]}"
        return StepFailed(step, message, tail)

    def _snis(self) -> tuple[str, ...]:
        return plan.probe_snis(self.release.names)

    def _prove(self, expect: str, *, settled: bool, prefix: str = "",
               version: str | None = None) -> None:
        """The release is proven whole (its fullchain); a rollback by the old leaf."""
        self.step = prefix + "prove"
        whole = expect == self.release.sha256 and not prefix
        self.prover.prove(expect, settled=settled, step=self.step, version=version,
                          names={self.release.sha256: self.release.version},
                          fullchain=self.fullchain if whole else None)

    def _probe_round(self, snis: Sequence[str], deadline: float) -> str | None:
        return self.prover.round(deadline, self.release.sha256,
                                 {self.release.sha256: self.release.version}, self.fullchain)

    # -------------------------------------------------------- outcomes

    def _emit_step(self, step: str, status: str, detail: str = "") -> None:
        self._emit(Event(self.host.name, self.release.cert, step, status, detail))

    def outcome(self, result: OutcomeKind, **fields: Any) -> HostOutcome:
        now = 0.0 if self._t0 is None else time.monotonic() - self._t0
        return HostOutcome(host=self.host.name, cert=self.release.cert,
                           version=self.release.version, result=result,
                           seconds=round(self._spent + now, 3), **fields)

    def _failed(self, failure: StepFailed, kind: Failure, rollback: str | None = None,
                serving: str | None = None) -> HostOutcome:
        error = failure.message
        if rollback == "ok":
            error += "; flipped back to the previous version"
        elif rollback:
            error += f"; ROLLBACK {rollback}: host state unknown"
        self.log.warning("%s: %s failed at %s: %s", self.host.name, self.release.cert,
                         failure.step, error, extra={"step": failure.step})
        self._emit_step("done", "done", f"{FAILED} at {failure.step}")
        return self.outcome(FAILED, failed_step=failure.step, error=error,
                            output_tail=failure.output, rollback=rollback, serving=serving,
                            failure=kind)
