"""config.load: the example, every kind of error (exact one-line messages), paths."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from certfan import config
from certfan.config import Endpoint, load
from certfan.errors import ConfigError
from helpers.configcase import MINIMAL, edit, error_of, loader

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "example.toml"

@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], config.Config]:
    return loader(tmp_path, monkeypatch)


@pytest.fixture
def error(conf: Callable[[str], config.Config]) -> Callable[[str], str]:
    return error_of(conf)


# -- the example -------------------------------------------------------------------


def test_example_loads_with_the_expected_values() -> None:
    cfg = load(EXAMPLE)
    assert cfg.path == EXAMPLE
    assert cfg.state_dir == Path("/var/lib/certfan")
    assert cfg.acme.directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert cfg.acme.agree_tos is True
    assert cfg.acme.eab is None
    assert cfg.dns.method == "rfc2136"
    assert cfg.dns.tsig_key_name == "certfan-hachyderm."
    assert cfg.dns.tsig_secret_file == Path("/etc/certfan/tsig.secret")
    assert cfg.dns.nameservers == (
        Endpoint("192.0.2.53", 53),
        Endpoint("192.0.2.54", 53),
        Endpoint("2001:db8::53", 53),
    )
    assert cfg.rollout == config.RolloutPolicy(canary=1, concurrency=2, failure_budget=0)
    assert list(cfg.hosts) == ["cdn-frankfurt-1", "cdn-fremont-1", "sally", "esme"]
    assert cfg.hosts["esme"].port == 2222
    assert cfg.hosts["esme"].address == "198.51.100.40"
    assert cfg.hosts["sally"].reload == ("sudo", "-n", "systemctl", "reload", "nginx")
    assert cfg.hosts["sally"].config_test == ("sudo", "-n", "nginx", "-t")
    assert cfg.hosts["sally"].probe == Endpoint("198.51.100.30", 443)
    assert cfg.groups == {"cdn": ("cdn-frankfurt-1", "cdn-fremont-1", "sally", "esme")}
    media = cfg.certificate("media")
    assert media.domains == ("media.hachyderm.io",)
    assert media.deploy_to == ("cdn",)
    assert media.hosts == ("cdn-frankfurt-1", "cdn-fremont-1", "sally", "esme")


def test_defaults(conf) -> None:
    cfg = conf(MINIMAL)
    assert cfg.state_dir == Path("/var/lib/certfan")
    assert cfg.rollout == config.RolloutPolicy()
    assert cfg.dns.port == 53 and cfg.dns.tsig_algorithm == "hmac-sha256"
    assert cfg.acme == config.AcmeConfig("https://acme.example/directory")
    sally = cfg.host("sally")
    assert sally == config.Host("sally", "198.51.100.30")
    assert (sally.port, sally.user, sally.root) == (22, "root", "/etc/certfan")
    assert sally.config_test == ("nginx", "-t")
    assert cfg.groups == {}
    assert cfg.certificate("media").key_type == "ec-p256"


def test_config_is_frozen(conf) -> None:
    cfg = conf(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hosts["sally"].port = 2222  # type: ignore[misc]
    assert isinstance(cfg.certificate("media").domains, tuple)


# -- reading and TOML syntax -------------------------------------------------------


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load("missing.toml")
    assert str(info.value) == "missing.toml: cannot read: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("d.toml").mkdir()
    with pytest.raises(ConfigError) as info:
        load("d.toml")
    assert str(info.value) == "d.toml: cannot read: Is a directory"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'address = "198.51.100.40"',
            'address = "198.51.100.40',
            r"c.toml:14: invalid TOML: Illegal character '\n'",
        ),
        ('address = "198.51.100.40"', "address = ", "c.toml:14: invalid TOML: Invalid value"),
        (
            "[[certificates]]",
            "[[certificates]",
            "c.toml:16: invalid TOML: Expected ']]' at the end of an array declaration",
        ),
        (
            'name = "esme"',
            'name = "sally"\nname = "esme"',
            "c.toml:14: invalid TOML: Cannot overwrite a value",
        ),
    ],
)
def test_malformed_toml(error, old: str, new: str, message: str) -> None:
    assert error(edit(old, new)) == message


def test_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_bytes(b'[acme]\n\ndirectory = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load("c.toml")
    assert str(info.value) == "c.toml:3: invalid TOML: not UTF-8 text"


# -- keys, types, ranges -------------------------------------------------------------

CASES = [
    # unknown keys, with and without a suggestion
    (
        'name = "esme"',
        'name = "esme"\nprot = 22',
        "c.toml:14: hosts[1].prot: unknown key (did you mean 'port'?)",
    ),
    ("[acme]", 'banana = "yellow"\n[acme]', "c.toml:1: banana: unknown key"),
    ("[dns]", "[dsn]", "c.toml:4: dsn: unknown key (did you mean 'dns'?)"),
    (
        "directory =",
        "directroy =",
        "c.toml:2: acme.directroy: unknown key (did you mean 'directory'?)",
    ),
    (
        "[acme]",
        '[acme]\neab = { kid = "k", hmac_key = "h" }',
        "c.toml:2: acme.eab.hmac_key: unknown key (did you mean 'hmac_key_file'?)",
    ),
    # required keys
    ('address = "198.51.100.40"\n', "", "c.toml:12: hosts[1].address: required key missing"),
    ('name = "media"\n', "", "c.toml:16: certificates[0].name: required key missing"),
    (
        'directory = "https://acme.example/directory"\n',
        "",
        "c.toml:1: acme.directory: required key missing",
    ),
    (
        'tsig_secret_file = "tsig.secret"\n',
        "",
        'c.toml:4: dns.tsig_secret_file: required key missing (method = "rfc2136")',
    ),
    (
        "[dns]",
        '[dns]\nmethod = "hook"',
        'c.toml:4: dns.hook: required key missing (method = "hook")',
    ),
    (
        "[acme]",
        '[acme]\neab = { kid = "k" }',
        "c.toml:2: acme.eab.hmac_key_file: required key missing",
    ),
    # types
    (
        'name = "esme"',
        'name = "esme"\nport = "22"',
        "c.toml:14: hosts[1].port: expected an integer, got a string ('22')",
    ),
    (
        'name = "esme"',
        'name = "esme"\nport = true',
        "c.toml:14: hosts[1].port: expected an integer, got a boolean (true)",
    ),
    (
        'name = "esme"',
        "name = 7",
        "c.toml:13: hosts[1].name: expected a string, got an integer (7)",
    ),
    (
        '["media.hachyderm.io"]',
        '"media.hachyderm.io"',
        "c.toml:18: certificates[0].domains: expected an array, got a string "
        "('media.hachyderm.io')",
    ),
    (
        '["sally", "esme"]',
        '["sally", 2]',
        "c.toml:19: certificates[0].deploy_to[1]: expected a string, got an integer (2)",
    ),
    (
        "[dns]",
        "[rollout]\nrollback_on_halt = 1\n[dns]",
        "c.toml:5: rollout.rollback_on_halt: expected a boolean (true or false), got an integer "
        "(1)",
    ),
    (
        "[dns]",
        '[rollout]\nconnect_timeout = "10s"\n[dns]',
        "c.toml:5: rollout.connect_timeout: expected a number of seconds, got a string ('10s')",
    ),
    (
        "[dns]",
        "[rollout]\nconnect_timeout = 1979-05-27\n[dns]",
        "c.toml:5: rollout.connect_timeout: expected a number of seconds, got a date (1979-05-27)",
    ),
    (
        '[acme]\ndirectory = "https://acme.example/directory"',
        'acme = "x"\n',
        "c.toml:1: acme: expected a table, got a string ('x')",
    ),
    (
        '[[certificates]]\nname = "media"\ndomains = ["media.hachyderm.io"]\ndeploy_to',
        '[certificates]\nname = "media"\ndomains = ["media.hachyderm.io"]\ndeploy_to',
        "c.toml:16: certificates: expected an array of tables ([[certificates]]), got a table",
    ),
    (
        "[acme]",
        "groups = [1]\n[acme]",
        "c.toml:1: groups: expected a table ([groups]), got an array",
    ),
    # ranges
    (
        'name = "esme"',
        'name = "esme"\nport = 70000',
        "c.toml:14: hosts[1].port: must be between 1 and 65535, got 70000",
    ),
    (
        'name = "esme"',
        'name = "esme"\nprobe_port = 0',
        "c.toml:14: hosts[1].probe_port: must be between 1 and 65535, got 0",
    ),
    (
        "[dns]",
        "[rollout]\ncanary = -1\n[dns]",
        "c.toml:5: rollout.canary: must be between 0 and 10000, got -1",
    ),
    (
        "[dns]",
        "[rollout]\nconcurrency = 0\n[dns]",
        "c.toml:5: rollout.concurrency: must be between 1 and 256, got 0",
    ),
    (
        "[dns]",
        "[rollout]\nconcurrency = 257\n[dns]",
        "c.toml:5: rollout.concurrency: must be between 1 and 256, got 257",
    ),
    (
        "[dns]",
        "[rollout]\nfailure_budget = -2\n[dns]",
        "c.toml:5: rollout.failure_budget: must be between 0 and 10000, got -2",
    ),
    (
        "[dns]",
        "[rollout]\ncommand_timeout = 0\n[dns]",
        "c.toml:5: rollout.command_timeout: must be greater than 0 and at most 86400, got 0",
    ),
    (
        "[dns]",
        "[rollout]\nverify_timeout = nan\n[dns]",
        "c.toml:5: rollout.verify_timeout: must be greater than 0 and at most 86400, got nan",
    ),
    (
        "[dns]",
        "[rollout]\nconnect_timeout = 86400.5\n[dns]",
        "c.toml:5: rollout.connect_timeout: must be greater than 0 and at most 86400, got 86400.5",
    ),
    (
        "[dns]",
        "[dns]\npoll_interval = 61",
        "c.toml:5: dns.poll_interval: must be greater than 0 and at most 60, got 61",
    ),
    (
        "[dns]",
        "[dns]\npropagation_timeout = 1e9",
        "c.toml:5: dns.propagation_timeout: must be greater than 0 and at most 86400, got "
        "1000000000.0",
    ),
    (
        "[dns]",
        "[dns]\nns_port = 99999999999999999999",
        "c.toml:5: dns.ns_port: must be between 1 and 65535, got 99999999999999999999",
    ),
    # enumerations
    (
        'name = "media"',
        'name = "media"\nkey_type = "ec-p255"',
        (
            "c.toml:18: certificates[0].key_type: must be one of ec-p256, ec-p384, rsa-2048, "
            "rsa-3072, rsa-4096; got 'ec-p255' (did you mean 'ec-p256'?)"
        ),
    ),
    (
        "[dns]",
        '[dns]\ntsig_algorithm = "HMAC-SHA256"',
        (
            "c.toml:5: dns.tsig_algorithm: must be one of hmac-sha256, hmac-sha384, hmac-sha512, "
            "hmac-sha224, hmac-sha1, hmac-md5; got 'HMAC-SHA256' (did you mean 'hmac-sha256'?)"
        ),
    ),
    (
        "[dns]",
        '[dns]\nmethod = "nsupdate"',
        "c.toml:5: dns.method: must be one of rfc2136, lexicon, hook; got 'nsupdate'",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), CASES)
def test_key_type_and_range_errors(error, old: str, new: str, message: str) -> None:
    assert error(edit(old, new)) == message


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("hosts = [1]", "c.toml:1: hosts: expected an array of tables ([[hosts]]), got an array"),
        (
            "hosts = 1",
            "c.toml:1: hosts: expected an array of tables ([[hosts]]), got an integer (1)",
        ),
        ("hosts = [{}]", "c.toml:1: hosts[0].name: required key missing"),
        ('hosts = [{name = "a", address = "a", x = 1}]', "c.toml:1: hosts[0].x: unknown key"),
    ],
)
def test_hosts_shape(error, hosts: str, message: str) -> None:
    assert error(hosts + "\n" + MINIMAL.split("[[hosts]]")[0]) == message


def test_ints_are_accepted_for_seconds(conf) -> None:
    cfg = conf(edit("[dns]", "[rollout]\nconnect_timeout = 5\n[dns]\npoll_interval = 2"))
    assert cfg.rollout.connect_timeout == 5.0 and isinstance(cfg.rollout.connect_timeout, float)
    assert cfg.dns.poll_interval == 2.0


def test_line_is_left_out_when_the_key_cannot_be_placed(error) -> None:
    # [acme] is created implicitly by a dotted key: there is no line to point at.
    text = MINIMAL.replace(
        '[acme]\ndirectory = "https://acme.example/directory"\n', 'acme.email = "a@b.org"\n'
    )
    assert error(text) == "c.toml: acme.directory: required key missing"


def test_missing_acme_table(error) -> None:
    text = MINIMAL.replace('[acme]\ndirectory = "https://acme.example/directory"\n', "")
    assert error(text) == "c.toml: acme: required table missing"


def test_error_carries_key_and_line(conf) -> None:
    with pytest.raises(ConfigError) as info:
        conf(edit('name = "esme"', 'name = "esme"\nport = 0'))
    assert (info.value.key, info.value.line, info.value.path) == ("hosts[1].port", 14, "c.toml")
