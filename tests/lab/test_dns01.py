"""DNS-01 against the lab's BIND9: RFC 2136 with TSIG, CNAMEs, polling, cleanup, hooks.

Values someone else put at a name are seeded with nsupdate (not with certfan)
so the test checks certfan against an independent writer.
"""

from __future__ import annotations

import logging
import secrets
import socket
import stat
import sys
from pathlib import Path

import pytest

from certfan import config
from certfan.config import DnsConfig, Endpoint
from certfan.errors import DnsError
from certfan.issue import dns01
from helpers.dns import bind_keyfile, nsupdate, txt

pytestmark = pytest.mark.lab


def _cfg(lab, tmp_path: Path, **dns: object) -> DnsConfig:
    path = lab.write_config(tmp_path / "certfan.toml", state_dir=tmp_path / "state", dns=dns)
    return config.load(path).dns




@pytest.fixture
def seeded(lab, tmp_path: Path):
    """An unrelated TXT value at the apex challenge name, removed afterwards."""
    name = "_acme-challenge.lab.test"
    value = f"unrelated-{secrets.token_hex(4)}"
    nsupdate(lab, tmp_path, "add", name, value)
    yield name, value
    nsupdate(lab, tmp_path, "delete", name, value)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cname_chains_zones_and_nameservers(lab, tmp_path: Path) -> None:
    look = dns01.Lookup(_cfg(lab, tmp_path))
    assert look.resolve_target("_acme-challenge.chain.lab.test") == "chain.delegated.test."
    assert look.resolve_target("_acme-challenge.static.lab.test") == "static.delegated.test."
    assert (
        look.resolve_target("_acme-challenge.media.lab.test") == "_acme-challenge.media.lab.test."
    )
    assert look.find_zone("chain.delegated.test.") == "delegated.test."
    assert look.find_zone("_acme-challenge.media.lab.test.") == "lab.test."
    assert look.find_zone("lab.test") == "lab.test."
    # NS ns1.lab.test -> 127.0.0.1, asked at dns.ns_port
    assert look.authoritative("delegated.test.") == (Endpoint("127.0.0.1", lab.dns_port),)


def test_apex_and_wildcard_values_coexist_and_only_ours_go(lab, tmp_path: Path, seeded) -> None:
    name, other = seeded
    dns = dns01.Dns01(_cfg(lab, tmp_path))
    with dns.published([(name, "value-for-apex"), (name, "value-for-wildcard")]) as items:
        assert txt(lab, name) == {other, "value-for-apex", "value-for-wildcard"}
        assert {i.zone for i in items} == {"lab.test."}
    assert txt(lab, name) == {other}


def test_cname_delegated_value_lands_in_the_other_zone(lab, tmp_path: Path) -> None:
    dns = dns01.Dns01(_cfg(lab, tmp_path))
    with dns.published([("_acme-challenge.chain.lab.test", "via-two-cnames")]) as [item]:
        assert (item.target, item.zone) == ("chain.delegated.test.", "delegated.test.")
        assert txt(lab, "chain.delegated.test") == {"via-two-cnames"}
        assert txt(lab, "_acme-challenge.chain.lab.test") == {"via-two-cnames"}
    assert txt(lab, "chain.delegated.test") == set()


@pytest.mark.parametrize("exc", [RuntimeError("validation failed"), KeyboardInterrupt()])
def test_removed_on_error_and_ctrl_c(lab, tmp_path: Path, seeded, exc: BaseException) -> None:
    name, other = seeded
    dns = dns01.Dns01(_cfg(lab, tmp_path))
    with pytest.raises(type(exc)), dns.published([(name, "doomed-1"), (name, "doomed-2")]):
        assert txt(lab, name) == {other, "doomed-1", "doomed-2"}
        raise exc
    assert txt(lab, name) == {other}


def test_deadline_hit_removes_values(lab, tmp_path: Path, seeded) -> None:
    name, other = seeded
    never = Endpoint("127.0.0.1", _closed_port())  # an "authoritative" server that never serves
    cfg = _cfg(
        lab,
        tmp_path,
        nameservers=[f"127.0.0.1:{lab.dns_port}", str(never)],
        propagation_timeout=0.6,
        poll_interval=0.1,
    )
    with (
        pytest.raises(DnsError, match=rf"not served after 0.6s.*{never}"),
        dns01.Dns01(cfg).published([(name, "too-slow")]),
    ):
        pytest.fail("propagation cannot have been proved")
    assert txt(lab, name) == {other}


def test_propagation_is_polled_not_slept(lab, tmp_path: Path) -> None:
    cfg = _cfg(lab, tmp_path, poll_interval=0.2)
    look = dns01.Lookup(cfg)
    servers = look.authoritative("lab.test.")
    publisher = dns01.Rfc2136(cfg, look)
    publisher.add("_acme-challenge.media.lab.test", "poll-me")
    try:
        before = look.queries
        rounds = look.wait_propagated(
            [("_acme-challenge.media.lab.test.", "poll-me", servers)], timeout=5, interval=0.2
        )
        # Served at once: one round, one query per server, and no pause before it.
        assert rounds == 1 and look.queries - before == len(servers)
    finally:
        publisher.remove("_acme-challenge.media.lab.test", "poll-me")
    assert txt(lab, "_acme-challenge.media.lab.test") == set()


def test_wrong_tsig_secret_says_so_and_changes_nothing(lab, tmp_path: Path, seeded) -> None:
    name, other = seeded
    wrong = tmp_path / "wrong.secret"
    wrong.write_text("c29tZSBvdGhlciBzZWNyZXQgb2YgdGhpcnR5IHR3byBieXQ=\n")
    wrong.chmod(0o600)
    dns = dns01.Dns01(_cfg(lab, tmp_path, tsig_secret_file=str(wrong)))
    with pytest.raises(DnsError) as err, dns.published([(name, "never-added")]):
        pytest.fail("the update cannot have succeeded")
    text = str(err.value)
    assert "zone lab.test." in text and f"127.0.0.1:{lab.dns_port}" in text and "BADSIG" in text
    assert "c29tZSBvdGhlciBzZWNyZXQ" not in text
    assert txt(lab, name) == {other}


def test_unknown_tsig_key_name_says_badkey(lab, tmp_path: Path) -> None:
    dns = dns01.Dns01(_cfg(lab, tmp_path, tsig_key_name="nobody."))
    with pytest.raises(DnsError, match="BADKEY.*'nobody.'"):
        dns.publisher.add("_acme-challenge.media.lab.test", "x")


def test_bind_key_clause_secret_and_mode_warning(lab, tmp_path: Path, caplog) -> None:
    clause = bind_keyfile(lab, tmp_path / "lab.key")
    secret = lab.tsig_secret_path.read_text().strip()
    assert dns01.read_tsig_secret(clause) == secret
    assert dns01.read_tsig_secret(lab.tsig_secret_path) == secret
    clause.chmod(0o640)
    caplog.set_level(logging.DEBUG)
    dns = dns01.Dns01(_cfg(lab, tmp_path, tsig_secret_file=str(clause)))
    with dns.published([("_acme-challenge.media.lab.test", "clause-works")]):
        assert txt(lab, "_acme-challenge.media.lab.test") == {"clause-works"}
    warnings = [r for r in caplog.records if "readable by group or others" in r.getMessage()]
    assert len(warnings) == 1
    assert secret not in caplog.text


HOOK = """#!{python}
import os, subprocess, sys, time
action, name, value = sys.argv[1:4]
with open({log!r}, "a") as f:
    f.write(" ".join([action, name, value] + [os.environ["CERTFAN_DNS_" + k] for k in
                     ("ACTION", "NAME", "VALUE", "CHALLENGE", "ZONE", "TTL")]) + "\\n")
if {mode!r} == "fail":
    print("zone is locked by the registrar", file=sys.stderr)
    sys.exit(3)
if {mode!r} == "hang":
    time.sleep(30)
if {mode!r} == "noop":
    sys.exit(0)
verb = "add" if action == "add" else "delete"
rr = f'{{name}}. 60 TXT "{{value}}"' if action == "add" else f'{{name}}. TXT "{{value}}"'
script = f"server 127.0.0.1 {port}\\nupdate {{verb}} {{rr}}\\nsend\\n"
sys.exit(subprocess.run(["nsupdate", "-k", {key!r}], input=script, text=True).returncode)
"""


def _hook(lab, tmp_path: Path, mode: str = "ok") -> Path:
    key = tmp_path / "lab.key"
    if not key.exists():
        bind_keyfile(lab, tmp_path / "lab.key")
    path = tmp_path / f"hook-{mode}"
    path.write_text(
        HOOK.format(
            python=sys.executable,
            log=str(tmp_path / "hook.log"),
            mode=mode,
            port=lab.dns_port,
            key=str(key),
        )
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_hook_method_publishes_checks_and_removes(lab, tmp_path: Path, seeded) -> None:
    name, other = seeded
    cfg = _cfg(
        lab,
        tmp_path,
        method="hook",
        hook=str(_hook(lab, tmp_path)),
        nameservers=[f"127.0.0.1:{lab.dns_port}"],
    )
    with dns01.Dns01(cfg).published([(name, "from-hook")]):
        assert txt(lab, name) == {other, "from-hook"}
    assert txt(lab, name) == {other}
    calls = (tmp_path / "hook.log").read_text().splitlines()
    assert calls == [
        f"add {name} from-hook add {name} from-hook {name} lab.test 60",
        f"remove {name} from-hook remove {name} from-hook {name} lab.test 60",
    ]


def test_hook_failure_names_status_and_stderr(lab, tmp_path: Path) -> None:
    cfg = _cfg(lab, tmp_path, method="hook", hook=str(_hook(lab, tmp_path, "fail")))
    with (
        pytest.raises(DnsError, match="exited with status 3: zone is locked by the registrar"),
        dns01.Dns01(cfg).published([("_acme-challenge.media.lab.test", "v")]),
    ):
        pytest.fail("hook failed")


def test_hook_timeout(lab, tmp_path: Path) -> None:
    hook = dns01.HookDns(_hook(lab, tmp_path, "hang"), timeout=0.5)
    with pytest.raises(DnsError, match=r"no exit after 0.5s \(dns.hook_timeout\)"):
        hook.add("_acme-challenge.media.lab.test", "v")


def _readme_hook(tmp_path: Path) -> Path:
    """The example hook README shows, as an executable file."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    script = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    assert script.startswith("#!/bin/sh\n# certfan DNS hook")
    path = tmp_path / "dns-hook"
    path.write_text(script)
    path.chmod(0o755)
    return path


def test_readme_hook_follows_cname_and_propagation_is_proved_by_default(
    lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NSUPDATE_SERVER", "127.0.0.1")
    monkeypatch.setenv("NSUPDATE_PORT", str(lab.dns_port))
    monkeypatch.setenv("NSUPDATE_KEY", str(bind_keyfile(lab, tmp_path / "lab.key")))
    # No dns.nameservers: the authoritative servers come from the zone's NS records.
    cfg = _cfg(lab, tmp_path, method="hook", hook=str(_readme_hook(tmp_path)), hook_timeout=20.0)
    dns = dns01.Dns01(cfg)
    with dns.published([("_acme-challenge.static.lab.test", "via-readme-hook")]) as added:
        # The CNAME was followed: the value is in the other zone, the name itself has none.
        assert [(a.target, a.zone) for a in added] == [
            ("static.delegated.test.", "delegated.test.")
        ]
        assert txt(lab, "static.delegated.test") == {"via-readme-hook"}
    assert txt(lab, "static.delegated.test") == set()


def test_hook_that_publishes_nothing_fails_unless_the_check_is_skipped(
    lab, tmp_path: Path
) -> None:
    hook = str(_hook(lab, tmp_path, "noop"))
    cfg = _cfg(lab, tmp_path, method="hook", hook=hook, propagation_timeout=0.5,
               poll_interval=0.1)
    with (
        pytest.raises(DnsError, match="not served after 0.5s"),
        dns01.Dns01(cfg).published([("_acme-challenge.media.lab.test", "never-there")]),
    ):
        pytest.fail("a value that is not served cannot have been proved")
    skip = _cfg(lab, tmp_path, method="hook", hook=hook, propagation_check=False)
    dns = dns01.Dns01(skip)
    with dns.published([("_acme-challenge.media.lab.test", "unchecked")]):
        pass
    # Said explicitly in the config: no TXT poll at all (only the CNAME/SOA look-ups).
    assert dns.lookup.queries == 2
