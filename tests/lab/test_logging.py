"""No key material and no TSIG secret in anything certfan writes out, even at --debug.

A full cycle on the lab with protocol detail on (ACME account creation and
orders, DNS updates, SSH uploads of private keys, TLS probes, a revocation
signed with a certificate key, a node that cannot be reached), in both log
formats, one run with its log going to a file. Then every base64 body line of
every private key involved -- the ACME account key, each certificate key, the
imported ones, the lab's SSH identity -- and the TSIG secret are looked for in
all of it.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest

from certfan.cli import app as cli
from helpers.ops import Ops, cert_files, import_args, restore_logging

SRC = Path(__file__).resolve().parents[2] / "src"

_logging = pytest.fixture(autouse=True)(restore_logging)


def _body_lines(pem: bytes) -> list[str]:
    """The base64 lines of a PEM (or OpenSSH) private key, long enough not to match by chance."""
    lines = [line.strip() for line in pem.decode().splitlines()]
    return [line for line in lines if line and not line.startswith("-----") and len(line) >= 16]


def _secrets(ops: Ops, extra_keys: list[Path]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    state = ops.state
    keys = [*state.glob("account/*/key.pem"), *state.glob("certs/*/versions/*/privkey.pem"),
            *extra_keys, ops.lab.ssh_identity]
    for path in keys:
        found[str(path)] = _body_lines(path.read_bytes())
    secret = ops.lab.tsig_secret_path.read_text().strip()
    raw = base64.b64decode(secret)
    found["tsig secret"] = [secret, secret.rstrip("="), raw.hex(),
                            base64.urlsafe_b64encode(raw).decode().rstrip("=")]
    assert all(found.values()) and len(found) >= 6, found
    return found


def test_debug_output_carries_no_key_material_or_tsig_secret(lab, tmp_path, capfd):  # type: ignore[no-untyped-def]
    ops = Ops(lab, tmp_path)
    ops.write(failure_budget=4, connect_timeout=1.0)
    config = str(ops.config_path)
    seen: list[str] = []

    def run(*args: str, fmt: str = "text") -> int:
        code = cli.main(["-c", config, "--debug", "--log-format", fmt, *args])
        out, err = capfd.readouterr()
        seen.extend((out, err))
        return code

    key, chain = cert_files(tmp_path, "adopted", days_left=2)
    assert run(*import_args("media", key, chain)) == 0
    assert run("renew") == 0  # account, order, DNS-01, upload of the key to four nodes
    assert run("status", fmt="json") == 0
    assert run("reissue", "media", "--revoke-old", "--reason", "keyCompromise", fmt="json") == 0
    with lab.faults.cut("esme"):
        assert run("status") == 3
        assert run("push", "--host", "esme") == 1

    # A run whose log goes to a file, as a log shipper would read it.
    key2, chain2 = cert_files(tmp_path, "adopted2", days_left=2)
    assert run(*import_args("media", key2, chain2)) == 0
    log_file = tmp_path / "certfan.log"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    with open(log_file, "w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "certfan", "-c", config, "--debug", "--log-format", "json",
             "renew"], env=env, stdout=subprocess.PIPE, stderr=log, text=True, timeout=120,
            check=False)
    assert done.returncode == 0, log_file.read_text()[-2000:]
    seen += [done.stdout, log_file.read_text()]

    text = "\n".join(seen)
    # Not a vacuous pass: protocol detail of every kind was logged.
    for marker in ("DEBUG", '"level": "debug"', "JWS payload", "published TXT", "run sh -c",
                   "revoked certificate serial"):
        assert marker in text, marker
    for where, lines in _secrets(ops, [key, key2]).items():
        leaked = [line for line in lines if line in text]
        assert not leaked, f"{where}: {len(leaked)} line(s) in certfan's output"
