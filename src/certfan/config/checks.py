"""Checks of config values: each converts one TOML value or raises ConfigError.

A check is ``check(ctx, key, value) -> converted``; ``ctx`` knows the file and
the line of each key, so every message names both. config.py's section
schemas map each key to its check.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import urllib.parse
from pathlib import Path
from typing import TypeVar

from certfan.config.lines import KeyPath

# The frame (re-exported: the section schemas and config/notify.py use check.Ctx etc.)
from certfan.config.table import Conv as Conv
from certfan.config.table import Ctx as Ctx
from certfan.config.table import Table as Table
from certfan.config.table import got as got
from certfan.config.table import optional as optional
from certfan.config.table import reject_unknown as reject_unknown
from certfan.config.table import show as show
from certfan.config.table import suggest as suggest

T = TypeVar("T")


# -- scalar checks -----------------------------------------------------------------


def string(ctx: Ctx, key: KeyPath, value: object) -> str:
    if not isinstance(value, str):
        raise ctx.error(key, f"expected a string, got {got(value)}")
    return value


def text(ctx: Ctx, key: KeyPath, value: object) -> str:
    """A non-empty string without NUL, line breaks or other control characters."""
    s = string(ctx, key, value)
    if not s:
        raise ctx.error(key, "must not be empty")
    if not s.isprintable():
        raise ctx.error(key, f"must not contain control characters or line breaks: {show(s)}")
    return s


def boolean(ctx: Ctx, key: KeyPath, value: object) -> bool:
    if not isinstance(value, bool):
        raise ctx.error(key, f"expected a boolean (true or false), got {got(value)}")
    return value


def integer(lo: int, hi: int) -> Conv[int]:
    def conv(ctx: Ctx, key: KeyPath, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ctx.error(key, f"expected an integer, got {got(value)}")
        if not lo <= value <= hi:
            raise ctx.error(key, f"must be between {lo} and {hi}, got {show(value)}")
        return value

    return conv


port = integer(1, 65535)

_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)%")


def count_or_percent(ctx: Ctx, key: KeyPath, value: object) -> int | str:
    """A count of hosts (0..10000) or a share of them, "10%" (0..100)."""
    if isinstance(value, str):
        match = _PERCENT.fullmatch(value.strip())
        if match is None or float(match.group(1)) > 100:
            raise ctx.error(key, f'expected a count or a percentage like "10%", got {show(value)}')
        return f"{match.group(1)}%"
    return integer(0, 10000)(ctx, key, value)


def seconds(hi: int) -> Conv[float]:
    def conv(ctx: Ctx, key: KeyPath, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ctx.error(key, f"expected a number of seconds, got {got(value)}")
        if not 0 < value <= hi:  # also refuses nan
            raise ctx.error(key, f"must be greater than 0 and at most {hi}, got {show(value)}")
        return float(value)

    return conv


def choice(options: tuple[str, ...]) -> Conv[str]:
    def conv(ctx: Ctx, key: KeyPath, value: object) -> str:
        s = string(ctx, key, value)
        if s not in options:
            raise ctx.error(
                key, f"must be one of {', '.join(options)}; got {show(s)}{suggest(s, options)}"
            )
        return s

    return conv


def array(conv: Conv[T], *, nonempty: bool = False, unique: str = "") -> Conv[tuple[T, ...]]:
    def conv_array(ctx: Ctx, key: KeyPath, value: object) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise ctx.error(key, f"expected an array, got {got(value)}")
        if nonempty and not value:
            raise ctx.error(key, "must not be empty")
        items: list[T] = []
        for i, v in enumerate(value):
            item = conv(ctx, key + (i,), v)
            if unique and item in items:
                raise ctx.error(key + (i,), f"duplicate {unique} {show(item)}")
            items.append(item)
        return tuple(items)

    return conv_array


# -- names, addresses, paths, commands ------------------------------------------

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
_ANY_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_ROOT = re.compile(r"(?:/[A-Za-z0-9._-]+)+/?")
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(.+)")
_PROFILE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ENDPOINT = re.compile(r"\[([^\]]+)\](?::([0-9]{1,5}))?|([^:]+)(?::([0-9]{1,5}))?")


def name(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    if not _SAFE_NAME.fullmatch(s) or ".." in s:
        raise ctx.error(
            key,
            f"invalid name {show(s)}: use 1-63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, without '..'",
        )
    return s


def user(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    if not _USER.fullmatch(s):
        raise ctx.error(
            key,
            f"invalid user name {show(s)}: use 1-32 lower-case letters, digits, '_' or '-', "
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


def address(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    if not (_is_ip(s) or _is_hostname(s)):
        raise ctx.error(key, f"not an IP address or hostname: {show(s)}")
    return s


def ip(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    if not _is_ip(s):
        raise ctx.error(key, f"not an IP address: {show(s)}")
    return s


def endpoint(ctx: Ctx, key: KeyPath, value: object) -> tuple[str, int | None]:
    """``addr``, ``addr:port``, ``v6`` or ``[v6]:port``; the port may be left to a default."""
    s = string(ctx, key, value)
    m = _ENDPOINT.fullmatch(s)
    if _is_ip(s):  # a bare IPv6 address has colons of its own
        host, digits = s, None
    elif m and (m.group(1) is None or ":" in m.group(1)) and _is_ip(m.group(1) or m.group(3)):
        host, digits = m.group(1) or m.group(3), m.group(2) or m.group(4)
    else:
        raise ctx.error(
            key,
            f"expected 'address', 'address:port' or '[v6]:port' with an IP address, got {show(s)}",
        )
    if digits is None:
        return host, None
    return host, port(ctx, key, int(digits))


def domain(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    name = s.removesuffix(".")
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except ValueError:  # UnicodeError: not a valid internationalized name
            raise ctx.error(key, f"not a valid DNS name: {show(s)}") from None
    name = name.lower()
    labels = name.split(".")
    if "*" in name and (labels[0] != "*" or "*" in name[1:]):
        raise ctx.error(
            key, f"a wildcard must be the whole leftmost label ('*.example.org'), got {show(s)}"
        )
    rest = ".".join(labels[1:]) if labels[0] == "*" else name
    if not _is_hostname(rest):
        raise ctx.error(key, f"not a valid DNS name: {show(s)}")
    return name


def dns_name(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    if not _is_dns_name(s, _ANY_LABEL):
        raise ctx.error(key, f"not a valid DNS name: {show(s)}")
    return s


def email(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    m = _EMAIL.fullmatch(s)
    if not m or not _is_hostname(m.group(1)) or "." not in m.group(1).strip("."):
        raise ctx.error(key, f"not an email address: {show(s)}")
    return s


def directory(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = text(ctx, key, value)
    try:
        url = urllib.parse.urlsplit(s)
        host = url.hostname or ""
        url.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ctx.error(key, f"not a URL: {show(s)}") from None
    if " " in s or not (_is_ip(host) or _is_hostname(host)):
        raise ctx.error(key, f"not a URL: {show(s)}")
    if not (
        url.scheme == "https" or url.scheme == "http" and host in ("localhost", "127.0.0.1", "::1")
    ):
        raise ctx.error(key, f"must be an https:// URL (http:// only for localhost), got {show(s)}")
    return s


def profile(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    if not _PROFILE.fullmatch(s):
        raise ctx.error(key, f"invalid profile name {show(s)}")
    return s


def token(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = text(ctx, key, value)
    if " " in s:
        raise ctx.error(key, f"must not contain spaces: {show(s)}")
    return s


def local_path(ctx: Ctx, key: KeyPath, value: object) -> Path:
    s = text(ctx, key, value)
    if s.startswith("~"):
        raise ctx.error(
            key,
            "'~' is not expanded; write an absolute path or one relative to the config file: "
            f"{show(s)}",
        )
    path = Path(s)
    if ".." in path.parts:
        raise ctx.error(key, f"must not contain '..' components: {show(s)}")
    return path if path.is_absolute() else ctx.base / path


def remote_root(ctx: Ctx, key: KeyPath, value: object) -> str:
    s = string(ctx, key, value)
    if s.strip("/") == "" and s:
        raise ctx.error(key, "must not be '/'")
    if not _ROOT.fullmatch(s) or any(part in (".", "..") for part in s.split("/")):
        raise ctx.error(
            key,
            f"unsafe remote path {show(s)}: use an absolute path of letters, digits, "
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


def command(ctx: Ctx, key: KeyPath, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        s = text(ctx, key, value)
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
        argv = array(text)(ctx, key, value)
    else:
        raise ctx.error(key, f"expected a string or an array of strings, got {got(value)}")
    if not argv or not argv[0]:
        raise ctx.error(key, "must not be empty")
    return argv
