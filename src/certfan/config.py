"""TOML configuration -> frozen, typed objects, validated once at load.

Every error is a :class:`certfan.errors.ConfigError` naming the file, the key
path (``hosts[2].port``) and, where it can be found, the line.

The file format (see ``conf/example.toml`` for a commented example)::

    state_dir = "/var/lib/certfan"

    [acme]
    directory = "https://acme.example/directory"    # required
    email = "ops@example.org"                        # optional
    agree_tos = false
    account_key_type = "ec-p256"
    profile = "tlsserver"                            # optional
    ca_bundle = "/etc/certfan/ca.pem"                # optional
    eab = { kid = "...", hmac_key_file = "..." }     # optional

    [dns]
    method = "rfc2136"                               # or "hook"
    server = "127.0.0.1"
    port = 53
    tsig_key_name = "certfan."
    tsig_algorithm = "hmac-sha256"
    tsig_secret_file = "/etc/certfan/tsig.secret"
    propagation_timeout = 120.0
    poll_interval = 0.5
    nameservers = ["192.0.2.53", "192.0.2.54:5353"]   # optional
    resolvers = ["127.0.0.1:53"]                      # optional
    ns_port = 53
    hook = "/usr/local/lib/certfan/dns-hook"          # method = "hook"

    [rollout]
    canary = 1
    concurrency = 4
    failure_budget = 0
    rollback_on_halt = true
    connect_timeout = 10.0
    command_timeout = 60.0
    verify_timeout = 20.0

    [groups]
    cdn = ["cdn-frankfurt-1", "cdn-fremont-1"]

    [[hosts]]
    name = "cdn-frankfurt-1"
    address = "203.0.113.10"
    ...

    [[certificates]]
    name = "media"
    domains = ["media.example.org"]
    deploy_to = ["cdn"]                              # host or group names

Error messages
--------------
One line, ``<file>[:<line>]: <key path>: <message>``, for example::

    conf.toml:7: invalid TOML: Expected '=' after a key in a key/value pair
    conf.toml:31: hosts[1].prot: unknown key (did you mean 'port'?)
    conf.toml:29: hosts[1].address: required key missing
    conf.toml:31: hosts[1].port: expected an integer, got a string ('22')
    conf.toml:31: hosts[1].port: must be between 1 and 65535, got 70000
    conf.toml:52: certificates[0].deploy_to[1]: unknown host or group 'esmee' (did you mean 'esme'?)

* Key paths are dotted; array entries use their 0-based index, always, also
  for hosts and certificates (``hosts[1].port``, not ``hosts[sally].port``):
  the name may itself be the missing or invalid value, and the line number
  already leads to the entry.  Keys that are not bare TOML keys are quoted
  with ``repr``; values are shown with ``repr`` (control characters escaped)
  and cut at 60 characters, so a message never spans lines.
* The line is that of the key, else of the nearest enclosing statement or
  table header that can be found (for a missing key: the table's ``[...]``
  line).  It is found by a small scan of the text, since tomllib reports
  lines only for syntax errors, and it is left out whenever the scan cannot
  place the key (e.g. a table created implicitly by a dotted key).

Semantics worth knowing
-----------------------
* Local paths (``state_dir``, ``ca_bundle``, ``eab.hmac_key_file``,
  ``identity_file``, ``known_hosts``, ``tsig_secret_file``, ``hook``) are
  resolved against the directory of the config file when relative (without
  resolving symlinks); they need not exist at load time.
* ``config_test`` and ``reload`` are argv tuples.  A string is split with
  ``shlex``; it is never given to a shell, so shell syntax is refused
  (``; & | < > ( )`` unquoted, ``$`` and backquotes outside single quotes):
  write ``["sh", "-c", "..."]`` instead.  An array is taken as is.
* ``dns.server``, ``nameservers`` and ``resolvers`` must be IP addresses (DNS
  messages are sent to them directly); host addresses may be hostnames.
* ``Certificate.hosts`` is ``deploy_to`` expanded in the order written, groups
  replaced by their members in group order, first occurrence kept.
* ``Config.path`` is the path as given to :func:`load`; a file over
  ``MAX_CONFIG_BYTES`` (1 MiB) is refused.
* ``Config.hosts``, ``groups`` and ``certificates`` are plain dicts in file
  order (kept as dicts so a Config can be copied and pickled); every other
  collection is a tuple.
"""

from __future__ import annotations

import datetime
import difflib
import ipaddress
import os
import re
import shlex
import tomllib
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from certfan.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/certfan/certfan.toml")
CONFIG_ENV = "CERTFAN_CONFIG"
DEFAULT_STATE_DIR = Path("/var/lib/certfan")
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; refuse to slurp /dev/zero

KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
TSIG_ALGORITHMS = (
    "hmac-sha256",
    "hmac-sha384",
    "hmac-sha512",
    "hmac-sha224",
    "hmac-sha1",
    "hmac-md5",
)
DNS_METHODS = ("rfc2136", "hook")


@dataclass(frozen=True)
class Endpoint:
    """An address and port (a DNS server to poll or to update)."""

    address: str
    port: int

    def __str__(self) -> str:
        return (
            f"[{self.address}]:{self.port}"
            if ":" in self.address
            else f"{self.address}:{self.port}"
        )


@dataclass(frozen=True)
class ExternalAccountBinding:
    kid: str
    hmac_key_file: Path


@dataclass(frozen=True)
class AcmeConfig:
    directory: str
    email: str | None = None
    agree_tos: bool = False
    account_key_type: str = "ec-p256"
    profile: str | None = None
    ca_bundle: Path | None = None
    eab: ExternalAccountBinding | None = None


@dataclass(frozen=True)
class DnsConfig:
    method: str = "rfc2136"
    server: str = "127.0.0.1"
    port: int = 53
    tsig_key_name: str | None = None
    tsig_algorithm: str = "hmac-sha256"
    tsig_secret_file: Path | None = None
    propagation_timeout: float = 120.0
    poll_interval: float = 0.5
    nameservers: tuple[Endpoint, ...] = ()
    resolvers: tuple[Endpoint, ...] = ()
    ns_port: int = 53
    hook: Path | None = None


@dataclass(frozen=True)
class RolloutPolicy:
    canary: int = 1
    concurrency: int = 4
    failure_budget: int = 0
    rollback_on_halt: bool = True
    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    verify_timeout: float = 20.0


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    identity_file: Path | None = None
    known_hosts: Path | None = None
    root: str = "/etc/certfan"
    config_test: tuple[str, ...] = ("nginx", "-t")
    reload: tuple[str, ...] = ("systemctl", "reload", "nginx")
    probe_address: str | None = None
    probe_port: int = 443

    @property
    def probe(self) -> Endpoint:
        return Endpoint(self.probe_address or self.address, self.probe_port)


@dataclass(frozen=True)
class Certificate:
    name: str
    domains: tuple[str, ...]
    key_type: str = "ec-p256"
    reuse_key: bool = False
    deploy_to: tuple[str, ...] = ()  # as written: host and group names
    hosts: tuple[str, ...] = ()  # resolved: host names, in config order


@dataclass(frozen=True)
class Config:
    path: Path
    state_dir: Path
    acme: AcmeConfig
    dns: DnsConfig
    rollout: RolloutPolicy
    hosts: dict[str, Host] = field(default_factory=dict)  # in file order
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    certificates: dict[str, Certificate] = field(default_factory=dict)

    def host(self, name: str) -> Host:
        from certfan.errors import ConfigError

        try:
            return self.hosts[name]
        except KeyError:
            raise ConfigError(str(self.path), f"unknown host {name!r}", key="hosts") from None

    def certificate(self, name: str) -> Certificate:
        from certfan.errors import ConfigError

        try:
            return self.certificates[name]
        except KeyError:
            raise ConfigError(
                str(self.path), f"unknown certificate {name!r}", key="certificates"
            ) from None


def find_config(cli_path: str | os.PathLike[str] | None) -> Path:
    """--config, then $CERTFAN_CONFIG, then /etc/certfan/certfan.toml."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def load(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate one TOML file. Raises ConfigError."""
    file = os.fspath(path)
    text = _read(file)
    doc = _parse(file, text)
    ctx = _Ctx(file, Path(file).absolute().parent, _line_map(text))
    _reject_unknown(ctx, (), doc, _TOP_KEYS)
    if "acme" not in doc:
        raise ctx.error(("acme",), "required table missing")
    state_dir = _optional(ctx, (), doc, "state_dir", _local_path, DEFAULT_STATE_DIR)
    acme = _acme(ctx, doc["acme"])
    dns = _dns(ctx, doc.get("dns", {}))
    rollout = RolloutPolicy(**_Table(ctx, ("rollout",), doc.get("rollout", {}), _ROLLOUT).values())
    hosts = _hosts(ctx, doc.get("hosts", []))
    groups = _groups(ctx, doc.get("groups", {}), hosts)
    certificates = _certificates(ctx, doc.get("certificates", []), hosts, groups)
    return Config(
        path=Path(file),
        state_dir=state_dir,
        acme=acme,
        dns=dns,
        rollout=rollout,
        hosts=hosts,
        groups=groups,
        certificates=certificates,
    )


# -- reading and parsing -------------------------------------------------------


def _read(file: str) -> str:
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(file, f"cannot read: {reason}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(file, f"cannot read: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(file, "invalid TOML: not UTF-8 text", line=line) from exc


_TOML_WHERE = re.compile(r"(.*) \(at line ([0-9]+), column [0-9]+\)", re.DOTALL)


def _parse(file: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = str(exc), None
        m = _TOML_WHERE.fullmatch(message)
        if m:
            message, line = m.group(1), int(m.group(2))
        raise ConfigError(file, f"invalid TOML: {_one_line(message)}", line=line) from exc
    except RecursionError as exc:
        raise ConfigError(file, "invalid TOML: nested too deeply") from exc
    except ValueError as exc:  # tomllib lets int()'s digit limit through
        reason = str(exc).split(":")[0]
        raise ConfigError(file, f"invalid TOML: {_one_line(reason)}") from exc


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- locating keys in the text ---------------------------------------------------

KeyPath = tuple[str | int, ...]

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED_KEY = re.compile(rf"[ \t]*({_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*)[ \t]*")


def _line_map(text: str) -> dict[KeyPath, int]:
    """Line of every table header and key/value statement of a valid document.

    Tables of an array of tables get their index: ``("hosts", 1, "port")``.
    After a header the scan cannot decode, keys are not recorded until the
    next header: no line is better than a wrong one.
    """
    lines: dict[KeyPath, int] = {}
    table: KeyPath | None = ()
    last_index: dict[KeyPath, int] = {}  # array of tables -> index of its last entry
    for line, pos in _statements(text):
        end = text.find("\n", pos)
        stmt = text[pos : end if end >= 0 else len(text)]
        if stmt.startswith("[["):
            parts = _key_parts(stmt[2:], "]]")
            table = None if parts is None else _header_path(parts, True, last_index)
        elif stmt.startswith("["):
            parts = _key_parts(stmt[1:], "]")
            table = None if parts is None else _header_path(parts, False, last_index)
        elif table is not None:
            parts = _key_parts(stmt, "=")
            if parts is not None:
                lines.setdefault(table + parts, line)
            continue
        if table is not None:
            lines.setdefault(table, line)
    return lines


def _statements(text: str) -> Iterator[tuple[int, int]]:
    """(line, offset) of each statement: skips strings, comments, open brackets."""
    i, n, line, depth, line_start = 0, len(text), 1, 0, True
    while i < n:
        c = text[i]
        if c == "\n":
            line, line_start, i = line + 1, True, i + 1
            continue
        if c in " \t\r":
            i += 1
            continue
        if line_start and depth == 0 and c != "#":
            yield line, i
        line_start = False
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in "\"'":
            end = _string_end(text, i)
            line += text.count("\n", i, end)
            i = end
        else:
            depth += (c in "[{") - (c in "]}")
            i += 1


def _string_end(text: str, i: int) -> int:
    """Offset just past the TOML string starting at ``text[i]``."""
    q, n = text[i], len(text)
    multi = text.startswith(q * 3, i)
    j = i + (3 if multi else 1)
    while j < n:
        if q == '"' and text[j] == "\\":
            j += 2
        elif multi and text.startswith(q * 3, j):
            j += 3
            for _ in range(2):  # up to two quotes may end the content
                if j < n and text[j] == q:
                    j += 1
            return j
        elif not multi and text[j] == q:
            return j + 1
        else:
            j += 1
    return n


def _key_parts(text: str, closer: str) -> tuple[str, ...] | None:
    m = _DOTTED_KEY.match(text)
    if not m or not text.startswith(closer, m.end()):
        return None
    try:
        node: Any = tomllib.loads(f"{m.group(1)} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts: list[str] = []
    while isinstance(node, dict) and len(node) == 1:
        key, node = next(iter(node.items()))
        parts.append(key)
    return tuple(parts)


def _header_path(parts: tuple[str, ...], array: bool, last_index: dict[KeyPath, int]) -> KeyPath:
    path: KeyPath = ()
    for k, part in enumerate(parts):
        path += (part,)
        if k == len(parts) - 1 and array:
            last_index[path] = last_index.get(path, -1) + 1
            path += (last_index[path],)
        elif path in last_index:
            path += (last_index[path],)
    return path


# -- validation machinery ----------------------------------------------------------

T = TypeVar("T")
D = TypeVar("D")


@dataclass(frozen=True)
class _Ctx:
    file: str
    base: Path  # relative local paths are resolved against this
    lines: Mapping[KeyPath, int]

    def error(self, key: KeyPath, message: str) -> ConfigError:
        return ConfigError(self.file, message, key=_format_key(key) or None, line=self._line(key))

    def _line(self, key: KeyPath) -> int | None:
        for n in range(len(key), 0, -1):
            if key[:n] in self.lines:
                return self.lines[key[:n]]
        return None


Conv = Callable[[_Ctx, KeyPath, Any], T]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _format_key(key: KeyPath) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else _show(part)
            out += f".{text}" if out else text
    return out


def _show(value: object, limit: int = 60) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (datetime.date, datetime.time)):
        text = value.isoformat()
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_TYPE_NAMES: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
    (datetime.datetime, "a date-time"),
    (datetime.date, "a date"),
    (datetime.time, "a time"),
)


def _got(value: object) -> str:
    name = next((n for t, n in _TYPE_NAMES if isinstance(value, t)), type(value).__name__)
    if isinstance(value, (list, dict)):
        return name
    return f"{name} ({_show(value)})"


def _suggest(word: str, options: Collection[str]) -> str:
    lowered = {o.lower(): o for o in options}
    close = [lowered[word.lower()]] if word.lower() in lowered else []
    close = close or difflib.get_close_matches(word[:200], list(options), n=3, cutoff=0.6)
    # Swapped letters are the commonest typo: 'prot' means 'port', not 'root'.
    close.sort(key=lambda option: sorted(option) != sorted(word))
    return f" (did you mean {close[0]!r}?)" if close else ""


def _reject_unknown(
    ctx: _Ctx, key: KeyPath, table: dict[str, Any], allowed: Collection[str]
) -> None:
    for name in table:
        if name not in allowed:
            raise ctx.error(key + (name,), "unknown key" + _suggest(name, allowed))


def _optional(
    ctx: _Ctx, key: KeyPath, table: dict[str, Any], name: str, conv: Conv[T], default: D
) -> T | D:
    return conv(ctx, key + (name,), table[name]) if name in table else default


class _Table:
    """One TOML table: unknown keys refused, present keys converted in file order."""

    def __init__(self, ctx: _Ctx, key: KeyPath, value: object, schema: Mapping[str, Conv[Any]]):
        if not isinstance(value, dict):
            raise ctx.error(key, f"expected a table, got {_got(value)}")
        _reject_unknown(ctx, key, value, schema)
        self.ctx, self.key, self.data, self.schema = ctx, key, value, schema

    def require(self, *names: str, why: str = "") -> None:
        for name in names:
            if name not in self.data:
                raise self.ctx.error(self.key + (name,), "required key missing" + why)

    def values(self) -> dict[str, Any]:
        return {n: self.schema[n](self.ctx, self.key + (n,), v) for n, v in self.data.items()}


# -- scalar checks -----------------------------------------------------------------


def _string(ctx: _Ctx, key: KeyPath, value: object) -> str:
    if not isinstance(value, str):
        raise ctx.error(key, f"expected a string, got {_got(value)}")
    return value


def _text(ctx: _Ctx, key: KeyPath, value: object) -> str:
    """A non-empty string without NUL, line breaks or other control characters."""
    s = _string(ctx, key, value)
    if not s:
        raise ctx.error(key, "must not be empty")
    if not s.isprintable():
        raise ctx.error(key, f"must not contain control characters or line breaks: {_show(s)}")
    return s


def _boolean(ctx: _Ctx, key: KeyPath, value: object) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(key, f"expected a boolean (true or false), got {_got(value)}")
    return value


def _integer(lo: int, hi: int) -> Conv[int]:
    def conv(ctx: _Ctx, key: KeyPath, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(key, f"expected an integer, got {_got(value)}")
        if not lo <= value <= hi:
            raise ctx.error(key, f"must be between {lo} and {hi}, got {_show(value)}")
        return value

    return conv


_port = _integer(1, 65535)


def _seconds(hi: int) -> Conv[float]:
    def conv(ctx: _Ctx, key: KeyPath, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(key, f"expected a number of seconds, got {_got(value)}")
        if not 0 < value <= hi:  # also refuses nan
            raise ctx.error(key, f"must be greater than 0 and at most {hi}, got {_show(value)}")
        return float(value)

    return conv


def _choice(options: tuple[str, ...]) -> Conv[str]:
    def conv(ctx: _Ctx, key: KeyPath, value: object) -> str:
        s = _string(ctx, key, value)
        if s not in options:
            raise ctx.error(
                key, f"must be one of {', '.join(options)}; got {_show(s)}{_suggest(s, options)}"
            )
        return s

    return conv


def _array(conv: Conv[T], *, nonempty: bool = False, unique: str = "") -> Conv[tuple[T, ...]]:
    def array(ctx: _Ctx, key: KeyPath, value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise ctx.error(key, f"expected an array, got {_got(value)}")
        if nonempty and not value:
            raise ctx.error(key, "must not be empty")
        items: list[T] = []
        for i, v in enumerate(value):
            item = conv(ctx, key + (i,), v)
            if unique and item in items:
                raise ctx.error(key + (i,), f"duplicate {unique} {_show(item)}")
            items.append(item)
        return tuple(items)

    return array


# -- names, addresses, paths, commands ------------------------------------------

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
_ANY_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_ROOT = re.compile(r"(?:/[A-Za-z0-9._-]+)+/?")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(.+)")
_PROFILE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENDPOINT = re.compile(r"\[([^\]]+)\](?::([0-9]{1,5}))?|([^:]+)(?::([0-9]{1,5}))?")


def _name(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    if not _SAFE_NAME.fullmatch(s) or ".." in s:
        raise ctx.error(
            key,
            f"invalid name {_show(s)}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'",
        )
    return s


def _user(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    if not _USER.fullmatch(s):
        raise ctx.error(
            key,
            f"invalid user name {_show(s)}: use 1-32 lower-case letters, digits, '_' or '-', "
            "starting with a letter or '_'",
        )
    return s


def _is_dns_name(s: str, label: re.Pattern[str]) -> bool:
    name = s.removesuffix(".")
    return 0 < len(name) <= 253 and all(label.fullmatch(part) for part in name.split("."))


def _is_hostname(s: str) -> bool:
    # An all-numeric last label is a mistyped IPv4 address, not a name.
    return _is_dns_name(s, _LDH_LABEL) and not s.rstrip(".").rsplit(".", 1)[-1].isdigit()


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _address(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    if not (_is_ip(s) or _is_hostname(s)):
        raise ctx.error(key, f"not an IP address or hostname: {_show(s)}")
    return s


def _ip(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    if not _is_ip(s):
        raise ctx.error(key, f"not an IP address: {_show(s)}")
    return s


def _endpoint(ctx: _Ctx, key: KeyPath, value: object) -> tuple[str, int | None]:
    """``addr``, ``addr:port``, ``v6`` or ``[v6]:port``; the port may be left to a default."""
    s = _string(ctx, key, value)
    m = _ENDPOINT.fullmatch(s)
    if _is_ip(s):  # a bare IPv6 address has colons of its own
        address, port = s, None
    elif m and (m.group(1) is None or ":" in m.group(1)) and _is_ip(m.group(1) or m.group(3)):
        address, port = m.group(1) or m.group(3), m.group(2) or m.group(4)
    else:
        raise ctx.error(
            key,
            f"expected 'address', 'address:port' or '[v6]:port' with an IP address, got {_show(s)}",
        )
    if port is None:
        return address, None
    return address, _port(ctx, key, int(port))


def _domain(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    name = s.removesuffix(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except ValueError:  # UnicodeError: not a valid internationalized name
            raise ctx.error(key, f"not a valid DNS name: {_show(s)}") from None
    name = name.lower()
    labels = name.split(".")
    if "*" in name and (labels[0] != "*" or "*" in name[1:]):
        raise ctx.error(
            key, f"a wildcard must be the whole leftmost label ('*.example.org'), got {_show(s)}"
        )
    rest = ".".join(labels[1:]) if labels[0] == "*" else name
    if not _is_hostname(rest):
        raise ctx.error(key, f"not a valid DNS name: {_show(s)}")
    return name


def _dns_name(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    if not _is_dns_name(s, _ANY_LABEL):
        raise ctx.error(key, f"not a valid DNS name: {_show(s)}")
    return s


def _email(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    m = _EMAIL.fullmatch(s)
    if not m or not _is_hostname(m.group(1)) or "." not in m.group(1).strip("."):
        raise ctx.error(key, f"not an email address: {_show(s)}")
    return s


def _directory(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _text(ctx, key, value)
    try:
        url = urllib.parse.urlsplit(s)
        host = url.hostname or ""
        url.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ctx.error(key, f"not a URL: {_show(s)}") from None
    if " " in s or not (_is_ip(host) or _is_hostname(host)):
        raise ctx.error(key, f"not a URL: {_show(s)}")
    if not (
        url.scheme == "https" or url.scheme == "http" and host in ("localhost", "127.0.0.1", "::1")
    ):
        raise ctx.error(
            key, f"must be an https:// URL (http:// only for localhost), got {_show(s)}"
        )
    return s


def _profile(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    if not _PROFILE.fullmatch(s):
        raise ctx.error(key, f"invalid profile name {_show(s)}")
    return s


def _token(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _text(ctx, key, value)
    if " " in s:
        raise ctx.error(key, f"must not contain spaces: {_show(s)}")
    return s


def _local_path(ctx: _Ctx, key: KeyPath, value: object) -> Path:
    s = _text(ctx, key, value)
    if s.startswith("~"):
        raise ctx.error(
            key,
            f"'~' is not expanded; write an absolute path or one relative to the config file: {_show(s)}",
        )
    path = Path(s)
    if ".." in path.parts:
        raise ctx.error(key, f"must not contain '..' components: {_show(s)}")
    return path if path.is_absolute() else ctx.base / path


def _remote_root(ctx: _Ctx, key: KeyPath, value: object) -> str:
    s = _string(ctx, key, value)
    if s.strip("/") == "" and s:
        raise ctx.error(key, "must not be '/'")
    if not _ROOT.fullmatch(s) or any(part in (".", "..") for part in s.split("/")):
        raise ctx.error(
            key,
            f"unsafe remote path {_show(s)}: use an absolute path of letters, digits, "
            "'.', '_', '-' and '/', without '.' or '..' components",
        )
    return s.rstrip("/")


def _shell_syntax(s: str) -> str | None:
    """The first character a shell would treat specially (outside quotes), if any."""
    quote, i = "", 0
    while i < len(s):
        c = s[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            i += 1
        elif quote == '"':
            if c in "$`":
                return c
            quote = "" if c == '"' else quote
        elif c in "'\"":
            quote = c
        elif c in ";&|<>()$`":
            return c
        i += 1
    return None


def _command(ctx: _Ctx, key: KeyPath, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        s = _text(ctx, key, value)
        special = _shell_syntax(s)
        if special:
            raise ctx.error(
                key,
                f"{special!r} is shell syntax, but commands run without a shell; "
                'write an array such as ["sh", "-c", "..."]',
            )
        try:
            argv = tuple(shlex.split(s))
        except ValueError as exc:
            raise ctx.error(key, f"cannot split into words: {exc}") from None
    elif isinstance(value, list):
        argv = _array(_text)(ctx, key, value)
    else:
        raise ctx.error(key, f"expected a string or an array of strings, got {_got(value)}")
    if not argv or not argv[0]:
        raise ctx.error(key, "must not be empty")
    return argv


# -- sections ------------------------------------------------------------------------

_TOP_KEYS = ("state_dir", "acme", "dns", "rollout", "groups", "hosts", "certificates")

_EAB: dict[str, Conv[Any]] = {"kid": _token, "hmac_key_file": _local_path}


def _eab(ctx: _Ctx, key: KeyPath, value: object) -> ExternalAccountBinding:
    table = _Table(ctx, key, value, _EAB)
    table.require("kid", "hmac_key_file")
    return ExternalAccountBinding(**table.values())


_ACME: dict[str, Conv[Any]] = {
    "directory": _directory,
    "email": _email,
    "agree_tos": _boolean,
    "account_key_type": _choice(KEY_TYPES),
    "profile": _profile,
    "ca_bundle": _local_path,
    "eab": _eab,
}


def _acme(ctx: _Ctx, value: object) -> AcmeConfig:
    table = _Table(ctx, ("acme",), value, _ACME)
    table.require("directory")
    return AcmeConfig(**table.values())


_DNS: dict[str, Conv[Any]] = {
    "method": _choice(DNS_METHODS),
    "server": _ip,
    "port": _port,
    "tsig_key_name": _dns_name,
    "tsig_algorithm": _choice(TSIG_ALGORITHMS),
    "tsig_secret_file": _local_path,
    "propagation_timeout": _seconds(86400),
    "poll_interval": _seconds(60),
    "nameservers": _array(_endpoint),
    "resolvers": _array(_endpoint),
    "ns_port": _port,
    "hook": _local_path,
}


def _dns(ctx: _Ctx, value: object) -> DnsConfig:
    table = _Table(ctx, ("dns",), value, _DNS)
    values = table.values()
    method = values.get("method", DnsConfig.method)
    if method == "rfc2136":
        table.require("tsig_key_name", "tsig_secret_file", why=' (method = "rfc2136")')
    else:
        table.require("hook", why=f' (method = "{method}")')
    for name, port in (
        ("nameservers", values.get("ns_port", DnsConfig.ns_port)),
        ("resolvers", 53),
    ):
        if name in values:
            values[name] = tuple(Endpoint(a, p or port) for a, p in values[name])
    return DnsConfig(**values)


_ROLLOUT: dict[str, Conv[Any]] = {
    "canary": _integer(0, 10000),
    "concurrency": _integer(1, 256),
    "failure_budget": _integer(0, 10000),
    "rollback_on_halt": _boolean,
    "connect_timeout": _seconds(86400),
    "command_timeout": _seconds(86400),
    "verify_timeout": _seconds(86400),
}

_HOST: dict[str, Conv[Any]] = {
    "name": _name,
    "address": _address,
    "port": _port,
    "user": _user,
    "identity_file": _local_path,
    "known_hosts": _local_path,
    "root": _remote_root,
    "config_test": _command,
    "reload": _command,
    "probe_address": _address,
    "probe_port": _port,
}

_CERTIFICATE: dict[str, Conv[Any]] = {
    "name": _name,
    "domains": _array(_domain, nonempty=True, unique="domain"),
    "key_type": _choice(KEY_TYPES),
    "reuse_key": _boolean,
    "deploy_to": _array(_string),
}


def _array_of_tables(ctx: _Ctx, name: str, value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ctx.error((name,), f"expected an array of tables ([[{name}]]), got {_got(value)}")
    return value


def _hosts(ctx: _Ctx, value: object) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
    index: dict[str, int] = {}
    for i, raw in enumerate(_array_of_tables(ctx, "hosts", value)):
        table = _Table(ctx, ("hosts", i), raw, _HOST)
        table.require("name", "address")
        host = Host(**table.values())
        if host.name in hosts:
            raise ctx.error(
                ("hosts", i, "name"),
                f"duplicate host name {host.name!r} (first used by hosts[{index[host.name]}])",
            )
        hosts[host.name], index[host.name] = host, i
    return hosts


def _groups(ctx: _Ctx, value: object, hosts: Mapping[str, Host]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ctx.error(("groups",), f"expected a table ([groups]), got {_got(value)}")
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in value.items():
        key: KeyPath = ("groups", name)
        _name(ctx, key, name)
        if name in hosts:
            raise ctx.error(key, f"group name {name!r} is also a host name")
        groups[name] = _array(_string, nonempty=True, unique="member")(ctx, key, members)
        for i, member in enumerate(groups[name]):
            if member not in hosts:
                raise ctx.error(
                    key + (i,), f"unknown host {_show(member)}{_suggest(member, hosts)}"
                )
    return groups


def _certificates(
    ctx: _Ctx, value: object, hosts: Mapping[str, Host], groups: Mapping[str, tuple[str, ...]]
) -> dict[str, Certificate]:
    certificates: dict[str, Certificate] = {}
    index: dict[str, int] = {}
    for i, raw in enumerate(_array_of_tables(ctx, "certificates", value)):
        table = _Table(ctx, ("certificates", i), raw, _CERTIFICATE)
        table.require("name", "domains")
        values = table.values()
        resolved: dict[str, None] = {}  # an ordered set
        for k, target in enumerate(values.get("deploy_to", ())):
            if target in hosts:
                resolved[target] = None
            elif target in groups:
                resolved.update(dict.fromkeys(groups[target]))
            else:
                raise ctx.error(
                    ("certificates", i, "deploy_to", k),
                    f"unknown host or group {_show(target)}{_suggest(target, [*hosts, *groups])}",
                )
        cert = Certificate(**values, hosts=tuple(resolved))
        if cert.name in certificates:
            raise ctx.error(
                ("certificates", i, "name"),
                f"duplicate certificate name {cert.name!r} (first used by certificates[{index[cert.name]}])",
            )
        certificates[cert.name], index[cert.name] = cert, i
    return certificates
