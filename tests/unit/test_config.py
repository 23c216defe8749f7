"""config.load: the example, every kind of error (exact one-line messages), paths."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from certfan import config
from certfan.config import Endpoint, find_config, load
from certfan.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "example.toml"

# Line numbers in the expected messages below refer to this text.
MINIMAL = """\
[acme]
directory = "https://acme.example/directory"

[dns]
tsig_key_name = "certfan."
tsig_secret_file = "tsig.secret"

[[hosts]]
name = "sally"
address = "198.51.100.30"

[[hosts]]
name = "esme"
address = "198.51.100.40"

[[certificates]]
name = "media"
domains = ["media.hachyderm.io"]
deploy_to = ["sally", "esme"]
"""


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a config as ./c.toml (so messages start with 'c.toml') and load it."""
    monkeypatch.chdir(tmp_path)

    def write_and_load(text: str) -> config.Config:
        Path("c.toml").write_text(text, encoding="utf-8")
        return load("c.toml")

    return write_and_load


@pytest.fixture
def error(conf):
    """The one-line message of the ConfigError that loading ``text`` raises."""

    def load_error(text: str) -> str:
        with pytest.raises(ConfigError) as info:
            conf(text)
        message = str(info.value)
        assert "\n" not in message and len(message.splitlines()) == 1
        assert info.value.exit_code == 2
        return message

    return load_error


def edit(old: str, new: str) -> str:
    assert MINIMAL.count(old) == 1, old
    return MINIMAL.replace(old, new)


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


# -- cross references -----------------------------------------------------------------

XREF_CASES = [
    (
        'name = "esme"',
        'name = "sally"',
        "c.toml:13: hosts[1].name: duplicate host name 'sally' (first used by hosts[0])",
    ),
    (
        '["sally", "esme"]',
        '["sally", "esmee"]',
        "c.toml:19: certificates[0].deploy_to[1]: unknown host or group 'esmee' (did you mean "
        "'esme'?)",
    ),
    (
        '["sally", "esme"]',
        '["fritz"]',
        "c.toml:19: certificates[0].deploy_to[0]: unknown host or group 'fritz'",
    ),
    (
        '[[hosts]]\nname = "sally"',
        '[groups]\ncdn = ["sally", "esmee"]\n\n[[hosts]]\nname = "sally"',
        "c.toml:9: groups.cdn[1]: unknown host 'esmee' (did you mean 'esme'?)",
    ),
    (
        '[[hosts]]\nname = "sally"',
        '[groups]\nsally = ["esme"]\n\n[[hosts]]\nname = "sally"',
        "c.toml:9: groups.sally: group name 'sally' is also a host name",
    ),
    (
        '[[hosts]]\nname = "sally"',
        '[groups]\ncdn = ["esme", "esme"]\n\n[[hosts]]\nname = "sally"',
        "c.toml:9: groups.cdn[1]: duplicate member 'esme'",
    ),
    (
        '[[hosts]]\nname = "sally"',
        '[groups]\ncdn = []\n\n[[hosts]]\nname = "sally"',
        "c.toml:9: groups.cdn: must not be empty",
    ),
    (
        'deploy_to = ["sally", "esme"]',
        'deploy_to = ["esme"]\n\n[[certificates]]\nname = "media"\ndomains = ["b.example"]',
        "c.toml:22: certificates[1].name: duplicate certificate name 'media' (first used by "
        "certificates[0])",
    ),
    (
        '["media.hachyderm.io"]',
        '["media.hachyderm.io", "MEDIA.hachyderm.io."]',
        "c.toml:18: certificates[0].domains[1]: duplicate domain 'media.hachyderm.io'",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), XREF_CASES)
def test_cross_reference_errors(error, old: str, new: str, message: str) -> None:
    assert error(edit(old, new)) == message


def test_deploy_to_resolves_groups_in_order_without_duplicates(conf) -> None:
    text = edit(
        '[[hosts]]\nname = "sally"',
        '[groups]\ncdn = ["sally", "esme"]\n\n[[hosts]]\nname = "sally"',
    )
    text = text.replace('deploy_to = ["sally", "esme"]', 'deploy_to = ["esme", "cdn", "sally"]')
    cert = conf(text).certificate("media")
    assert cert.deploy_to == ("esme", "cdn", "sally")
    assert cert.hosts == ("esme", "sally")


def test_certificate_without_deploy_to_has_no_hosts(conf) -> None:
    cert = conf(MINIMAL.replace('deploy_to = ["sally", "esme"]\n', "")).certificate("media")
    assert cert.deploy_to == () and cert.hosts == ()


# -- hostile and unsafe values -----------------------------------------------------------

NAME_RULE = (
    "use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"
)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'name = "sally"',
            'name = "sally;rm -rf /"',
            f"c.toml:9: hosts[0].name: invalid name 'sally;rm -rf /': {NAME_RULE}",
        ),
        (
            'name = "sally"',
            'name = ".."',
            f"c.toml:9: hosts[0].name: invalid name '..': {NAME_RULE}",
        ),
        (
            'name = "sally"',
            'name = "a..b"',
            f"c.toml:9: hosts[0].name: invalid name 'a..b': {NAME_RULE}",
        ),
        (
            'name = "sally"',
            'name = "../etc"',
            f"c.toml:9: hosts[0].name: invalid name '../etc': {NAME_RULE}",
        ),
        (
            'name = "media"',
            'name = "media/../../x"',
            f"c.toml:17: certificates[0].name: invalid name 'media/../../x': {NAME_RULE}",
        ),
        (
            'name = "media"',
            'name = "$(reboot)"',
            f"c.toml:17: certificates[0].name: invalid name '$(reboot)': {NAME_RULE}",
        ),
        (
            'name = "media"',
            'name = "-rf"',
            f"c.toml:17: certificates[0].name: invalid name '-rf': {NAME_RULE}",
        ),
        (
            '[[hosts]]\nname = "sally"',
            '[groups]\n"a/b" = ["esme"]\n\n[[hosts]]\nname = "sally"',
            f"c.toml:9: groups.'a/b': invalid name 'a/b': {NAME_RULE}",
        ),
        (
            '[[hosts]]\nname = "sally"',
            '[groups]\n"cdn;reboot" = ["esme"]\n\n[[hosts]]\nname = "sally"',
            f"c.toml:9: groups.'cdn;reboot': invalid name 'cdn;reboot': {NAME_RULE}",
        ),
        (
            'name = "sally"',
            'name = "sally"\nuser = "root; id"',
            (
                "c.toml:10: hosts[0].user: invalid user name 'root; id': use 1-32 lower-case "
                "letters, "
                "digits, '_' or '-', starting with a letter or '_'"
            ),
        ),
        (
            'address = "198.51.100.30"',
            'address = "198.51.100.30; reboot"',
            "c.toml:10: hosts[0].address: not an IP address or hostname: '198.51.100.30; reboot'",
        ),
        (
            'address = "198.51.100.30"',
            'address = "198.51.100.300"',
            "c.toml:10: hosts[0].address: not an IP address or hostname: '198.51.100.300'",
        ),
        (
            'address = "198.51.100.30"',
            'address = "-oProxyCommand=reboot"',
            "c.toml:10: hosts[0].address: not an IP address or hostname: '-oProxyCommand=reboot'",
        ),
    ],
)
def test_unsafe_names(error, old: str, new: str, message: str) -> None:
    assert error(edit(old, new)) == message


ROOT_RULE = (
    "use an absolute path of letters, digits, '.', '_', '-' and '/', without '.' or '..' components"
)


@pytest.mark.parametrize(
    ("root", "message"),
    [
        ('"/etc/../root"', f"unsafe remote path '/etc/../root': {ROOT_RULE}"),
        ('"/etc/./certfan"', f"unsafe remote path '/etc/./certfan': {ROOT_RULE}"),
        ('"etc/certfan"', f"unsafe remote path 'etc/certfan': {ROOT_RULE}"),
        ('"/etc/cert fan"', f"unsafe remote path '/etc/cert fan': {ROOT_RULE}"),
        ('"/etc/$(reboot)"', f"unsafe remote path '/etc/$(reboot)': {ROOT_RULE}"),
        ('"/etc//certfan"', f"unsafe remote path '/etc//certfan': {ROOT_RULE}"),
        ('""', f"unsafe remote path '': {ROOT_RULE}"),
        ('"/"', "must not be '/'"),
        ('"//"', "must not be '/'"),
    ],
)
def test_unsafe_root(error, root: str, message: str) -> None:
    text = edit('name = "sally"', f'name = "sally"\nroot = {root}')
    assert error(text) == f"c.toml:10: hosts[0].root: {message}"


def test_root_trailing_slash_is_dropped(conf) -> None:
    cfg = conf(edit('name = "sally"', 'name = "sally"\nroot = "/etc/nginx/certfan/"'))
    assert cfg.host("sally").root == "/etc/nginx/certfan"


SHELL_HINT = (
    'is shell syntax, but commands run without a shell; write an array such as ["sh", "-c", "..."]'
)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            r'"nginx -t\nreboot"',
            r"must not contain control characters or line breaks: 'nginx -t\nreboot'",
        ),
        (
            r'["nginx", "-t\nreboot"]',
            r"must not contain control characters or line breaks: '-t\nreboot'",
        ),
        (
            r'"nginx\u0000 -t"',
            r"must not contain control characters or line breaks: 'nginx\x00 -t'",
        ),
        ('"nginx -t; reboot"', f"';' {SHELL_HINT}"),
        ('"nginx -t && reboot"', f"'&' {SHELL_HINT}"),
        ('"echo $(reboot)"', f"'$' {SHELL_HINT}"),
        ('"nginx -t 2>&1"', f"'>' {SHELL_HINT}"),
        ('"nginx -t \'x"', "cannot split into words: No closing quotation"),
        ('""', "must not be empty"),
        ('"   "', "must not be empty"),
        ("[]", "must not be empty"),
        ("42", "expected a string or an array of strings, got an integer (42)"),
    ],
)
def test_bad_commands(error, command: str, message: str) -> None:
    text = edit('name = "sally"', f'name = "sally"\nreload = {command}')
    key = "hosts[0].reload[1]" if command.startswith('["nginx"') else "hosts[0].reload"
    assert error(text) == f"c.toml:10: {key}: {message}"


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ('"systemctl reload nginx"', ("systemctl", "reload", "nginx")),
        (
            "\"sh -c 'nginx -t && systemctl reload nginx'\"",
            ("sh", "-c", "nginx -t && systemctl reload nginx"),
        ),
        ('["sh", "-c", "nginx -t; x"]', ("sh", "-c", "nginx -t; x")),
        ("'nginx -c \"/etc/nginx/my conf\"'", ("nginx", "-c", "/etc/nginx/my conf")),
    ],
)
def test_good_commands(conf, command: str, argv: tuple[str, ...]) -> None:
    cfg = conf(edit('name = "sally"', f'name = "sally"\nconfig_test = {command}'))
    assert cfg.host("sally").config_test == argv


# -- URLs, email, domains, DNS endpoints --------------------------------------------------


@pytest.mark.parametrize(
    ("directory", "message"),
    [
        (
            "http://acme.example/directory",
            "must be an https:// URL (http:// only for localhost), got "
            "'http://acme.example/directory'",
        ),
        (
            "ftp://acme.example/dir",
            "must be an https:// URL (http:// only for localhost), got 'ftp://acme.example/dir'",
        ),
        ("acme.example/directory", "not a URL: 'acme.example/directory'"),
        ("https://[::1/dir", "not a URL: 'https://[::1/dir'"),
        ("https://acme.example:99999/dir", "not a URL: 'https://acme.example:99999/dir'"),
        ("https://acme example/dir", "not a URL: 'https://acme example/dir'"),
    ],
)
def test_bad_directory(error, directory: str, message: str) -> None:
    text = edit('"https://acme.example/directory"', f'"{directory}"')
    assert error(text) == f"c.toml:2: acme.directory: {message}"


@pytest.mark.parametrize(
    "directory", ["http://localhost:14000/dir", "http://127.0.0.1/dir", "http://[::1]:14000/dir"]
)
def test_http_directory_on_localhost(conf, directory: str) -> None:
    assert (
        conf(edit('"https://acme.example/directory"', f'"{directory}"')).acme.directory == directory
    )


@pytest.mark.parametrize(
    "email", ["ops", "ops@", "ops@localhost", "ops@@x.org", "mailto:ops@x.org", "o ps@x.org"]
)
def test_bad_email(error, email: str) -> None:
    text = edit("[dns]", f'email = "{email}"\n[dns]')
    assert error(text) == f"c.toml:4: acme.email: not an email address: {email!r}"


@pytest.mark.parametrize(
    ("domain", "message"),
    [
        ("media..hachyderm.io", "not a valid DNS name: 'media..hachyderm.io'"),
        ("media_x.hachyderm.io", "not a valid DNS name: 'media_x.hachyderm.io'"),
        ("-media.hachyderm.io", "not a valid DNS name: '-media.hachyderm.io'"),
        ("203.0.113.10", "not a valid DNS name: '203.0.113.10'"),
        ("", "not a valid DNS name: ''"),
        ("a." * 130 + "io", "not a valid DNS name: '" + "a." * 28 + "..."),  # cut at 60
        (
            "media.*.hachyderm.io",
            "a wildcard must be the whole leftmost label ('*.example.org'), got "
            "'media.*.hachyderm.io'",
        ),
        (
            "m*.hachyderm.io",
            "a wildcard must be the whole leftmost label ('*.example.org'), got 'm*.hachyderm.io'",
        ),
        (
            "*.*.hachyderm.io",
            "a wildcard must be the whole leftmost label ('*.example.org'), got '*.*.hachyderm.io'",
        ),
    ],
)
def test_bad_domains(error, domain: str, message: str) -> None:
    text = edit('["media.hachyderm.io"]', f'["{domain}"]')
    assert error(text) == f"c.toml:18: certificates[0].domains[0]: {message}"


def test_domains_are_normalized(conf) -> None:
    text = edit(
        '["media.hachyderm.io"]', '["Media.Hachyderm.IO.", "*.hachyderm.io", "bücher.example"]'
    )
    assert conf(text).certificate("media").domains == (
        "media.hachyderm.io",
        "*.hachyderm.io",
        "xn--bcher-kva.example",
    )


def test_domains_must_not_be_empty(error) -> None:
    assert (
        error(edit('["media.hachyderm.io"]', "[]"))
        == "c.toml:18: certificates[0].domains: must not be empty"
    )


def test_dns_endpoints(conf) -> None:
    text = edit(
        "[dns]",
        '[dns]\nns_port = 5353\nnameservers = ["192.0.2.53", "192.0.2.54:53", "2001:db8::1", '
        '"[2001:db8::2]:54"]\n'
        'resolvers = ["127.0.0.1", "[::1]:5300"]',
    )
    dns = conf(text).dns
    assert dns.nameservers == (
        Endpoint("192.0.2.53", 5353),
        Endpoint("192.0.2.54", 53),
        Endpoint("2001:db8::1", 5353),
        Endpoint("2001:db8::2", 54),
    )
    assert dns.resolvers == (Endpoint("127.0.0.1", 53), Endpoint("::1", 5300))
    assert [str(e) for e in dns.resolvers] == ["127.0.0.1:53", "[::1]:5300"]


ENDPOINT_RULE = "expected 'address', 'address:port' or '[v6]:port' with an IP address, got"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ns1.example.org", f"{ENDPOINT_RULE} 'ns1.example.org'"),
        ("192.0.2.53:", f"{ENDPOINT_RULE} '192.0.2.53:'"),
        ("192.0.2.53:dns", f"{ENDPOINT_RULE} '192.0.2.53:dns'"),
        ("[192.0.2.53]:53", f"{ENDPOINT_RULE} '[192.0.2.53]:53'"),
        ("192.0.2.53:0", "must be between 1 and 65535, got 0"),
        ("192.0.2.53:65536", "must be between 1 and 65535, got 65536"),
    ],
)
def test_bad_endpoints(error, entry: str, message: str) -> None:
    text = edit("[dns]", f'[dns]\nnameservers = ["192.0.2.1", "{entry}"]')
    assert error(text) == f"c.toml:5: dns.nameservers[1]: {message}"


def test_dns_server_must_be_an_ip(error) -> None:
    text = edit("[dns]", '[dns]\nserver = "ns1.example.org"')
    assert error(text) == "c.toml:5: dns.server: not an IP address: 'ns1.example.org'"


def test_tsig_key_name_must_be_a_dns_name(error) -> None:
    text = edit('"certfan."', '"certfan key"')
    assert error(text) == "c.toml:5: dns.tsig_key_name: not a valid DNS name: 'certfan key'"


# -- local paths ----------------------------------------------------------------------------


def test_relative_paths_are_resolved_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "elsewhere").mkdir()
    text = MINIMAL.replace("[acme]", 'state_dir = "state"\n\n[acme]\nca_bundle = "./pebble.pem"')
    text = text.replace(
        'name = "sally"', 'name = "sally"\nidentity_file = "keys/id"\nknown_hosts = "/abs/kh"'
    )
    (tmp_path / "etc" / "certfan.toml").write_text(text)
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load(Path("../etc/certfan.toml"))
    base = tmp_path / "elsewhere" / ".." / "etc"
    assert cfg.path == Path("../etc/certfan.toml")
    assert cfg.state_dir == base / "state"
    assert cfg.acme.ca_bundle == base / "pebble.pem"
    assert cfg.dns.tsig_secret_file == base / "tsig.secret"
    assert cfg.host("sally").identity_file == base / "keys" / "id"
    assert cfg.host("sally").known_hosts == Path("/abs/kh")
    assert all(
        p.is_absolute() for p in (cfg.state_dir, cfg.acme.ca_bundle, cfg.dns.tsig_secret_file)
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"../secrets/tsig"', "must not contain '..' components: '../secrets/tsig'"),
        (
            '"/etc/certfan/../../root/.ssh/id"',
            "must not contain '..' components: '/etc/certfan/../../root/.ssh/id'",
        ),
        (r'"tsig\nsecret"', r"must not contain control characters or line breaks: 'tsig\nsecret'"),
        (r'"tsig\u0000"', r"must not contain control characters or line breaks: 'tsig\x00'"),
        ('""', "must not be empty"),
        (
            '"~/tsig.secret"',
            "'~' is not expanded; write an absolute path or one relative to the config file: "
            "'~/tsig.secret'",
        ),
    ],
)
def test_bad_local_paths(error, value: str, message: str) -> None:
    text = edit('tsig_secret_file = "tsig.secret"', f"tsig_secret_file = {value}")
    assert error(text) == f"c.toml:6: dns.tsig_secret_file: {message}"


# -- where the config comes from ---------------------------------------------------------------


def test_find_config_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTFAN_CONFIG", "/from/env.toml")
    assert find_config("/from/cli.toml") == Path("/from/cli.toml")
    assert find_config(None) == Path("/from/env.toml")
    monkeypatch.setenv("CERTFAN_CONFIG", "")
    assert find_config(None) == Path("/etc/certfan/certfan.toml")
    monkeypatch.delenv("CERTFAN_CONFIG")
    assert find_config(None) == Path("/etc/certfan/certfan.toml")
    assert find_config(Path("rel.toml")) == Path("rel.toml")


def test_unknown_host_lookup_is_a_config_error(conf) -> None:
    cfg = conf(MINIMAL)
    with pytest.raises(ConfigError, match=r"^c.toml: hosts: unknown host 'fritz'$"):
        cfg.host("fritz")
