"""The JSON document shapes that docs/cli.md promises, read from its table, so the
tests check what the documentation says rather than a copy of it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
COMMON = {"command": str, "schema": int, "exit": int, "ok": bool}
ERROR_EXTRA = {"status": {"state"}, "check": {"config", "problems"}}  # as docs/cli.md says


def documented_keys() -> dict[str, list[set[str]]]:
    """command -> the key sets its document may have (``push``: with and without --dry-run)."""
    text = DOC.read_text()
    table = text.split("<!-- The table below", 1)[1].split("\n\n", 2)[1]
    shapes: dict[str, list[set[str]]] = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        command = cells[0].strip("`")
        shapes[command] = [set(re.findall(r"`(\w+)`", part))
                           for part in re.split(r"\)? or ", cells[1])]
    return shapes


def check_document(out: str, command: str, code: int) -> dict[str, Any]:
    """``out`` is exactly one JSON object of ``command``'s documented shape, exit ``code``."""
    doc = json.loads(out)  # one document: json.loads refuses anything after it
    assert isinstance(doc, dict), doc
    for key, kind in COMMON.items():
        assert isinstance(doc.get(key), kind), (key, doc)
    assert doc["command"] == command and doc["exit"] == code and doc["schema"] == 1
    own = set(doc) - set(COMMON) - {"error"}
    if "error" in doc:
        assert isinstance(doc["error"], str) and doc["error"]
        assert own <= ERROR_EXTRA.get(command, set()), own  # nothing else
        return doc
    shapes = documented_keys()[command]
    assert any(own == shape for shape in shapes), (command, sorted(own), shapes)
    return doc
