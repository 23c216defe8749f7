"""config.load: references between sections (deploy_to, groups) resolved or refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from certfan import config
from helpers.configcase import MINIMAL, edit, error_of, loader


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], config.Config]:
    return loader(tmp_path, monkeypatch)


@pytest.fixture
def error(conf: Callable[[str], config.Config]) -> Callable[[str], str]:
    return error_of(conf)


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
