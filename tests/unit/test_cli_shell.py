"""Completion scripts and the man page come from the parser: bash completes
commands and each command's options (tried in a real bash), zsh's script
parses (when zsh is installed), the man page renders and docs/certfan.1 is
what the generator makes now."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from certfan.cli import app as cli
from certfan.cli import shell

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _complete(script: str, *words: str) -> set[str]:
    """COMPREPLY after ``certfan WORDS...`` (the last word is the one being completed)."""
    line = " ".join(["certfan", *words])
    probe = (f"{script}\nCOMP_WORDS=(certfan {' '.join(repr(w) for w in words)})\n"
             f"COMP_CWORD={len(words)}\nCOMP_LINE={line!r}\n_certfan\n"
             'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "--norc", "--noprofile"], input=probe, capture_output=True,
                          text=True, timeout=30, check=True)
    return set(done.stdout.split())


def test_bash_completes_commands_options_and_choices() -> None:
    script = shell.bash(cli.build_parser())
    assert {"push", "prune"} <= _complete(script, "p")
    assert _complete(script, "status", "--w") == {"--warn-days"}
    assert {"--dry-run", "--host", "--group", "--json", "--quiet"} <= _complete(script, "push",
                                                                                  "--")
    assert "--dry-run" not in _complete(script, "status", "--")
    assert _complete(script, "reissue", "media", "--reason", "key") == {"keyCompromise"}
    assert _complete(script, "--log-format", "") == {"text", "json"}
    assert _complete(script, "completion", "") >= set()  # no crash on a positional


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_parses() -> None:
    script = shell.zsh(cli.build_parser())
    subprocess.run(["zsh", "-n"], input=script, text=True, timeout=30, check=True)


def test_zsh_script_names_every_command_and_option() -> None:
    script = shell.zsh(cli.build_parser())
    assert script.startswith("#compdef certfan")
    for word in ("_certfan_push()", "'--dry-run[", "'--warn-days[", "'--reason[",
                 "(unspecified keyCompromise", "'status:"):
        assert word in script, word


def test_the_man_page_renders_and_the_shipped_copy_is_current() -> None:
    page = shell.manpage(cli.build_parser())
    assert (DOCS / "certfan.1").read_text() == page, "regenerate: certfan manpage > docs/certfan.1"
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    done = subprocess.run(["man", "-l", "-"], input=page, capture_output=True, text=True,
                          timeout=30, check=True, env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
    text = done.stdout
    for word in ("SYNOPSIS", "GLOBAL OPTIONS", "--warn-days", "EXIT STATUS", "rollback"):
        assert word in text, word
