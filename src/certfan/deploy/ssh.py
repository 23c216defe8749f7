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
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import paramiko

from certfan.config import Host
from certfan.errors import HostKeyError, SshError, SshTimeoutError

log = logging.getLogger(__name__)

_READ_CHUNK = 32768
_KEEP_OUTPUT = 256 * 1024  # per stream; a runaway command must not eat memory
_STDERR_POLL = 0.05  # stdout is waited on; stderr is looked at this often meanwhile


@dataclass(frozen=True)
class Result:
    """What a remote command left behind."""

    status: int  # -1 when the server sent no exit status (killed by a signal)
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.status == 0

    def tail(self, lines: int = 20, chars: int = 2000) -> str:
        """The last lines of stderr then stdout, for an error report."""
        parts = (out.decode("utf-8", "replace").strip() for out in (self.stderr, self.stdout))
        text = "\n".join(part for part in parts if part)
        return "\n".join(text.splitlines()[-lines:])[-chars:]


class _UnknownHostKey(paramiko.SSHException):
    pass


class _Reject(paramiko.RejectPolicy):
    """RejectPolicy, but with an exception we can tell apart from others."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise _UnknownHostKey(f"{hostname} {key.get_name()} {key.fingerprint}")


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

    def run(self, argv: Sequence[str], *, timeout: float, stdin: bytes | None = None) -> Result:
        """Run ``argv`` (quoted with shlex.join) and return its status and output.

        Raises SshTimeoutError when the command has not finished within
        ``timeout`` seconds (the channel is closed; the remote process gets
        SIGPIPE/HUP on its next write), SshError when the connection fails.
        """
        if not argv:
            raise ValueError("empty argv")
        command = shlex.join(argv)
        name = self.host.name
        deadline = time.monotonic() + timeout
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(name, "connection is closed")
        log.debug("%s: run %s", name, _shorten(command))
        try:
            channel = transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _translate_io(name, exc, timeout, "opening a channel") from exc
        try:
            channel.settimeout(max(0.01, deadline - time.monotonic()))
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            return _collect(channel, deadline, name, argv[0], timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise _translate_io(name, exc, timeout, f"running {argv[0]}") from exc
        finally:
            channel.close()


def _collect(
    channel: paramiko.Channel, deadline: float, name: str, program: str, timeout: float
) -> Result:
    # Channel.fileno() is avoided on purpose: paramiko's pipe behind it can be
    # written to after the channel is closed, hitting a closed or reused fd.
    out = bytearray()
    err = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:  # checked first: a command that never stops talking times out too
            raise SshTimeoutError(name, f"{program}: timed out after {timeout:g}s")
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
            return Result(channel.recv_exit_status(), bytes(out), bytes(err))
        raise SshTimeoutError(name, f"{program}: no exit status within {timeout:g}s")


def _translate_io(name: str, exc: BaseException, timeout: float, doing: str) -> SshError:
    if isinstance(exc, SshError):
        return exc
    if isinstance(exc, TimeoutError) or (
        isinstance(exc, paramiko.SSHException) and "timeout" in str(exc).lower()
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
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(host.known_hosts))
    except OSError as exc:
        raise HostKeyError(name, f"cannot read known_hosts {host.known_hosts}: {exc}") from exc
    client.set_missing_host_key_policy(_Reject())
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
            raise _translate_connect(host, exc, timeout) from exc
        raise
    log.debug("%s: connected to %s@%s:%d", name, host.user, host.address, host.port)
    return Session(host, client)


def _open_socket(host: Host, timeout: float) -> socket.socket:
    # TCP_NODELAY: without it every command after the first waits ~40 ms for the
    # server's delayed ACK of the previous channel close (bench/ssh_nodelay.py).
    sock = socket.create_connection((host.address, host.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _translate_connect(host: Host, exc: Exception, timeout: float) -> SshError:
    name = host.name
    where = f"{host.user}@{host.address}:{host.port}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            name,
            f"host key for {name} does not match known_hosts {host.known_hosts} "
            f"(possible MITM); refusing (got {exc.key.get_name()} {exc.key.fingerprint})",
        )
    if isinstance(exc, _UnknownHostKey):
        return HostKeyError(
            name,
            f"host key for {name} ({exc}) is not in known_hosts {host.known_hosts}; refusing",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return SshError(
            name, f"authentication refused for {where} with identity {host.identity_file}"
        )
    if isinstance(exc, paramiko.PasswordRequiredException):
        return SshError(name, f"identity {host.identity_file} is encrypted; not supported")
    if isinstance(exc, TimeoutError):
        return SshTimeoutError(name, f"connect to {where} timed out after {timeout:g}s")
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and exc.strerror:
        return SshError(name, f"cannot connect to {where}: {exc.strerror}")
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        return SshError(name, f"cannot connect to {where}: {exc.strerror or exc}")
    if isinstance(exc, paramiko.SSHException) and "timeout" in str(exc).lower():
        return SshTimeoutError(name, f"connect to {where}: {exc}")
    if isinstance(exc, (paramiko.SSHException, OSError, EOFError, ValueError)):
        return SshError(name, f"cannot connect to {where}: {exc or type(exc).__name__}")
    return SshError(name, f"cannot connect to {where}: {type(exc).__name__}: {exc}")
