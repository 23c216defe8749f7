"""Value checks for the DNS methods' keys (``dns.method = "lexicon"`` above all).

The lexicon checks look at files only: whether the ``certfan[lexicon]`` extra
is installed and names the provider is answered from the installed package's
layout, so loading a config never imports dns-lexicon. Credentials are named
here (a file, environment variables), never given: a value is never shown.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from certfan.config import checks as check
from certfan.config.lines import KeyPath

INSTALL_EXTRA = "pip install 'certfan[lexicon]'"
_OPTION = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def _option_table(ctx: check.Ctx, key: KeyPath, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ctx.error(key, f"expected a table of provider options, got {check.got(value)}")
    for name in value:
        if not _OPTION.match(name):
            raise ctx.error(key + (name,), f"not a lexicon option name: {check.show(name)} "
                            "(lower case, digits and '_', like auth_token)")
    return value


def credentials_env(ctx: check.Ctx, key: KeyPath, value: object) -> tuple[tuple[str, str], ...]:
    """``{ auth_token = "CF_API_TOKEN" }``: provider option -> environment variable name."""
    pairs = []
    for option, env in _option_table(ctx, key, value).items():
        name = check.string(ctx, key + (option,), env)
        if not _ENV_NAME.match(name):
            raise ctx.error(key + (option,), f"not an environment variable name: {check.show(name)}"
                            " (the variable's name goes here, not its value)")
        pairs.append((option, name))
    return tuple(pairs)


def provider_options(ctx: check.Ctx, key: KeyPath, value: object) -> tuple[tuple[str, str], ...]:
    """Non-secret provider options (``pdns_server = "http://..."``); credentials refused."""
    pairs = []
    for option, item in _option_table(ctx, key, value).items():
        if option.startswith("auth_"):
            raise ctx.error(key + (option,), "credentials are never written in the config: name "
                            "them in dns.credentials_env or put them in dns.credentials_file")
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ctx.error(key + (option,), f"expected a string or number, got {check.got(item)}")
        pairs.append((option, str(item)))
    return tuple(pairs)


def lexicon_providers_dir() -> Path | None:
    """Where the installed dns-lexicon keeps its providers; None without the extra."""
    import importlib.util  # here: only a lexicon config pays for it

    spec = importlib.util.find_spec("lexicon")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "_private" / "providers"


def check_lexicon(ctx: check.Ctx, values: dict[str, Any], data: dict[str, Any]) -> None:
    """Extra installed, provider known, credentials named and present."""
    providers = lexicon_providers_dir()
    if providers is None:
        raise ctx.error(("dns", "method"), f'"lexicon" needs the lexicon extra: {INSTALL_EXTRA}')
    if "provider" not in values:
        raise ctx.error(("dns", "provider"), 'required key missing (method = "lexicon")')
    provider = values["provider"]
    known = sorted(p.stem for p in providers.glob("*.py") if not p.stem.startswith("_")
                   and p.stem not in ("base", "auto"))
    if provider not in known:
        raise ctx.error(("dns", "provider"), f"unknown lexicon provider {check.show(provider)}"
                        f"{check.suggest(provider, known)}")
    missing = _missing_provider_packages(provider)
    if missing:
        raise ctx.error(("dns", "provider"), f"lexicon provider {provider!r} needs "
                        f"{', '.join(missing)}: pip install 'dns-lexicon[{provider}]'")
    if "credentials_file" not in data and "credentials_env" not in data:
        raise ctx.error(("dns", "credentials_env"), 'credentials missing (method = "lexicon"): '
                        "set dns.credentials_env and/or dns.credentials_file")
    for option, env in values.get("credentials_env", ()):
        if not os.environ.get(env):
            raise ctx.error(("dns", "credentials_env", option),
                            f"environment variable {env} is not set")
    path = values.get("credentials_file")
    if path is not None and not os.access(path, os.R_OK):
        raise ctx.error(("dns", "credentials_file"), f"cannot read {path}")


def _missing_provider_packages(provider: str) -> list[str]:
    """Distributions dns-lexicon's ``[provider]`` extra asks for that are not installed."""
    import importlib.metadata  # ~0.1 s cold: only a lexicon config pays for it

    try:
        requires = importlib.metadata.distribution("dns-lexicon").requires or []
    except importlib.metadata.PackageNotFoundError:
        return []
    wanted = re.compile(rf"""^([A-Za-z0-9_.-]+).*;\s*extra\s*==\s*["']{re.escape(provider)}["']""")
    missing = []
    for requirement in requires:
        match = wanted.match(requirement)
        if match is None:
            continue
        try:
            importlib.metadata.distribution(match.group(1))
        except importlib.metadata.PackageNotFoundError:
            missing.append(match.group(1))
    return missing
