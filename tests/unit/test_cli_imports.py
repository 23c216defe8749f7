"""Reporting commands load no CA or DNS code: ``certfan status`` (and check,
completion, and push and rollback, which need no CA either) run in a fresh
interpreter, which then lists what it imported. The hosts are loopback ports
nothing listens on, so status goes through its whole path (SSH connect, TLS
probes, judging, rendering)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.cliconf import write_config

SRC = Path(__file__).resolve().parents[2] / "src"
FORBIDDEN = ("acme", "josepy", "dns", "requests")
LIGHT_STATE = {"certfan.state", "certfan.state.revocations", "certfan.state.fsutil"}

CHILD = """
import json, sys
from certfan.cli import app
code = app.main(sys.argv[1:])
loaded = sorted(sys.modules)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def _loaded(*argv: str) -> tuple[int, set[str]]:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    doc = json.loads(done.stderr.strip().splitlines()[-1])
    return doc["code"], set(doc["loaded"])


@pytest.mark.parametrize("argv", [
    ("status", "--json"),
    ("status", "--host", "sally"),
    ("check",),
    ("check", "--syntax-only"),
    ("completion", "bash"),
    ("push",),  # nothing stored: ends early, but after importing the push path
    ("rollback", "--cert", "media"),
])
def test_reporting_commands_import_no_ca_or_dns_code(tmp_path: Path, argv: tuple[str, ...]) -> None:
    config = write_config(tmp_path)
    code, loaded = _loaded("-c", str(config), *argv)
    assert code in (0, 1, 2, 3)  # status: the hosts refuse (UNKNOWN); check: files missing
    if argv[0] == "status":  # the whole path ran: collected, probed, judged, rendered
        assert {"certfan.commands.status", "certfan.deploy.probe", "certfan.cli.render"} <= loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not heavy, heavy


def test_the_check_is_real_renew_does_load_them(tmp_path: Path) -> None:
    """The same probe sees the CA code when a command does need it."""
    config = write_config(tmp_path)
    _, loaded = _loaded("-c", str(config), "renew")
    assert {"acme", "josepy", "dns", "certfan.issue.acme"} <= loaded


def test_building_the_parser_loads_no_command_code() -> None:
    """`certfan --help` and completion stay light: the handlers import what they use."""
    code = ("import json, sys; from certfan.cli import app; app.build_parser(); "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, env={"PYTHONPATH": str(SRC),
                                                       "PATH": "/usr/bin:/bin"})
    loaded = set(json.loads(done.stdout))
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("cryptography", "paramiko", *FORBIDDEN)
                   or m.startswith(("certfan.deploy", "certfan.commands", "certfan.issue"))
                   or m.startswith("certfan.state") and m not in LIGHT_STATE)
    assert not heavy, heavy
