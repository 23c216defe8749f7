"""Where a key of a TOML document is written: the line of every statement.

tomllib reports lines only for syntax errors; config.py's messages name the
line of the offending key, found here by a small scan of the text.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from typing import Any

KeyPath = tuple[str | int, ...]

_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\\n]|\\.)*"|'[^'\n]*')"""
_DOTTED_KEY = re.compile(rf"[ \t]*({_KEY_PART}(?:[ \t]*\.[ \t]*{_KEY_PART})*)[ \t]*")


def line_map(text: str) -> dict[KeyPath, int]:
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
