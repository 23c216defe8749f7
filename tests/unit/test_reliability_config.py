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
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certfan.cli import app as cli
from helpers.tomlgen import (
    BASE,
    EXAMPLE,
    SETTINGS,
    copy,
    dump,
    mutate,
    tables,
    to_writer,
)

SRC = Path(__file__).resolve().parent.parent / "src"


def check_cli(path: Path) -> tuple[int, str]:
    """``certfan --config PATH check`` in this process; its exit code and stderr line."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--config", str(path), "check"])
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


@SETTINGS
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

HOSTILE = [
    # names that would be shell or path syntax on a node or in the state dir
    (("hosts", 0, "name"), "sally;rm -rf /", "hosts[0].name"),
    (("hosts", 0, "name"), "$(reboot)", "hosts[0].name"),
    (("hosts", 0, "name"), "../esme", "hosts[0].name"),
    (("certificates", 0, "name"), "../../etc/passwd", "certificates[0].name"),
    (("certificates", 0, "name"), "media`id`", "certificates[0].name"),
    (("certificates", 0, "domains"), ["media.hachyderm.io; id"], "certificates[0].domains[0]"),
    (("certificates", 0, "domains"), ["*.*.hachyderm.io"], "certificates[0].domains[0]"),
    (("groups", "cdn"), ["sally", "../esme"], "groups.cdn[1]"),
    (("hosts", 0, "user"), "root$(id)", "hosts[0].user"),
    (("hosts", 0, "address"), "203.0.113.10;id", "hosts[0].address"),
    (("hosts", 0, "reload"), "systemctl reload nginx; reboot", "hosts[0].reload"),
    (("hosts", 0, "config_test"), "nginx -t && reboot", "hosts[0].config_test"),
    (("hosts", 0, "config_test"), [], "hosts[0].config_test"),
    (("dns", "server"), "ns1.example.org; id", "dns.server"),
    # paths with '..' or '~'
    (("hosts", 0, "root"), "/etc/nginx/../../root", "hosts[0].root"),
    (("hosts", 0, "root"), "/", "hosts[0].root"),
    (("hosts", 0, "root"), "relative/root", "hosts[0].root"),
    (("hosts", 0, "identity_file"), "../../etc/shadow", "hosts[0].identity_file"),
    (("hosts", 0, "known_hosts"), "~/.ssh/known_hosts", "hosts[0].known_hosts"),
    (("state_dir",), "/var/lib/../../etc", "state_dir"),
    (("dns", "tsig_secret_file"), "/etc/certfan/../shadow", "dns.tsig_secret_file"),
    # absurd numbers
    (("hosts", 0, "port"), 10**30, "hosts[0].port"),
    (("hosts", 0, "port"), 0, "hosts[0].port"),
    (("rollout", "concurrency"), 10**6, "rollout.concurrency"),
    (("rollout", "canary"), -1, "rollout.canary"),
    (("rollout", "failure_budget"), 2**63, "rollout.failure_budget"),
    (("rollout", "connect_timeout"), math.nan, "rollout.connect_timeout"),
    (("rollout", "command_timeout"), math.inf, "rollout.command_timeout"),
    (("rollout", "verify_timeout"), -5.0, "rollout.verify_timeout"),
    (("rollout", "verify_timeout"), 1e300, "rollout.verify_timeout"),
    (("dns", "propagation_timeout"), 0, "dns.propagation_timeout"),
    (("dns", "poll_interval"), 10**12, "dns.poll_interval"),
    (("dns", "port"), 65536, "dns.port"),
    # the CA over plain http
    (("acme", "directory"), "http://acme.example.org/directory", "acme.directory"),
]


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
