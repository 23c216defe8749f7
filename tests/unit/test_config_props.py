"""Property tests of the config loader: arbitrary and mutated documents."""

from __future__ import annotations

import string
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from certfan.config import lines
from helpers.tomlgen import (
    BASE,
    EXAMPLE,
    GENERATED_SETTINGS,
    HOSTILE_STRINGS,
    SETTINGS,
    check_loads_or_config_error,
    copy,
    dump,
    mutate,
    tables,
    to_writer,
)


@GENERATED_SETTINGS
@given(doc=tables(2), fancy=st.booleans(), crlf=st.booleans())
def test_arbitrary_documents(tmp_path: Path, doc: dict[str, Any], fancy: bool, crlf: bool) -> None:
    text, where = dump(doc, fancy)
    if crlf:
        text = text.replace("\n", "\r\n")
    assert tomllib.loads(text) is not None  # the writer writes valid TOML
    check_loads_or_config_error(tmp_path / "c.toml", text)
    # The line finder places every key and header the writer wrote, and nothing else.
    assert lines.line_map(text) == where


@SETTINGS
@given(text=st.text(alphabet=string.printable + "[]{}=\"'#é\u2028", max_size=200))
def test_arbitrary_text(tmp_path: Path, text: str) -> None:
    check_loads_or_config_error(tmp_path / "c.toml", text)


@SETTINGS
@given(data=st.data())
def test_mutated_example(tmp_path: Path, data: st.DataObject) -> None:
    doc = copy(BASE)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        mutate(doc, data)
    text, _ = dump(to_writer(doc).items)
    check_loads_or_config_error(tmp_path / "c.toml", text)


@SETTINGS
@given(data=st.data())
def test_mangled_example_text(tmp_path: Path, data: st.DataObject) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        start = data.draw(st.integers(0, len(text)), label="start")
        end = data.draw(st.integers(start, min(len(text), start + 40)), label="end")
        insert = data.draw(
            st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=10)), label="insert"
        )
        text = text[:start] + insert + text[end:]
    check_loads_or_config_error(tmp_path / "c.toml", text)


def test_unmutated_example_round_trips(tmp_path: Path) -> None:
    text, _ = dump(to_writer(copy(BASE)).items)
    cfg = check_loads_or_config_error(tmp_path / "c.toml", text)
    assert cfg is not None and cfg.certificates["media"].hosts == tuple(BASE["groups"]["cdn"])
