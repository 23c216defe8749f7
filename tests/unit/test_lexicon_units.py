"""The lexicon method's own logic, without a provider: credentials, masking, and
that the public suffix list is never downloaded (tldextract kept offline)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from certfan.config import DnsConfig
from certfan.errors import DnsError
from certfan.issue import dnslexicon

OPTIONS = (("pdns_server", "http://127.0.0.1:9"),)


def _cfg(**kw: object) -> DnsConfig:
    return DnsConfig(method="lexicon", provider="powerdns", provider_options=OPTIONS,
                     **kw)  # type: ignore[arg-type]


def test_credentials_from_file_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "creds.toml"
    path.write_text('auth_token = "from-file"\nauth_username = "u"\n')
    path.chmod(0o644)
    monkeypatch.setenv("CERTFAN_TEST_TOKEN", "from-env")
    with caplog.at_level(logging.WARNING):
        found = dnslexicon.read_credentials(_cfg(
            credentials_file=path, credentials_env=(("auth_token", "CERTFAN_TEST_TOKEN"),)))
    assert found == {"auth_token": "from-env", "auth_username": "u"}  # the environment wins
    assert "readable by group or others (mode 644); chmod 600" in caplog.text
    assert "from-file" not in caplog.text and "from-env" not in caplog.text


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read lexicon credentials: No such file or directory (dns.credentials_file)"),
    ('auth_token = "unterminated\n', 'not TOML (option = "value" lines) (dns.credentials_file)'),
    ("auth_token = 5\n", "auth_token: expected a string (dns.credentials_file)"),
])
def test_credentials_file_errors_name_the_key_never_the_content(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "creds.toml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DnsError) as info:
        dnslexicon.read_credentials(_cfg(credentials_file=path))
    assert str(info.value) == f"{path}: {message}"
    assert "unterminated" not in str(info.value)


def test_unset_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CERTFAN_TEST_NOPE", raising=False)
    with pytest.raises(DnsError, match=r"^environment variable CERTFAN_TEST_NOPE is not set "
                                        r"\(dns.credentials_env.auth_token\)$"):
        dnslexicon.read_credentials(_cfg(credentials_env=(("auth_token", "CERTFAN_TEST_NOPE"),)))


class _Refused(Exception):
    """What requests raises for an HTTP error: the response rides along."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.response = type("Response", (), {"status_code": status})()


def test_provider_errors_are_explained_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTFAN_TEST_TOKEN", "tok-123456")
    dns = dnslexicon.LexiconDns(_cfg(credentials_env=(("auth_token", "CERTFAN_TEST_TOKEN"),)))
    assert dns._explain(_Refused(401, "401 for url http://x/?key=tok-123456")) == (
        "the provider refused the credentials (HTTP 401): check dns.credentials_file / "
        "dns.credentials_env")
    assert dns._explain(_Refused(500, "boom")) == "HTTP 500"
    assert dns._explain(ValueError("bad key tok-123456")) == "ValueError: bad key ***"


def test_an_unloadable_provider_names_its_extra() -> None:
    cfg = DnsConfig(method="lexicon", provider="no_such_provider")
    with pytest.raises(DnsError, match=r"lexicon provider 'no_such_provider' cannot be loaded"):
        dnslexicon.LexiconDns(cfg)


def test_the_suffix_list_is_never_downloaded() -> None:
    import tldextract

    seen: list[str] = []
    listening = [True]

    def hook(event: str, args: tuple[object, ...]) -> None:
        if listening[0] and event in ("socket.connect", "socket.getaddrinfo"):
            seen.append(f"{event} {args[0]}")

    sys.addaudithook(hook)
    try:
        dnslexicon.offline_suffix_list()
        parts = tldextract.extract("_acme-challenge.www.example.co.uk")
    finally:
        listening[0] = False
    assert (parts.domain, parts.suffix) == ("example", "co.uk")
    assert seen == []  # no request at all
