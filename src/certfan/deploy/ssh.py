"""SSH to one host: strict host keys, key authentication only, deadlines everywhere.

This is the only module that imports paramiko; its exceptions are translated
into :class:`SshError` / :class:`HostKeyError` here and never leak further.

Trust rules (why: an edge node that answers with a different key may be an
impostor, and we are about to hand it a private key):

* host keys come from ``host.known_hosts`` only -- no system files, nothing is
  ever added (a :class:`paramiko.RejectPolicy` subclass refuses unknown keys);
* authentication uses ``host.identity_file`` only -- no agent, no ``~/.ssh``;
* connect, banner, key exchange, auth and channel open share one deadline, and
  every command has its own (channel timeout plus an overall deadline), so a
  hung command or a silent network cannot hang certfan.
"""

from __future__ import annotations

import logging
import shlex
import socket
import time
from collections.abc import Sequence
from functools import cache
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from certfan.config import Host
from certfan.deploy.model import Hold, Result
from certfan.errors import HostKeyError, SshError, SshTimeoutError

if TYPE_CHECKING:
    import paramiko

__all__ = ["Result", "Session", "connect"]

log = logging.getLogger(__name__)

_READ_CHUNK = 32768
_KEEP_OUTPUT = 256 * 1024  # per stream; a runaway command must not eat memory
_STDERR_POLL = 0.05  # stdout is waited on; stderr is looked at this often meanwhile


@cache
def _paramiko() -> Any:
    """paramiko, imported on first use (0.2 s of start-up a run without SSH never pays)."""
    import paramiko

    return paramiko


@cache
def _reject_policy() -> tuple[type[Exception], Any]:
    """(the unknown-host-key exception, a RejectPolicy raising it): tells it apart."""
    pm = _paramiko()

    class UnknownHostKey(pm.SSHException):  # type: ignore[misc,name-defined]
        pass

    class Reject(pm.RejectPolicy):  # type: ignore[misc,name-defined]
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise UnknownHostKey(f"{hostname} {key.get_name()} {key.fingerprint}")

    return UnknownHostKey, Reject()


class Session:
    """One authenticated SSH connection to ``host``; run commands, then close."""

    def __init__(self, host: Host, client: paramiko.SSHClient):
        self.host = host
        self._client = client

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None,
            hold: Hold | None = None) -> Result:
        """Run ``argv`` (quoted with shlex.join) and return its status and output.

        ``hold``: (marker, answer). Once stdout holds the marker, ``answer(stdout so
        far)`` is called (it may block: its time does not count against ``timeout``)
        and what it returns is sent on stdin before stdin is closed.

        The exec request does not wait for the server's reply and stdin follows
        it at once: one round trip for the channel, then the command's output.
        Raises SshError when no command could be started (connection closed,
        channel refused); once it is started, a deadline passed or a link lost
        comes back as a Result with ``lost`` set and what output had arrived.
        """
        if not argv:
            raise ValueError("empty argv")
        pm = _paramiko()
        command = shlex.join(argv)
        name = self.host.name
        deadline = time.monotonic() + timeout
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(name, "connection is closed")
        log.debug("%s: run %s", name, _shorten(command))
        try:
            channel = transport.open_session(timeout=timeout)
            _exec_no_reply(channel, command)
        except (pm.SSHException, OSError, EOFError) as exc:
            raise _translate_io(name, exc, timeout, "opening a channel") from exc
        out, err = bytearray(), bytearray()
        try:
            channel.settimeout(max(0.01, deadline - time.monotonic()))
            if stdin:
                channel.sendall(stdin)
            if hold is None:
                channel.shutdown_write()
            status = _collect(channel, deadline, out, err, hold, timeout)
            if status is None:
                return Result(-1, bytes(out), bytes(err),
                              lost=f"{argv[0]}: timed out after {timeout:g}s")
            return Result(status, bytes(out), bytes(err))
        except (pm.SSHException, OSError, EOFError) as exc:
            lost = _translate_io(name, exc, timeout, f"running {argv[0]}")
            return Result(-1, bytes(out), bytes(err), lost=str(lost).removeprefix(f"{name}: "))
        finally:
            channel.close()


def _exec_no_reply(channel: paramiko.Channel, command: str) -> None:
    # paramiko's exec_command waits for the server's reply to the request: a
    # round trip before stdin may follow. want_reply=false (RFC 4254 6.5): an
    # exec the server refuses closes the channel without an exit status.
    pm = _paramiko()
    m = pm.Message()
    m.add_byte(pm.common.cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string("exec")
    m.add_boolean(False)
    m.add_string(command)
    transport = channel.get_transport()
    transport._send_user_message(m)  # type: ignore[attr-defined]


def _collect(
    channel: paramiko.Channel, deadline: float, out: bytearray, err: bytearray,
    hold: Hold | None = None, timeout: float = 0.0,
) -> int | None:
    """Read until EOF and the exit status; None when the deadline passed first."""
    # Channel.fileno() is avoided on purpose: paramiko's pipe behind it can be
    # written to after the channel is closed, hitting a closed or reused fd.
    while True:
        if hold is not None and hold[0] in out:
            channel.sendall(hold[1](bytes(out)))
            channel.shutdown_write()
            hold, deadline = None, time.monotonic() + timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:  # checked first: a command that never stops talking times out too
            return None
        if channel.recv_stderr_ready():
            err += channel.recv_stderr(_READ_CHUNK)
            del err[:-_KEEP_OUTPUT]
            continue
        # Blocks until stdout data, EOF (all output is in) or the short poll for stderr.
        channel.settimeout(min(remaining, _STDERR_POLL))
        try:
            chunk = channel.recv(_READ_CHUNK)
        except TimeoutError:
            continue
        if chunk:
            out += chunk
            del out[:-_KEEP_OUTPUT]
            continue
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(_READ_CHUNK)
            del err[:-_KEEP_OUTPUT]
        # EOF: the exit status follows (or the channel closes without one).
        if channel.status_event.wait(max(0.0, deadline - time.monotonic())):
            return int(channel.recv_exit_status())
        return None


def _translate_io(name: str, exc: BaseException, timeout: float, doing: str) -> SshError:
    if isinstance(exc, SshError):
        return exc
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, _paramiko().SSHException) and "timeout" in str(exc).lower()
    ):
        return SshTimeoutError(name, f"{doing}: timed out after {timeout:g}s")
    return SshError(name, f"{doing}: {exc or type(exc).__name__}")


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def connect(host: Host, *, timeout: float) -> Session:
    """Open an authenticated session to ``host`` or raise SshError/HostKeyError."""
    name = host.name
    if host.known_hosts is None:
        raise HostKeyError(name, "no known_hosts file configured; refusing to connect")
    if host.identity_file is None:
        raise SshError(name, "no identity_file configured; key authentication only")
    pm = _paramiko()
    unknown_key, reject = _reject_policy()
    client = pm.SSHClient()
    try:
        client.load_host_keys(str(host.known_hosts))
    except OSError as exc:
        raise HostKeyError(name, f"cannot read known_hosts {host.known_hosts}: {exc}") from exc
    client.set_missing_host_key_policy(reject)
    try:
        client.connect(
            sock=_open_socket(host, timeout),
            hostname=host.address,
            port=host.port,
            username=host.user,
            key_filename=str(host.identity_file),
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            channel_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
    except BaseException as exc:
        client.close()
        if isinstance(exc, Exception):
            raise _translate_connect(host, exc, timeout, unknown_key) from exc
        raise
    log.debug("%s: connected to %s@%s:%d", name, host.user, host.address, host.port)
    return Session(host, client)


def _open_socket(host: Host, timeout: float) -> socket.socket:
    # TCP_NODELAY: without it every command after the first waits ~40 ms for the
    # server's delayed ACK of the previous channel close (bench/ssh_nodelay.py).
    sock = socket.create_connection((host.address, host.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _translate_connect(
    host: Host, exc: Exception, timeout: float, unknown_key: type[Exception]
) -> SshError:
    pm = _paramiko()
    name = host.name
    where = f"{host.user}@{host.address}:{host.port}"
    if isinstance(exc, pm.BadHostKeyException):
        return HostKeyError(
            name,
            f"host key for {name} does not match known_hosts {host.known_hosts} "
            f"(possible MITM); refusing (got {exc.key.get_name()} {exc.key.fingerprint})",
        )
    if isinstance(exc, unknown_key):
        return HostKeyError(
            name,
            f"host key for {name} ({exc}) is not in known_hosts {host.known_hosts}; refusing",
        )
    if isinstance(exc, pm.AuthenticationException):
        return SshError(
            name, f"authentication refused for {where} with identity {host.identity_file}"
        )
    if isinstance(exc, pm.PasswordRequiredException):
        return SshError(name, f"identity {host.identity_file} is encrypted; not supported")
    if isinstance(exc, TimeoutError):
        return SshTimeoutError(name, f"connect to {where} timed out after {timeout:g}s")
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and exc.strerror:
        return SshError(name, f"cannot connect to {where}: {exc.strerror}")
    if isinstance(exc, pm.ssh_exception.NoValidConnectionsError):
        return SshError(name, f"cannot connect to {where}: {exc.strerror or exc}")
    if isinstance(exc, pm.SSHException) and "timeout" in str(exc).lower():
        return SshTimeoutError(name, f"connect to {where}: {exc}")
    if isinstance(exc, (pm.SSHException, OSError, EOFError, ValueError)):
        return SshError(name, f"cannot connect to {where}: {exc or type(exc).__name__}")
    return SshError(name, f"cannot connect to {where}: {type(exc).__name__}: {exc}")
