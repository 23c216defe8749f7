"""Bad configuration at the command line: exit 2 and one line on stderr, never a traceback.

tests/test_config_props.py drives ``config.load`` with arbitrary and mutated
TOML; this drives ``certfan --config FILE check`` with the same generators
(in-process: hundreds of examples in seconds), checks that hostile values
are refused at load naming the key, and runs the real entry point
(``python -m certfan``) on a handful of bad files. A run is one of:

* exit 0, ``<file>: ok`` first on stdout, nothing on stderr; or
* exit 2, nothing on stdout, exactly one stderr line
  ``certfan: error: <file>[:<line>]: <key>: <message>``, no "Traceback".
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certfan.cli import app as cli
from helpers.hostile import HOSTILE
from helpers.tomlgen import (
    BASE,
    EXAMPLE,
    GENERATED_SETTINGS,
    SETTINGS,
    copy,
    dump,
    mutate,
    tables,
    to_writer,
)

SRC = Path(__file__).resolve().parent.parent / "src"


def check_cli(path: Path) -> tuple[int, str]:
    """``certfan --config PATH check --syntax-only`` in this process (the file itself: the
    files it names are test_preflight's); its exit code and stderr line."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--config", str(path), "check", "--syntax-only"])
    finally:
        root.handlers[:], root.level = handlers, level
    return _judge(path, code, out.getvalue(), err.getvalue())


def _judge(path: Path, code: int, out: str, err: str) -> tuple[int, str]:
    assert "Traceback" not in out + err, err
    if code == 0:
        assert out.startswith(f"{path}: ok\n") and err == "", (out, err)
        return code, ""
    assert code == 2, (code, out, err)
    assert out == "", out
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    assert lines[0].startswith(f"certfan: error: {path}"), lines[0]
    assert all(c.isprintable() for c in lines[0]), repr(lines[0])
    return code, lines[0]


def _write(path: Path, doc: dict[str, Any]) -> Path:
    text, _ = dump(to_writer(doc).items)
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- generated documents


@GENERATED_SETTINGS
@given(doc=tables(2))
def test_cli_arbitrary_documents(tmp_path: Path, doc: dict[str, Any]) -> None:
    text, _ = dump(doc)
    (tmp_path / "c.toml").write_text(text, encoding="utf-8")
    check_cli(tmp_path / "c.toml")


@SETTINGS
@given(data=st.data())
def test_cli_mutated_example(tmp_path: Path, data: st.DataObject) -> None:
    doc = copy(BASE)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        mutate(doc, data)
    check_cli(_write(tmp_path / "c.toml", doc))


@SETTINGS
@given(raw=st.binary(max_size=300), head=st.booleans())
def test_cli_arbitrary_bytes(tmp_path: Path, raw: bytes, head: bool) -> None:
    """Bytes of any kind (not UTF-8, NULs, BOMs), alone or after a valid config."""
    data = (EXAMPLE.read_bytes() if head else b"") + raw
    (tmp_path / "c.toml").write_bytes(data)
    check_cli(tmp_path / "c.toml")


def test_the_example_itself_is_fine(tmp_path: Path) -> None:
    assert check_cli(_write(tmp_path / "c.toml", copy(BASE)))[0] == 0


# ---------------------------------------------------------------- hostile values


@pytest.mark.parametrize(("where", "value", "key"), HOSTILE,
                         ids=[f"{k}={v!r}"[:60] for _, v, k in HOSTILE])
def test_hostile_values_are_refused_at_load(tmp_path: Path, where: tuple, value: Any,
                                            key: str) -> None:
    doc = copy(BASE)
    parent = doc
    for part in where[:-1]:
        parent = parent[part]
    parent[where[-1]] = value
    code, line = check_cli(_write(tmp_path / "c.toml", doc))
    assert code == 2 and f": {key}: " in line, line


# ---------------------------------------------------------------- the real entry point


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {}
    hostile = copy(BASE)
    hostile["hosts"][0]["name"] = "sally;rm -rf /"
    files["hostile host name"] = _write(tmp_path / "hostile.toml", hostile)
    absurd = copy(BASE)
    absurd["rollout"]["concurrency"] = 10**100
    files["absurd number"] = _write(tmp_path / "absurd.toml", absurd)
    (tmp_path / "latin1.toml").write_bytes(b'state_dir = "/var/lib/caf\xe9"\n')
    files["not UTF-8"] = tmp_path / "latin1.toml"
    (tmp_path / "broken.toml").write_text("[acme\ndirectory = \n")
    files["invalid TOML"] = tmp_path / "broken.toml"
    files["missing"] = tmp_path / "does-not-exist.toml"
    (tmp_path / "a-directory.toml").mkdir()
    files["a directory"] = tmp_path / "a-directory.toml"
    files["endless"] = Path("/dev/zero")
    return files


def test_python_m_certfan_check_on_bad_files(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for what, path in _bad_files(tmp_path).items():
        for how in ("--config", "CERTFAN_CONFIG"):
            args = ["--config", str(path), "check"] if how == "--config" else ["check"]
            run_env = {**env, "CERTFAN_CONFIG": str(path)} if how != "--config" else env
            done = subprocess.run([sys.executable, "-m", "certfan", *args], env=run_env,
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 2, (what, how, done.stderr)
            _judge(path, done.returncode, done.stdout, done.stderr)
