"""What ``certfan check`` can know offline: the files the config names, and the account.

:func:`problems` reads local files only (no network, no SSH, no DNS) and
returns one :class:`Problem` per thing that would make the first renewal
fail: at night, weeks later, for a timer. Each names the config key and the
file, and says what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from certfan.config.model import Config, Host

KeyCheck = Callable[[bytes], "str | None"]  # identity file bytes -> why it is no key
SecretCheck = Callable[[str], "str | None"]  # secret file text -> why it does not decode

_BIND_SECRET = re.compile(r'secret\s+"([^"]+)"')
_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


@dataclass(frozen=True)
class Problem:
    key: str  # config key path, e.g. "hosts[2].known_hosts"
    path: str | None  # the file it is about
    message: str  # one line: what is wrong and what to do

    def __str__(self) -> str:
        where = f"{self.key}: {self.path}" if self.path else self.key
        return f"{where}: {self.message}"


def problems(cfg: Config, *, ssh_key_problem: KeyCheck | None = None) -> list[Problem]:
    """Every offline problem of ``cfg``, in config order.

    ``ssh_key_problem(data)`` tells why an identity file is no private key
    (None: it is one); the check command passes the crypto module's, so this
    module needs no cryptography library.
    """
    return list(_all(cfg, ssh_key_problem))


def _all(cfg: Config, key_check: KeyCheck | None) -> Iterator[Problem]:
    acme, dns = cfg.acme, cfg.dns
    if acme.ca_bundle is not None:
        yield from _readable("acme.ca_bundle", acme.ca_bundle, pem_certs=True)
    if acme.eab is not None:
        yield from _secret("acme.eab.hmac_key_file", acme.eab.hmac_key_file, _eab_key)
    if dns.method == "rfc2136" and dns.tsig_secret_file is not None:
        yield from _secret("dns.tsig_secret_file", dns.tsig_secret_file, _tsig_secret)
    if dns.method == "hook" and dns.hook is not None:
        yield from _executable("dns.hook", dns.hook)
    if dns.method == "lexicon" and dns.credentials_file is not None:
        yield from _secret("dns.credentials_file", dns.credentials_file, _toml)
    if not acme.agree_tos and not account_registered(cfg):
        yield Problem("acme.agree_tos", None,
                      "false, and no account is registered with this CA yet: read the CA's "
                      "terms of service, then set agree_tos = true")
    for i, host in enumerate(cfg.hosts.values()):
        yield from _host(f"hosts[{i}]", host, key_check)
    for i, notifier in enumerate(cfg.notify):
        if notifier.webhook_file is not None:
            yield from _secret(f"notify[{i}].webhook_file", notifier.webhook_file, _url)
        if notifier.command and "/" in notifier.command[0]:
            yield from _executable(f"notify[{i}].command", Path(notifier.command[0]))


def account_registered(cfg: Config) -> bool:
    """An account URL recorded for this CA (issue/acmestate.py's layout)."""
    digest = hashlib.sha256(cfg.acme.directory.encode()).hexdigest()[:16]
    return (cfg.state_dir / "account" / digest / "account.json").is_file()


def _host(key: str, host: Host, key_check: KeyCheck | None) -> Iterator[Problem]:
    if host.identity_file is None:
        yield Problem(f"{key}.identity_file", None,
                      f"not set: {host.name} needs a private key to log in with")
    else:
        found = list(_secret(f"{key}.identity_file", host.identity_file, None))
        yield from found
        if not found and key_check is not None:
            reason = key_check(host.identity_file.read_bytes())
            if reason:
                yield Problem(f"{key}.identity_file", str(host.identity_file), reason)
    if host.known_hosts is None:
        yield Problem(f"{key}.known_hosts", None,
                      f"not set: {host.name}'s host key can never be verified; "
                      f"{_keyscan(host, Path('KNOWN_HOSTS'))}")
        return
    unreadable = list(_readable(f"{key}.known_hosts", host.known_hosts))
    if unreadable:
        yield from unreadable
        return
    text = host.known_hosts.read_text(errors="replace")
    if not known_host(text, host.address, host.port):
        yield Problem(f"{key}.known_hosts", str(host.known_hosts),
                      f"no entry for {_host_pattern(host.address, host.port)}; "
                      f"{_keyscan(host, host.known_hosts)}")


def _keyscan(host: Host, known_hosts: Path) -> str:
    port = f" -p {host.port}" if host.port != 22 else ""
    return (f"run 'ssh-keyscan{port} {host.address} >> {known_hosts}' and verify the "
            "fingerprint out of band (ssh-keygen -lf) before trusting it")


def _host_pattern(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def known_host(text: str, address: str, port: int) -> bool:
    """Whether a known_hosts text has a key for ``address:port`` (plain or hashed
    names, as OpenSSH writes them; @revoked and @cert-authority lines do not count)."""
    wanted = _host_pattern(address, port)
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#") or fields[0].startswith("@"):
            continue
        for name in fields[0].split(","):
            if name == wanted or _hashed_match(name, wanted):
                return True
    return False


def _hashed_match(entry: str, name: str) -> bool:
    parts = entry.split("|")  # |1|base64(salt)|base64(HMAC-SHA1(salt, name))
    if len(parts) != 4 or parts[1] != "1":
        return False
    try:
        salt, digest = base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


# -- files ---------------------------------------------------------------------------


def _readable(key: str, path: Path, *, pem_certs: bool = False) -> Iterator[Problem]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        yield Problem(key, str(path), "does not exist")
        return
    except IsADirectoryError:
        yield Problem(key, str(path), "is a directory, not a file")
        return
    except OSError as exc:
        yield Problem(key, str(path), f"cannot be read: {exc.strerror or exc}")
        return
    if pem_certs and _PEM_CERT not in data:
        yield Problem(key, str(path), "holds no PEM certificate")


def _secret(key: str, path: Path, decodes: SecretCheck | None) -> Iterator[Problem]:
    found = list(_readable(key, path))
    if found:
        yield from found
        return
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        yield Problem(key, str(path), f"is readable by group or others (mode {mode:o}): "
                      f"chmod 600 {path}")
    if decodes is not None:
        reason = decodes(path.read_text(errors="replace"))
        if reason:
            yield Problem(key, str(path), reason)


def _executable(key: str, path: Path) -> Iterator[Problem]:
    found = list(_readable(key, path))
    if found:
        yield from found
        return
    if not os.access(path, os.X_OK):
        yield Problem(key, str(path), f"is not executable: chmod +x {path}")


def tsig_secret(text: str) -> str | None:
    """The base64 secret of a TSIG secret file: a bare base64 line or BIND's
    ``key "name" { algorithm ...; secret "..."; };``; None when there is none."""
    match = _BIND_SECRET.search(text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    candidate = match.group(1) if match else "".join(lines)
    try:
        return candidate if base64.b64decode(candidate, validate=True) else None
    except (binascii.Error, ValueError):
        return None


def _tsig_secret(text: str) -> str | None:
    if tsig_secret(text) is None:
        return "is not a base64 TSIG secret (nor a BIND key clause with one)"
    return None


def _eab_key(text: str) -> str | None:
    value = text.strip()
    try:
        decoded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        decoded = b""
    if not value or not decoded or not re.fullmatch(r"[A-Za-z0-9_-]+=*", value):
        return "is not a base64url EAB HMAC key (one line, as the CA gave it)"
    return None


def _toml(text: str) -> str | None:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return "is not TOML (option = \"secret\" lines)"
    return None


def _url(text: str) -> str | None:
    value = text.strip()
    if "\n" in value or not re.match(r"https?://[^\s]+$", value):
        return "does not hold one http(s) URL"
    return None
