"""The deploy engine's data: what a session returns, what a host run reports.

No library beyond the standard one: the CLI's renderers and the reporting
commands import these types without pulling in paramiko or the TLS probe.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from certfan.config import Endpoint, Host


@dataclass(frozen=True)
class Result:
    """What a remote command left behind."""

    status: int  # -1 when the server sent no exit status (killed, or the link was lost)
    stdout: bytes
    stderr: bytes
    lost: str | None = None  # why the command's end was never seen (deadline, link gone)

    @property
    def ok(self) -> bool:
        return self.status == 0 and self.lost is None

    def tail(self, lines: int = 20, chars: int = 2000) -> str:
        """The last lines of stderr then stdout, for an error report."""
        parts = (out.decode("utf-8", "replace").strip() for out in (self.stderr, self.stdout))
        text = "\n".join(part for part in parts if part)
        return "\n".join(text.splitlines()[-lines:])[-chars:]


Hold = tuple[bytes, Callable[[bytes], bytes]]  # (stdout marker, answer sent on stdin then)


class Session(Protocol):
    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
            hold: Hold | None = None) -> Result: ...

    def close(self) -> None: ...


Connect = Callable[..., Session]  # connect(host, *, timeout) -> Session
# served_chain(endpoint, sni, timeout) -> DER, leaf first; a leaf-only prober answers bytes
Prober = Callable[[Endpoint, str, float], "Sequence[bytes] | bytes"]


def default_connect(host: Host, *, timeout: float) -> Session:
    """ssh.connect, imported when first used (paramiko is heavy; a no-op run never needs it)."""
    from certfan.deploy import ssh

    return ssh.connect(host, timeout=timeout)


def default_prober(endpoint: Endpoint, sni: str, timeout: float) -> Sequence[bytes] | bytes:
    from certfan.deploy import probe

    return probe.served_chain(endpoint, sni, timeout)


class OutcomeKind(enum.StrEnum):
    DEPLOYED = "deployed"  # proven to serve the new version
    UNCHANGED = "unchanged"  # already served it; nothing touched
    FAILED = "failed"  # see failure, failed_step, error and rollback
    ROLLED_BACK = "rolled back"  # was deployed, moved back because the rollout halted
    SKIPPED = "skipped: halted"  # never started (or only staged): the rollout had halted
    INTERRUPTED = "skipped: interrupted"  # never started (or only staged): Ctrl-C/SIGTERM


class Failure(enum.StrEnum):
    """Why a host failed, for the fleet policy."""

    UNREACHABLE = "unreachable"  # connect, auth, host key or link failed; nothing live changed
    REJECTED = "rejected"  # the host refused the release: upload, config test, reload, proof
    ROLLBACK_FAILED = "rollback failed"  # moving it back failed too: its state is unknown


DEPLOYED, UNCHANGED, FAILED, ROLLED_BACK, SKIPPED, INTERRUPTED = tuple(OutcomeKind)


@dataclass(frozen=True)
class HostOutcome:
    host: str
    cert: str
    version: str
    result: OutcomeKind
    failed_step: str | None = None
    error: str | None = None
    output_tail: str = ""
    seconds: float = 0.0  # time spent on this host (not waiting for the canary)
    rollback: str | None = None  # None: nothing to undo; "ok" or "failed at <step>: ..."
    serving: str | None = None  # the version the live pointer is known to hold now
    failure: Failure | None = None
    note: str | None = None  # e.g. why it was held forward instead of rolled back

    @property
    def ok(self) -> bool:
        """The host serves the version."""
        return self.result in (DEPLOYED, UNCHANGED)


@dataclass(frozen=True)
class Event:
    """Progress of one host, for live display: step started / ok / failed, or done."""

    host: str
    cert: str
    step: str  # connect, upload, flip, test, reload, prove, rollback:<step>, or "done"
    status: str  # start, ok, failed, done
    detail: str = ""


@dataclass(frozen=True)
class Step:
    """One thing to do on a host: a name, a human line, and the argv that does it."""

    name: str  # inspect, convert, upload, flip, test, reload, settle, prove; list, delete
    summary: str = ""
    argv: tuple[str, ...] = ()  # empty for what the controller does itself (prove)
    stdin_files: tuple[Path, ...] = ()  # local files streamed to stdin, in order


@dataclass(frozen=True)
class HostPlan:
    """What --dry-run shows for a host: its steps, or why they are unknown."""

    host: str
    cert: str
    version: str
    steps: tuple[Step, ...] = ()
    unchanged: bool = False
    error: str | None = None


@dataclass(frozen=True)
class Undo:
    """How to move a deployed host back, should the rollout halt later."""

    previous_target: str | None
    old_sha256: str | None
    old_fullchain: bytes = b""  # what the host served before (for the hold-forward rule)


class StepFailed(Exception):
    def __init__(self, step: str, message: str, output: str = "", connection: bool = False):
        self.step = step
        self.message = message
        self.output = output
        self.connection = connection  # the SSH connection itself failed
        super().__init__(f"{step}: {message}")


class HostLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log records carrying ``host``, ``cert`` and ``step`` as fields (JSON logs show them)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs
