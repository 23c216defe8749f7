"""certfan check on the lab's own config: clean; each offline problem on its own line."""

from __future__ import annotations

from pathlib import Path

import pytest

from certfan_lab import Lab
from helpers.ops import restore_logging

restore = pytest.fixture(autouse=True)(restore_logging)


def _check(lab: Lab, path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    from certfan.cli import app

    capsys.readouterr()
    code = app.main(["-c", str(path), "check"])
    return code, capsys.readouterr().err.splitlines()


def test_the_lab_config_checks_out(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _check(lab, lab.config_path, capsys)
    assert code == 0 and err == [], err


def test_offline_problems_of_a_lab_config(lab: Lab, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    first, second = lab.nodes[0], lab.nodes[1]
    known = tmp_path / "known_hosts"  # the lab's, without the second node
    known.write_text("".join(line + "\n" for line in lab.known_hosts.read_text().splitlines()
                             if not line.startswith(second.address)))
    secret = tmp_path / "tsig.secret"
    secret.write_bytes(lab.tsig_secret_path.read_bytes())
    secret.chmod(0o644)
    path = lab.write_config(
        tmp_path / "certfan.toml", tmp_path / "state",
        acme={"agree_tos": False}, dns={"tsig_secret_file": str(secret)},
        hosts={first.name: {"identity_file": str(tmp_path / "no-such-key")},
               second.name: {"known_hosts": str(known)}})
    code, err = _check(lab, path, capsys)
    assert code == 2 and len(err) == 4, err
    assert all(line.startswith(f"certfan: error: {path}: ") for line in err)
    text = "\n".join(err)
    assert f"dns.tsig_secret_file: {secret}: is readable by group or others (mode 644)" in text
    assert "acme.agree_tos: false, and no account is registered with this CA yet" in text
    assert f"hosts[0].identity_file: {tmp_path / 'no-such-key'}: does not exist" in text
    assert (f"hosts[1].known_hosts: {known}: no entry for {second.address}; run "
            f"'ssh-keyscan {second.address} >> {known}' and verify the fingerprint out of "
            "band") in text
