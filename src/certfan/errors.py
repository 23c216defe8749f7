"""Errors certfan raises. Each carries the data a user needs to act on it.

    CertfanError                 base; str(err) is the one line a user sees
    ├── ConfigError              file, key path, line -> exit 2
    ├── UsageError               a command-line value (cli/options.py) -> exit 2
    ├── StoreError               local versioned store / deploy state
    ├── LockError                another run holds the lock -> exit 75
    ├── CryptoError              a key, CSR or certificate cannot be made, parsed or trusted
    ├── AcmeError                the CA refused or failed (domain, CA detail)
    │   └── RateLimitedError     carries retry_after seconds
    ├── DnsError                 RFC 2136 update / propagation (zone, server, rcode)
    ├── Interrupted              a worker stopped because the run was interrupted -> exit 130
    ├── SshError                 connect, auth, host key, command (host, step)
    │   ├── HostKeyError         host key unknown or changed: never trusted
    │   └── SshTimeoutError      connect or command past its deadline
    └── ProbeError               TLS handshake with a host's probe address failed

Internal, caught in the module that raises them and never shown as such:

    StepFailed(Exception)        deploy/model.py: a host failed a step (host, step, output
                                 tail); becomes that host's outcome in the rollout report
    PlanError(ValueError)        deploy/plan.py: the host is in a state no plan starts from;
                                 hostrun turns it into a failed step

Library exceptions (paramiko, dnspython, acme, cryptography) are translated into
these in the one module that imports the library, with ``raise ... from exc``.
"""

from __future__ import annotations


class CertfanError(Exception):
    """Base of every error certfan reports to a user."""

    exit_code: int = 1


class ConfigError(CertfanError):
    """The configuration file is unreadable or invalid."""

    exit_code = 2

    def __init__(self, path: str, message: str, key: str | None = None, line: int | None = None):
        self.path = path
        self.key = key
        self.line = line
        self.message = message
        where = str(path)
        if line is not None:
            where += f":{line}"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")


class StoreError(CertfanError):
    """The local store or deploy state cannot be read or written."""


class LockError(CertfanError):
    """Another certfan run holds the lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later


class CryptoError(CertfanError):
    """A key, CSR or certificate could not be made, parsed, or is not trustworthy."""


class AcmeError(CertfanError):
    """The ACME server refused or failed a request."""


class RateLimitedError(AcmeError):
    def __init__(self, message: str, retry_after: float | None = None):
        self.retry_after = retry_after
        super().__init__(message)


class DnsError(CertfanError):
    """A DNS update was refused or a record did not propagate in time."""


class Interrupted(CertfanError):
    """Work stopped because the run was interrupted (Ctrl-C in the main thread)."""

    exit_code = 130


class SshError(CertfanError):
    """SSH connection, authentication or remote command failure."""

    def __init__(self, host: str, message: str, step: str | None = None):
        self.host = host
        self.step = step
        super().__init__(f"{host}: {message}")


class HostKeyError(SshError):
    """The host key is unknown or changed; the host is never trusted."""


class SshTimeoutError(SshError):
    """A connect or a remote command did not finish within its deadline."""


class ProbeError(CertfanError):
    """A TLS handshake with a host's probe address failed."""

    def __init__(self, endpoint: str, sni: str, message: str):
        self.endpoint = endpoint
        self.sni = sni
        super().__init__(f"{endpoint} (SNI {sni}): {message}")
