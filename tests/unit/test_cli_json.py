"""--json on every command: one document, parsed with json.loads, with the keys
docs/cli.md lists for it (read from the doc itself). Without the lab the
commands that need a CA or a host end in an error document, which has its
own documented shape; tests/lab/test_cli_lab.py runs the rest for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfan.cli import app as cli
from helpers.cliconf import write_config
from helpers.clidoc import check_document, documented_keys
from helpers.ops import restore_logging

_logging = pytest.fixture(autouse=True)(restore_logging)


def _json(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["-c", str(config), *argv, "--json"])
    return code, capsys.readouterr().out


def test_the_doc_table_names_every_command() -> None:
    parser = cli.build_parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    assert set(documented_keys()) == set(sub.choices)  # type: ignore[arg-type]


@pytest.mark.parametrize(("argv", "code"), [
    (["check", "--syntax-only"], 0),
    (["check"], 2),  # offline preflight: no TSIG file, no identity file, no known_hosts
    (["status"], 3),  # the loopback hosts refuse: UNKNOWN, with every check in the document
    (["prune", "--dry-run"], 1),  # the hosts cannot be listed
    (["completion", "bash"], 0),
    (["completion", "zsh"], 0),
    (["manpage"], 0),
    # these end in an error document here: no CA, no stored version
    (["issue", "media"], 1),
    (["renew"], 1),
    (["reissue", "media"], 1),
    (["push"], 1),
    (["rollback", "--cert", "media"], 1),
    (["import", "media", "--key", "/nonexistent.key", "--fullchain", "/nonexistent.pem"], 1),
])
def test_every_command_prints_one_documented_json_document(tmp_path: Path, capsys, argv,
                                                           code) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path)
    got, out = _json(capsys, config, *argv)
    assert got == code
    doc = check_document(out, argv[0], code)
    if argv[0] == "status":
        assert doc["state"] == "UNKNOWN" and {c["host"] for c in doc["checks"]} == {"sally",
                                                                                    "esme"}
    if argv[0] == "prune":
        assert [h["error"] is not None for h in doc["hosts"]] == [True, True]


def test_quiet_does_not_silence_the_json_document(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path)
    code, out = _json(capsys, config, "check", "--quiet", "--syntax-only")
    assert code == 0 and check_document(out, "check", 0)["certificates"][0]["name"] == "media"
