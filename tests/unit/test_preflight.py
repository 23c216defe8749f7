"""config/preflight.py: what ``certfan check`` knows offline, one problem per line."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from certfan import config
from certfan.cli import app as cli
from certfan.config import preflight
from certfan.issue import crypto
from certfan_lab import pki
from helpers.ops import restore_logging

restore = pytest.fixture(autouse=True)(restore_logging)

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ0ZXN0a2V5Zm9ydGhlcHJlZmxpZ2h0dGVzdHMAAAA"


def _healthy(d: Path) -> Path:
    """A config whose every named file is fine."""
    for name in ("id", "id-b"):
        pki.write_private(d / name, pki.ssh_keypair()[0])
    pki.write_private(d / "tsig", base64.b64encode(b"s" * 32) + b"\n")
    pki.write_private(d / "eab", b"c2VjcmV0LWtleS1mb3ItZWFi\n")
    (d / "known_hosts").write_text(f"192.0.2.1 {HOST_KEY}\n[192.0.2.2]:2222 {HOST_KEY}\n")
    (d / "hook").write_text("#!/bin/sh\nexit 0\n")
    (d / "hook").chmod(0o755)
    _, ca = pki.new_ca("preflight test CA")
    (d / "ca.pem").write_bytes(pki.cert_pem(ca))
    path = d / "certfan.toml"
    path.write_text(f"""state_dir = "{d / 'state'}"
[acme]
directory = "https://127.0.0.1:9/dir"
agree_tos = true
ca_bundle = "ca.pem"
eab = {{ kid = "kid", hmac_key_file = "eab" }}
[dns]
tsig_key_name = "k."
tsig_secret_file = "tsig"
[[hosts]]
name = "a"
address = "192.0.2.1"
identity_file = "id"
known_hosts = "known_hosts"
[[hosts]]
name = "b"
address = "192.0.2.2"
port = 2222
identity_file = "id-b"
known_hosts = "known_hosts"
""")
    return path


def _problems(path: Path) -> list[str]:
    cfg = config.load(path)
    return [str(p) for p in preflight.problems(cfg, ssh_key_problem=crypto.ssh_private_key_problem)]


def test_a_healthy_config_has_no_problems(tmp_path: Path) -> None:
    assert _problems(_healthy(tmp_path)) == []


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(("breakage", "expected"), [
    (lambda d: (d / "tsig").unlink(), "dns.tsig_secret_file: {d}/tsig: does not exist"),
    (lambda d: (d / "tsig").write_text("not base64!\n"),
     "dns.tsig_secret_file: {d}/tsig: is not a base64 TSIG secret"),
    (lambda d: (d / "tsig").chmod(0o644),
     "dns.tsig_secret_file: {d}/tsig: is readable by group or others (mode 644): chmod 600"),
    (lambda d: (d / "eab").write_text("no/slashes+here\n"),
     "acme.eab.hmac_key_file: {d}/eab: is not a base64url EAB HMAC key"),
    (lambda d: (d / "id").write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n"),
     "hosts[0].identity_file: {d}/id: does not parse as a private key"),
    (lambda d: (d / "id").unlink(), "hosts[0].identity_file: {d}/id: does not exist"),
    (lambda d: (d / "known_hosts").write_text(f"192.0.2.1 {HOST_KEY}\n"),
     "hosts[1].known_hosts: {d}/known_hosts: no entry for [192.0.2.2]:2222; run "
     "'ssh-keyscan -p 2222 192.0.2.2 >> {d}/known_hosts' and verify the fingerprint out of "
     "band"),
    (lambda d: (d / "ca.pem").write_text("nothing\n"),
     "acme.ca_bundle: {d}/ca.pem: holds no PEM certificate"),
    (lambda d: _edit(d / "certfan.toml", "agree_tos = true", "agree_tos = false"),
     "acme.agree_tos: false, and no account is registered with this CA yet"),
    (lambda d: _edit(d / "certfan.toml", 'tsig_key_name = "k."',
                     'method = "hook"\nhook = "hook"') or (d / "hook").chmod(0o644),
     "dns.hook: {d}/hook: is not executable: chmod +x"),
])
def test_each_problem_gets_its_own_line(tmp_path: Path, breakage, expected: str) -> None:  # type: ignore[no-untyped-def]
    path = _healthy(tmp_path)
    breakage(tmp_path)
    found = _problems(path)
    assert len(found) == 1, found
    assert found[0].startswith(expected.format(d=tmp_path)), found


def test_an_account_on_disk_makes_agree_tos_false_fine(tmp_path: Path) -> None:
    path = _healthy(tmp_path)
    _edit(path, "agree_tos = true", "agree_tos = false")
    digest = hashlib.sha256(b"https://127.0.0.1:9/dir").hexdigest()[:16]
    account = tmp_path / "state" / "account" / digest
    account.mkdir(parents=True)
    (account / "account.json").write_text(json.dumps({"url": "https://127.0.0.1:9/acct/1"}))
    assert _problems(path) == []


def test_hashed_known_hosts_entries_count_and_markers_do_not() -> None:
    salt = b"0123456789abcdefghij"
    digest = hmac.new(salt, b"[192.0.2.2]:2222", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
    assert preflight.known_host(f"{hashed} {HOST_KEY}\n", "192.0.2.2", 2222)
    assert not preflight.known_host(f"{hashed} {HOST_KEY}\n", "192.0.2.2", 22)
    assert not preflight.known_host(f"@revoked 192.0.2.2 {HOST_KEY}\n", "192.0.2.2", 22)
    assert preflight.known_host(f"other,192.0.2.2 {HOST_KEY}\n", "192.0.2.2", 22)


def test_the_check_command_prints_each_problem_and_exits_2(tmp_path: Path) -> None:
    path = _healthy(tmp_path)
    (tmp_path / "tsig").unlink()
    (tmp_path / "known_hosts").write_text("")
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(["-c", str(path), "check", "--json"])
    lines = err.getvalue().splitlines()
    assert code == 2 and len(lines) == 3, lines  # tsig, known_hosts of a and of b
    assert all(line.startswith(f"certfan: error: {path}: ") for line in lines)
    doc = json.loads(out.getvalue())
    assert doc["exit"] == 2 and [p["key"] for p in doc["problems"]] == [
        "dns.tsig_secret_file", "hosts[0].known_hosts", "hosts[1].known_hosts"]
    assert doc["problems"][0]["path"] == str(tmp_path / "tsig")
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(io.StringIO()):
        assert cli.main(["-c", str(path), "check", "--syntax-only"]) == 0
    assert out.getvalue().startswith(f"{path}: ok")


def test_notify_files_are_checked_too(tmp_path: Path) -> None:
    path = _healthy(tmp_path)
    (tmp_path / "hook.url").write_text("https://chat.example/hooks/secret-token\n")
    (tmp_path / "hook.url").chmod(0o644)
    (tmp_path / "page").write_text("#!/bin/sh\n")
    (tmp_path / "page").chmod(0o644)
    with path.open("a") as f:
        f.write(f"""
[[notify]]
name = "chat"
webhook_file = "hook.url"

[[notify]]
name = "pager"
command = ["{tmp_path / 'page'}", "--team", "edge"]
""")
    assert _problems(path) == [
        f"notify[0].webhook_file: {tmp_path}/hook.url: is readable by group or others "
        f"(mode 644): chmod 600 {tmp_path}/hook.url",
        f"notify[1].command: {tmp_path}/page: is not executable: chmod +x {tmp_path}/page",
    ]

