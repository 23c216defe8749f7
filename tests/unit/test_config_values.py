"""config.load: the values themselves (names, roots, commands, the CA directory,
e-mail, domains, DNS endpoints, local paths), with exact one-line messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from certfan import config
from certfan.config import Endpoint, find_config, load
from certfan.errors import ConfigError
from helpers.configcase import MINIMAL, edit, error_of, loader


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], config.Config]:
    return loader(tmp_path, monkeypatch)


@pytest.fixture
def error(conf: Callable[[str], config.Config]) -> Callable[[str], str]:
    return error_of(conf)


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
