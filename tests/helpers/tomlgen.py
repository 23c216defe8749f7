"""Property tests: no input makes config.load raise anything but a one-line ConfigError.

There is no TOML writer in the standard library, so a small one lives here. It
also records the line of every key and table header it writes, which checks
the loader's line finder against the truth.
"""

from __future__ import annotations

import datetime
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from certfan import config
from certfan.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "example.toml"

SETTINGS = settings(
    max_examples=60,  # tests/unit must stay in seconds (issue 11: under 30 s, no root)
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Whole generated documents cost ~50 ms an example and mostly stop at their first
# unknown key; the mutated example (SETTINGS) is where the search pays off.
GENERATED_SETTINGS = settings(SETTINGS, max_examples=20)

KNOWN_KEYS = sorted(
    {
        *config._TOP_KEYS,
        *config._ACME,
        *config._EAB,
        *config._DNS,
        *config._ROLLOUT,
        *config._HOST,
        *config._CERTIFICATE,
        "cdn",
        "sally",
        "esme",
    }
)

HOSTILE_STRINGS = [
    "$(reboot)",
    "`id`",
    "; rm -rf /",
    "sally;rm -rf /",
    "../../etc",
    "..",
    "/",
    "//",
    "/etc/../root",
    "a\nb",
    "a\r\nb",
    "a\x00b",
    "\u2028",
    "\x85",
    "\x1b[31m",
    "",
    " ",
    "-rf",
    "-oProxyCommand=reboot",
    "~/x",
    "*",
    "*.x.org",
    "x.*.org",
    "\\",
    "'",
    '"',
    "${IFS}",
    "a" * 300,
    "é",
    "☃.example",
    "🐍",
    "ｅｘａｍｐｌｅ.org",
    "xn--",
    "localhost",
    "::1",
    "[::1]:53",
    "[::1]:",
    "1.2.3.4:99999",
    "http://x",
    "https://",
    "https://[::1",
    "a@b",
    "sally",
    "esme",
    "cdn",
    "rfc2136",
    "hook",
    "ec-p256",
]

HOSTILE_VALUES: list[Any] = [
    *HOSTILE_STRINGS,
    0,
    -1,
    1,
    65536,
    2**63,
    -(2**63),
    10**100,
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    1e-300,
    True,
    False,
    datetime.date(2023, 2, 28),
    [],
    ["sally", "esme"],
    [1, "a"],
    {},
]


# -- a tiny TOML writer ----------------------------------------------------------------


@dataclass
class Sub:
    """A table written with a [header]."""

    items: dict[str, Any]


@dataclass
class Aot:
    """An array of tables written as [[header]] blocks."""

    tables: list[Sub]


@dataclass
class Inline:
    """A table written inline: { a = 1 }."""

    items: dict[str, Any]


@dataclass
class MultiLine:
    """A string written as a multi-line string (a trap for the line finder)."""

    text: str
    literal: bool = False


@dataclass
class Spread:
    """An array written over several lines, with comments."""

    items: list[Any]


def toml_string(s: str, multiline: bool = False) -> str:
    out: list[str] = []
    for c in s:
        if c == '"' and multiline and out[-2:] != ['"', '"']:
            out.append(c)  # one or two quotes in a row need no escape
        elif c in '"\\':
            out.append("\\" + c)
        elif c == "\n" and multiline:
            out.append(c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    quotes = '"""' if multiline else '"'
    return quotes + "".join(out) + quotes


def toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else toml_string(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, MultiLine):
        if (
            v.literal
            and "'''" not in v.text
            and all(c.isprintable() or c in "\n\t" for c in v.text)
        ):
            return "'''" + v.text + "'''"
        return toml_string(v.text, multiline=True)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, Spread):
        lines = "".join(f"  {toml_value(x)},  # x = [ '\"\n" for x in v.items)
        return "[  # a = 1\n" + lines + "\n]"
    if isinstance(v, (Inline, dict)):
        table = v.items if isinstance(v, Inline) else v
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in table.items()) + "}"
    raise TypeError(v)


def dump(doc: dict[str, Any], fancy: bool = False) -> tuple[str, dict[tuple[Any, ...], int]]:
    """TOML text and the line of every key and header written.

    ``fancy`` adds comments, blank lines and spaces inside headers.
    """
    out: list[str] = []
    where: dict[tuple[Any, ...], int] = {}

    def emit(text: str, path: tuple[Any, ...]) -> None:
        if fancy:
            out.append("# [fake] = 1\n")
        where[path] = sum(chunk.count("\n") for chunk in out) + 1
        out.append(text + ("   # k = '[\n" if fancy else "\n"))

    def table(
        path: tuple[Any, ...], header: tuple[str, ...], items: dict[str, Any], head: str | None
    ) -> None:
        values = {k: v for k, v in items.items() if not isinstance(v, (Sub, Aot))}
        if head is not None and (values or head.startswith("[[") or not items):
            emit(head, path)
        for k, v in values.items():
            emit(f"{toml_key(k)} = {toml_value(v)}", path + (k,))
        for k, v in items.items():
            sep = " . " if fancy else "."
            name = sep.join(toml_key(p) for p in header + (k,))
            if fancy:
                name = f" {name} "
            if isinstance(v, Sub):
                table(path + (k,), header + (k,), v.items, f"[{name}]")
            elif isinstance(v, Aot):
                for i, sub in enumerate(v.tables):
                    table(path + (k, i), header + (k,), sub.items, f"[[{name}]]")

    table((), (), doc, None)
    return "".join(out), where


def to_writer(v: Any, *, inline: bool = False) -> Any:
    """Plain parsed TOML -> writer objects (tables get headers where allowed)."""
    if isinstance(v, dict):
        items = {k: to_writer(x, inline=inline) for k, x in v.items()}
        return Inline(items) if inline else Sub(items)
    if isinstance(v, list):
        if not inline and v and all(isinstance(x, dict) for x in v):
            return Aot([Sub({k: to_writer(x) for k, x in t.items()}) for t in v])
        return [to_writer(x, inline=True) for x in v]
    return v


# -- strategies ----------------------------------------------------------------------------

keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8))
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.dates(),
    st.times(),
    st.sampled_from(HOSTILE_STRINGS),
)
tricky_text = st.text(alphabet="ab =[]{}#\"'\\\n\t.", max_size=30)
values = st.recursive(
    st.one_of(scalars, st.builds(MultiLine, tricky_text, st.booleans())),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(Spread),
        st.dictionaries(keys, inner, max_size=4).map(Inline),
    ),
    max_leaves=8,
)


def tables(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    children: st.SearchStrategy[Any] = values
    if depth > 0:
        sub = tables(depth - 1)
        children = st.one_of(
            values,
            sub.map(Sub),
            st.lists(sub.map(Sub), min_size=1, max_size=3).map(Aot),
        )
    return st.dictionaries(keys, children, max_size=5)


def check_loads_or_config_error(path: Path, text: str) -> config.Config | None:
    path.write_text(text, encoding="utf-8")
    try:
        cfg = config.load(path)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(str(path))
        assert len(message.splitlines()) == 1 and "\n" not in message and "\r" not in message
        assert exc.line is None or 1 <= exc.line <= text.count("\n") + 1
        return None
    check_invariants(cfg)
    return cfg


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def check_invariants(cfg: config.Config) -> None:
    """What downstream code may rely on without checking again."""
    for name, host in cfg.hosts.items():
        assert name == host.name and SAFE_NAME.fullmatch(name) and ".." not in name
        assert re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", host.user)
        assert re.fullmatch(r"(/[A-Za-z0-9._-]+)+", host.root)
        assert ".." not in host.root.split("/")
        for argv in (host.config_test, host.reload):
            assert argv and isinstance(argv, tuple) and all(a.isprintable() for a in argv)
        for p in (host.identity_file, host.known_hosts):
            assert p is None or (p.is_absolute() and ".." not in p.parts)
    for name, members in cfg.groups.items():
        assert SAFE_NAME.fullmatch(name) and name not in cfg.hosts
        assert all(m in cfg.hosts for m in members)
    for cert in cfg.certificates.values():
        assert SAFE_NAME.fullmatch(cert.name) and ".." not in cert.name
        assert cert.domains and all(d == d.lower() and d.isascii() for d in cert.domains)
        assert all(h in cfg.hosts for h in cert.hosts) and len(set(cert.hosts)) == len(cert.hosts)
    assert cfg.state_dir.is_absolute()
    assert 1 <= cfg.rollout.concurrency <= 256


# -- (a) arbitrary documents -------------------------------------------------------------






# -- (b) mutations of a valid config -----------------------------------------------------

BASE = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, prefix + (i,))
    return out


def mutate(doc: Any, data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(paths(doc)[1:]), label="path")
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    op = data.draw(st.sampled_from(["delete", "replace", "unknown key", "duplicate"]), label="op")
    if op == "delete":
        del parent[last]
    elif op == "replace":
        parent[last] = copy(
            data.draw(st.one_of(st.sampled_from(HOSTILE_VALUES), values), label="value")
        )
    elif op == "unknown key":
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            key = data.draw(
                st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8)), label="key"
            )
            target[key] = copy(data.draw(st.sampled_from(HOSTILE_VALUES), label="value"))
    elif isinstance(parent, list):
        parent.insert(last, parent[last])  # e.g. a duplicate host or domain
    else:
        key = data.draw(st.sampled_from(HOSTILE_STRINGS), label="copy to")
        parent[key] = parent[last]


def copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [copy(v) for v in node]
    return node






