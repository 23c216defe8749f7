"""Where a command's result goes: text lines on stdout, or one JSON document.

Every ``--json`` run prints exactly one document on stdout, an object with
at least ``command``, ``exit`` and ``ok`` (and ``error`` when the run failed
with one), plus the command's own keys (docs/cli.md lists them). ``--quiet``
prints nothing when the command succeeds; with ``--json`` the document is
printed anyway. Logs go to stderr, never stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from certfan.cli.options import EXIT_OK

SCHEMA = 1  # bumped only when a key changes meaning or goes away


def document(command: str, code: int, body: Mapping[str, Any] | None = None, *,
             ok: bool | None = None, error: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"command": command, "schema": SCHEMA, "exit": code,
                           "ok": code == EXIT_OK if ok is None else ok}
    if error is not None:
        doc["error"] = error
    if body:
        doc.update({k: v for k, v in body.items() if k not in ("command", "schema", "exit", "ok")})
    return doc


def print_json(doc: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def print_lines(lines: Iterable[str]) -> None:
    for line in lines:
        sys.stdout.write(line + "\n")
    sys.stdout.flush()


def finish(args: argparse.Namespace, code: int, lines: Iterable[str],
           body: Mapping[str, Any] | None = None, *, ok: bool | None = None) -> int:
    """Print the result the way the options ask; return ``code``."""
    if getattr(args, "json", False):
        print_json(document(args.command, code, body, ok=ok))
    elif code != EXIT_OK or not getattr(args, "quiet", False):
        print_lines(lines)
    return code


def fail(args: argparse.Namespace | None, command: str, code: int, message: str) -> int:
    """A run that ends in an error: one line on stderr, and the JSON document if asked."""
    sys.stderr.write(f"certfan: error: {message}\n")
    sys.stderr.flush()
    if args is not None and getattr(args, "json", False):
        print_json(document(command, code, error=message))
    return code
