"""The minimal config the config tests edit, and how they load it (messages start with
``c.toml``, the name each loads it under)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from certfan import config
from certfan.config import load
from certfan.errors import ConfigError

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


def loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], config.Config]:
    """Write a config as ./c.toml (so messages start with 'c.toml') and load it."""
    monkeypatch.chdir(tmp_path)

    def write_and_load(text: str) -> config.Config:
        Path("c.toml").write_text(text, encoding="utf-8")
        return load("c.toml")

    return write_and_load


def error_of(conf: Callable[[str], config.Config]) -> Callable[[str], str]:
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
