"""The frame every config check works in: where a key is (file, line), how a value
is shown in a message, and a TOML table checked against its schema."""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from certfan.config.lines import KeyPath
from certfan.errors import ConfigError

T = TypeVar("T")
D = TypeVar("D")


@dataclass(frozen=True)
class Ctx:
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


Conv = Callable[[Ctx, KeyPath, Any], T]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _format_key(key: KeyPath) -> str:
    out = ""
    for part in key:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = part if _BARE_KEY.fullmatch(part) else show(part)
            out += f".{text}" if out else text
    return out


def show(value: object, limit: int = 60) -> str:
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


def got(value: object) -> str:
    name = next((n for t, n in _TYPE_NAMES if isinstance(value, t)), type(value).__name__)
    if isinstance(value, (list, dict)):
        return name
    return f"{name} ({show(value)})"


def suggest(word: str, options: Collection[str]) -> str:
    lowered = {o.lower(): o for o in options}
    close = [lowered[word.lower()]] if word.lower() in lowered else []
    close = close or difflib.get_close_matches(word[:200], list(options), n=3, cutoff=0.6)
    # Swapped letters are the commonest typo: 'prot' means 'port', not 'root'.
    close.sort(key=lambda option: sorted(option) != sorted(word))
    return f" (did you mean {close[0]!r}?)" if close else ""


def reject_unknown(ctx: Ctx, key: KeyPath, table: dict[str, Any], allowed: Collection[str]) -> None:
    for name in table:
        if name not in allowed:
            raise ctx.error(key + (name,), "unknown key" + suggest(name, allowed))


def optional(
    ctx: Ctx, key: KeyPath, table: dict[str, Any], name: str, conv: Conv[T], default: D
) -> T | D:
    return conv(ctx, key + (name,), table[name]) if name in table else default


class Table:
    """One TOML table: unknown keys refused, present keys converted in file order."""

    def __init__(self, ctx: Ctx, key: KeyPath, value: object, schema: Mapping[str, Conv[Any]]):
        if not isinstance(value, dict):
            raise ctx.error(key, f"expected a table, got {got(value)}")
        reject_unknown(ctx, key, value, schema)
        self.ctx, self.key, self.data, self.schema = ctx, key, value, schema

    def require(self, *names: str, why: str = "") -> None:
        for name in names:
            if name not in self.data:
                raise self.ctx.error(self.key + (name,), "required key missing" + why)

    def values(self) -> dict[str, Any]:
        return {n: self.schema[n](self.ctx, self.key + (n,), v) for n, v in self.data.items()}
