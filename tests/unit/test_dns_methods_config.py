"""``certfan check`` on the DNS methods' keys: exact one-line errors for the lexicon
method (extra missing, provider unknown, credentials missing or inline), the
hook's timeout and the explicit propagation skip.

The "extra missing" case runs the real CLI in an interpreter whose
site-packages lack dns-lexicon (a farm of links to everything else).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from certfan import cli, config

SRC = Path(__file__).resolve().parents[2] / "src"

# Line numbers in the expected messages refer to this text.
LEXICON = """\
[acme]
directory = "https://acme.example/directory"
agree_tos = true

[dns]
method = "lexicon"
provider = "cloudflare"
credentials_env = { auth_token = "CERTFAN_TEST_CF_TOKEN" }
"""


def _check(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text(text)
    code = cli.main(["-c", "c.toml", "check"])
    out = capsys.readouterr()
    return code, (out.err + out.out).strip()


@pytest.mark.parametrize(("old", "new", "line"), [
    ('provider = "cloudflare"', 'provider = "cloudfare"',
     "c.toml:7: dns.provider: unknown lexicon provider 'cloudfare' (did you mean 'cloudflare'?)"),
    ('provider = "cloudflare"\n', "",
     'c.toml:5: dns.provider: required key missing (method = "lexicon")'),
    ('credentials_env = { auth_token = "CERTFAN_TEST_CF_TOKEN" }\n', "",
     'c.toml:5: dns.credentials_env: credentials missing (method = "lexicon"): set '
     "dns.credentials_env and/or dns.credentials_file"),
    ('credentials_env = { auth_token = "CERTFAN_TEST_CF_TOKEN" }',
     'credentials_env = { auth_token = "CERTFAN_TEST_UNSET" }',
     "c.toml:8: dns.credentials_env.auth_token: environment variable CERTFAN_TEST_UNSET "
     "is not set"),
    ('credentials_env = { auth_token = "CERTFAN_TEST_CF_TOKEN" }',
     'credentials_env = { auth_token = "abc def" }',
     "c.toml:8: dns.credentials_env.auth_token: not an environment variable name: 'abc def' "
     "(the variable's name goes here, not its value)"),
    ('credentials_env = { auth_token = "CERTFAN_TEST_CF_TOKEN" }',
     'credentials_file = "cf.toml"',
     "c.toml:8: dns.credentials_file: cannot read {tmp}/cf.toml"),
    ('credentials_env = { auth_token = "CERTFAN_TEST_CF_TOKEN" }',
     'credentials_env = { auth_token = "CERTFAN_TEST_CF_TOKEN" }\n'
     'provider_options = { auth_token = "s3cret" }',
     "c.toml:9: dns.provider_options.auth_token: credentials are never written in the config: "
     "name them in dns.credentials_env or put them in dns.credentials_file"),
])
def test_lexicon_errors_are_one_exact_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    old: str, new: str, line: str,
) -> None:
    monkeypatch.setenv("CERTFAN_TEST_CF_TOKEN", "token-value")
    monkeypatch.delenv("CERTFAN_TEST_UNSET", raising=False)
    assert LEXICON.count(old) == 1
    code, out = _check(tmp_path, LEXICON.replace(old, new), monkeypatch, capsys)
    assert (code, out) == (2, "certfan: error: " + line.format(tmp=tmp_path))
    assert "token-value" not in out and "s3cret" not in out


def test_a_complete_lexicon_config_checks_and_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CERTFAN_TEST_CF_TOKEN", "token-value")
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text(LEXICON + 'provider_options = { zone_id = "z1" }\n'
                              "propagation_check = false\n")
    dns = config.load(Path("c.toml")).dns
    assert (dns.method, dns.provider, dns.propagation_check) == ("lexicon", "cloudflare", False)
    assert dns.credentials_env == (("auth_token", "CERTFAN_TEST_CF_TOKEN"),)
    assert dns.provider_options == (("zone_id", "z1"),)
    assert "token-value" not in repr(dns)


def test_hook_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    hook = LEXICON.split("[dns]")[0] + '[dns]\nmethod = "hook"\nhook = "h"\nhook_timeout = 5\n'
    monkeypatch.chdir(tmp_path)
    Path("c.toml").write_text(hook)
    dns = config.load(Path("c.toml")).dns
    assert (dns.hook, dns.hook_timeout, dns.propagation_check) == (tmp_path / "h", 5.0, True)
    code, out = _check(tmp_path, hook.replace("hook_timeout = 5", "propagation_check = 0"),
                       monkeypatch, capsys)
    assert (code, out) == (2, "certfan: error: c.toml:8: dns.propagation_check: expected a "
                              "boolean (true or false), got an integer (0)")


def _site_without_lexicon(tmp_path: Path) -> Path:
    """site-packages as links, minus dns-lexicon: what an install without the extra has."""
    site = Path(sysconfig.get_paths()["purelib"])
    farm = tmp_path / "site"
    farm.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("lexicon", "dns_lexicon")) or name.endswith(".pth"):
            continue
        (farm / entry.name).symlink_to(entry)
    return farm


def test_missing_extra_names_the_key_and_the_install_command(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(LEXICON)
    farm = _site_without_lexicon(tmp_path)
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{SRC}:{farm}",
           "CERTFAN_TEST_CF_TOKEN": "token-value"}
    done = subprocess.run(
        [sys.executable, "-S", "-m", "certfan", "-c", "c.toml", "check"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr.strip(), done.stdout) == (
        2, "certfan: error: c.toml:6: dns.method: \"lexicon\" needs the lexicon extra: "
           "pip install 'certfan[lexicon]'", "")


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(_installed("boto3"), reason="boto3 is installed here")
def test_a_provider_whose_own_extra_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CERTFAN_TEST_CF_TOKEN", "token-value")
    code, out = _check(tmp_path, LEXICON.replace('"cloudflare"', '"route53"'), monkeypatch, capsys)
    assert (code, out) == (2, "certfan: error: c.toml:7: dns.provider: lexicon provider 'route53' "
                              "needs boto3: pip install 'dns-lexicon[route53]'")
