"""DNS-01 through a second real DNS server, PowerDNS: lexicon's powerdns provider
(its HTTP API), RFC 2136 with TSIG, and a CNAME from BIND's lab.test into it.

Each test issues from Pebble end to end and then asks PowerDNS itself what it
serves; values someone else put there are written with nsupdate, not certfan.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certfan import config
from certfan.config import Config
from certfan.issue import dns01, order
from certfan.state.store import Release, Store
from helpers.dns import lexicon_pdns, pdns_nsupdate, rfc2136_pdns

# lexicon 3 marks its old module names deprecated; pytest's collection touches them.
pytestmark = pytest.mark.filterwarnings("ignore:Module lexicon:DeprecationWarning")

LEXI = ["lexi.pdns.test", "*.lexi.pdns.test"]
CHALLENGE = "_acme-challenge.lexi.pdns.test"


def _config(lab, tmp_path: Path, dns: dict[str, object], domains: list[str] = LEXI) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = lab.write_config(
        tmp_path / "certfan.toml", state_dir=tmp_path / "state", dns=dns,
        certificates={"pd": {"domains": domains, "deploy_to": []}},
    )
    return config.load(path)


@pytest.fixture
def seeded(lab) -> Iterator[str]:
    """An unrelated TXT value at the challenge name, in PowerDNS."""
    value = f"unrelated-{secrets.token_hex(4)}"
    pdns_nsupdate(lab, "add", CHALLENGE, value)
    yield value
    pdns_nsupdate(lab, "delete", CHALLENGE, value)


@pytest.fixture
def connections() -> Iterator[list[str]]:
    """Every address this process connects or sends to while the test runs."""
    seen: list[str] = []
    active = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if active[0] and event in ("socket.connect", "socket.sendto"):
            address = args[-1]
            if isinstance(address, tuple):
                seen.append(str(address[0]))
        if active[0] and event == "socket.getaddrinfo":
            seen.append(f"getaddrinfo:{args[0]}")

    sys.addaudithook(hook)  # cannot be removed; it goes quiet after the test
    yield seen
    active[0] = False


def _verified(lab, release: Release, names: list[str]) -> None:
    """The stored fullchain verifies up to the Pebble root, for exactly ``names``."""
    root = release.path / "root-for-test.pem"
    root.write_text(lab.pebble_root_pem())
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(release.file("chain.pem")),
         str(release.file("cert.pem"))], capture_output=True, text=True, check=False)
    root.unlink()
    assert done.returncode == 0, done.stderr
    assert sorted(release.names) == sorted(names)


def test_lexicon_powerdns_apex_and_wildcard_only_lab_addresses(
    lab, tmp_path: Path, seeded: str, connections: list[str]
) -> None:
    cfg = _config(lab, tmp_path, lexicon_pdns(lab))
    release = order.issue(cfg, "pd", Store(cfg.state_dir))
    _verified(lab, release, LEXI)
    assert lab.pdns_txt(CHALLENGE) == {seeded}  # both our values gone, theirs kept
    # No suffix-list download, no system resolver: only the lab's loopback servers.
    assert connections, "the audit hook saw nothing"
    resolved = [c for c in connections if c.startswith("getaddrinfo:")]
    assert set(resolved) <= {"getaddrinfo:127.0.0.1"}, resolved
    others = [c for c in connections if not c.startswith("getaddrinfo:")]
    assert all(ipaddress.ip_address(a).is_loopback for a in others), others
    assert not (cfg.state_dir / dns01.PENDING_FILE).exists() or \
        (cfg.state_dir / dns01.PENDING_FILE).read_text().strip() == "[]"


def test_rfc2136_against_powerdns(lab, tmp_path: Path, seeded: str) -> None:
    cfg = _config(lab, tmp_path, rfc2136_pdns(lab))
    release = order.issue(cfg, "pd", Store(cfg.state_dir))
    _verified(lab, release, LEXI)
    assert lab.pdns_txt(CHALLENGE) == {seeded}


def test_bind_cname_delegates_into_powerdns_through_lexicon(lab, tmp_path: Path) -> None:
    cfg = _config(lab, tmp_path, lexicon_pdns(lab), domains=["pdnsdel.lab.test"])
    release = order.issue(cfg, "pd", Store(cfg.state_dir))
    _verified(lab, release, ["pdnsdel.lab.test"])
    assert lab.dns_query("_acme-challenge.pdnsdel.lab.test", "CNAME") == ["pdnsdel.pdns.test."]
    assert lab.pdns_txt("pdnsdel.pdns.test") == set()


def _certfan(cfg: Config, *args: str, env: dict[str, str] | None = None,
             ) -> subprocess.Popen[str]:
    """``certfan --debug ARGS`` with stdout and stderr as one stream."""
    return subprocess.Popen(
        [sys.executable, "-m", "certfan", "-c", str(cfg.path), "--debug", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})})


def _one_line(cfg: Config) -> tuple[int, str, str]:
    """``certfan issue pd`` without --debug: (status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "certfan", "-c", str(cfg.path), "issue", "pd"],
                          capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout, done.stderr


def test_sigkill_after_publishing_through_lexicon_is_cleaned_by_the_next_run(
    lab, tmp_path: Path, seeded: str
) -> None:
    # An extra "authoritative" server that never answers keeps the run polling.
    hold = lexicon_pdns(lab, nameservers=[f"127.0.0.2:{lab.dns_port}", "127.0.0.1:9"],
                        propagation_timeout=60.0)
    cfg = _config(lab, tmp_path, hold)
    run = _certfan(cfg, "issue", "pd")
    try:
        deadline = time.monotonic() + 30
        while len(lab.pdns_txt(CHALLENGE)) < 3:  # theirs + apex + wildcard
            assert run.poll() is None and time.monotonic() < deadline, run.stdout
            time.sleep(0.05)
    finally:
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=10)
    assert len(lab.pdns_txt(CHALLENGE)) == 3  # left behind by the killed run
    cfg = _config(lab, tmp_path, lexicon_pdns(lab))
    _verified(lab, order.issue(cfg, "pd", Store(cfg.state_dir)), LEXI)
    assert lab.pdns_txt(CHALLENGE) == {seeded}
    assert (cfg.state_dir / dns01.PENDING_FILE).read_text().strip() == "[]"


def test_wrong_api_key_one_line_naming_the_key_and_no_credential_at_debug(
    lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "wrong.toml"
    token = f"wrong-{secrets.token_hex(8)}"
    wrong.write_text(f'auth_token = "{token}"\n')
    wrong.chmod(0o600)
    cfg = _config(lab, tmp_path, lexicon_pdns(lab, credentials_file=str(wrong)))
    assert _one_line(cfg) == (1, "", (
        f"certfan: error: add TXT at {CHALLENGE}.: lexicon powerdns, zone pdns.test: the "
        "provider refused the credentials (HTTP 401): check dns.credentials_file / "
        "dns.credentials_env\n"))
    out, _ = _certfan(cfg, "issue", "pd").communicate(timeout=120)
    assert "the provider refused the credentials (HTTP 401): check dns.credentials_file" in out
    failures = [line for line in out.splitlines() if "refused the credentials" in line]
    assert failures and all(token not in line for line in failures)
    assert token not in out
    assert lab.pdns_txt(CHALLENGE) == set()
    # And a good run at --debug, key from the environment: not a trace of it either.
    key = lab.pdns.api_key.read_text().strip()
    monkeypatch.setenv("CERTFAN_TEST_PDNS_KEY", key)
    cfg = _config(lab, tmp_path / "env", lexicon_pdns(
        lab, credentials_file=None, credentials_env={"auth_token": "CERTFAN_TEST_PDNS_KEY"}))
    run = _certfan(cfg, "issue", "pd")
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    assert "DEBUG" in out and key not in out


def test_wrong_tsig_secret_against_powerdns_names_the_key(lab, tmp_path: Path) -> None:
    bad = tmp_path / "bad.secret"
    bad.write_text("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=\n")
    bad.chmod(0o600)
    cfg = _config(lab, tmp_path, rfc2136_pdns(lab, tsig_secret_file=str(bad)))
    assert _one_line(cfg) == (1, "", (
        f"certfan: error: add TXT at {CHALLENGE}.: zone pdns.test. at 127.0.0.2:{lab.dns_port} "
        "refused: the server did not accept TSIG key 'certfan-pdns.': wrong secret "
        "(dns.tsig_secret_file) or a key it does not know (dns.tsig_key_name)\n"))
    run = _certfan(cfg, "issue", "pd")
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 1
    lines = [line for line in out.splitlines() if "did not accept TSIG key" in line]
    assert lines and "dns.tsig_secret_file" in lines[-1]
    assert lab.pdns.tsig_secret.read_text().strip() not in out
    assert lab.pdns_txt(CHALLENGE) == set()


def test_powerdns_secrets_are_private(lab) -> None:
    files = (lab.pdns.api_key, lab.pdns.tsig_secret, lab.pdns.credentials,
             lab.pdns.dir / "pdns.conf", lab.pdns.dir / "pdns.sqlite3")
    assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == dict.fromkeys(
        (f.name for f in files), 0o600)
    assert stat.S_IMODE(lab.pdns.dir.stat().st_mode) == 0o700
