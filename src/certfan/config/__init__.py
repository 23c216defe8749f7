"""TOML configuration -> frozen, typed objects, validated once at load.

Every error is a :class:`certfan.errors.ConfigError` naming the file, the key
path (``hosts[2].port``) and, where it can be found, the line.

The file format is described in :mod:`certfan.config.model`.

Error messages
--------------
One line, ``<file>[:<line>]: <key path>: <message>``, for example::

    conf.toml:7: invalid TOML: Expected '=' after a key in a key/value pair
    conf.toml:31: hosts[1].prot: unknown key (did you mean 'port'?)
    conf.toml:29: hosts[1].address: required key missing
    conf.toml:31: hosts[1].port: expected an integer, got a string ('22')
    conf.toml:31: hosts[1].port: must be between 1 and 65535, got 70000
    conf.toml:52: certificates[0].deploy_to[1]: unknown host or group 'esmee' (did you mean 'esme'?)

* Key paths are dotted; array entries use their 0-based index, always, also
  for hosts and certificates (``hosts[1].port``, not ``hosts[sally].port``):
  the name may itself be the missing or invalid value, and the line number
  already leads to the entry.  Keys that are not bare TOML keys are quoted
  with ``repr``; values are shown with ``repr`` (control characters escaped)
  and cut at 60 characters, so a message never spans lines.
* The line is that of the key, else of the nearest enclosing statement or
  table header that can be found (for a missing key: the table's ``[...]``
  line).  It is found by a small scan of the text (``lines.py``),
  since tomllib reports lines only for syntax errors, and it is left out
  whenever the scan cannot place the key (e.g. a table created implicitly by
  a dotted key).

Semantics worth knowing
-----------------------
* Local paths (``state_dir``, ``ca_bundle``, ``eab.hmac_key_file``,
  ``identity_file``, ``known_hosts``, ``tsig_secret_file``, ``hook``,
  ``credentials_file``) are resolved against the directory of the config file
  when relative (without resolving symlinks); they need not exist at load time,
  but for ``method = "lexicon"`` the credentials must be there (``dnsmethod``).
* ``config_test`` and ``reload`` are argv tuples.  A string is split with
  ``shlex``; it is never given to a shell, so shell syntax is refused
  (``; & | < > ( )`` unquoted, ``$`` and backquotes outside single quotes):
  write ``["sh", "-c", "..."]`` instead.  An array is taken as is.
* ``dns.server``, ``nameservers`` and ``resolvers`` must be IP addresses (DNS
  messages are sent to them directly); host addresses may be hostnames.
* ``Certificate.hosts`` is ``deploy_to`` expanded in the order written, groups
  replaced by their members in group order, first occurrence kept.
* ``Config.path`` is the path as given to :func:`load`; a file over
  ``MAX_CONFIG_BYTES`` (1 MiB) is refused.
* ``Config.hosts``, ``groups`` and ``certificates`` are plain dicts in file
  order (kept as dicts so a Config can be copied and pickled); every other
  collection is a tuple.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from certfan.config import checks as check
from certfan.config import dnsmethod
from certfan.config import notify as notify_section
from certfan.config.lines import KeyPath, line_map
from certfan.config.model import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    DEFAULT_STATE_DIR,
    DNS_METHODS,
    KEY_TYPES,
    MAX_CONFIG_BYTES,
    TSIG_ALGORITHMS,
    AcmeConfig,
    Certificate,
    Config,
    DnsConfig,
    Endpoint,
    ExternalAccountBinding,
    Host,
    RolloutPolicy,
)
from certfan.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "CONFIG_ENV",
    "DEFAULT_STATE_DIR",
    "MAX_CONFIG_BYTES",
    "KEY_TYPES",
    "TSIG_ALGORITHMS",
    "DNS_METHODS",
    "Endpoint",
    "ExternalAccountBinding",
    "AcmeConfig",
    "DnsConfig",
    "RolloutPolicy",
    "Host",
    "Certificate",
    "Config",
    "find_config",
    "load",
]


def find_config(cli_path: str | os.PathLike[str] | None) -> Path:
    """--config, then $CERTFAN_CONFIG, then /etc/certfan/certfan.toml."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_CONFIG_PATH


def load(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate one TOML file. Raises ConfigError."""
    file = os.fspath(path)
    text = _read(file)
    doc = _parse(file, text)
    ctx = check.Ctx(file, Path(file).absolute().parent, line_map(text))
    check.reject_unknown(ctx, (), doc, _TOP_KEYS)
    if "acme" not in doc:
        raise ctx.error(("acme",), "required table missing")
    state_dir = check.optional(ctx, (), doc, "state_dir", check.local_path, DEFAULT_STATE_DIR)
    acme = _acme(ctx, doc["acme"])
    dns = _dns(ctx, doc.get("dns", {}))
    rollout = RolloutPolicy(
        **check.Table(ctx, ("rollout",), doc.get("rollout", {}), _ROLLOUT).values()
    )
    hosts = _hosts(ctx, doc.get("hosts", []), _host_defaults(ctx, doc.get("host_defaults", {})))
    groups = _groups(ctx, doc.get("groups", {}), hosts)
    certificates = _certificates(ctx, doc.get("certificates", []), hosts, groups)
    certificates = _own_rollouts(ctx, doc, certificates, rollout)
    notify = notify_section.notifiers(ctx, doc.get("notify", []))
    # positional, in field order: each local is named after its field
    return Config(Path(file), state_dir, acme, dns, rollout, hosts, groups, certificates, notify)


# -- reading and parsing -------------------------------------------------------


def _read(file: str) -> str:
    try:
        with open(file, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: NUL in the path
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(file, f"cannot read: {reason}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(file, f"cannot read: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(file, "invalid TOML: not UTF-8 text", line=line) from exc


_TOML_WHERE = re.compile(r"(.*) \(at line ([0-9]+), column [0-9]+\)", re.DOTALL)


def _parse(file: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message, line = str(exc), None
        m = _TOML_WHERE.fullmatch(message)
        if m:
            message, line = m.group(1), int(m.group(2))
        raise ConfigError(file, f"invalid TOML: {_one_line(message)}", line=line) from exc
    except RecursionError as exc:
        raise ConfigError(file, "invalid TOML: nested too deeply") from exc
    except ValueError as exc:  # tomllib lets int()'s digit limit through
        reason = str(exc).split(":")[0]
        raise ConfigError(file, f"invalid TOML: {_one_line(reason)}") from exc


def _one_line(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- sections ------------------------------------------------------------------------

_TOP_KEYS = (
    "state_dir", "acme", "dns", "rollout", "groups", "host_defaults", "hosts", "certificates",
    "notify",
)

_EAB: dict[str, check.Conv[Any]] = {"kid": check.token, "hmac_key_file": check.local_path}


def _eab(ctx: check.Ctx, key: KeyPath, value: object) -> ExternalAccountBinding:
    table = check.Table(ctx, key, value, _EAB)
    table.require("kid", "hmac_key_file")
    return ExternalAccountBinding(**table.values())


_ACME: dict[str, check.Conv[Any]] = {
    "directory": check.directory,
    "email": check.email,
    "agree_tos": check.boolean,
    "account_key_type": check.choice(KEY_TYPES),
    "profile": check.profile,
    "caa_identities": check.array(check.dns_name),
    "ca_bundle": check.local_path,
    "eab": _eab,
}


def _acme(ctx: check.Ctx, value: object) -> AcmeConfig:
    table = check.Table(ctx, ("acme",), value, _ACME)
    table.require("directory")
    return AcmeConfig(**table.values())


_DNS: dict[str, check.Conv[Any]] = {
    "method": check.choice(DNS_METHODS),
    "server": check.ip,
    "port": check.port,
    "tsig_key_name": check.dns_name,
    "tsig_algorithm": check.choice(TSIG_ALGORITHMS),
    "tsig_secret_file": check.local_path,
    "propagation_timeout": check.seconds(86400),
    "poll_interval": check.seconds(60),
    "nameservers": check.array(check.endpoint),
    "resolvers": check.array(check.endpoint),
    "ns_port": check.port,
    "hook": check.local_path,
    "hook_timeout": check.seconds(3600),
    "propagation_check": check.boolean,
    "provider": check.token,
    "provider_options": dnsmethod.provider_options,
    "credentials_file": check.local_path,
    "credentials_env": dnsmethod.credentials_env,
}


def _dns(ctx: check.Ctx, value: object) -> DnsConfig:
    table = check.Table(ctx, ("dns",), value, _DNS)
    values = table.values()
    method = values.get("method", DnsConfig.method)
    if method == "rfc2136":
        table.require("tsig_key_name", "tsig_secret_file", why=' (method = "rfc2136")')
    elif method == "lexicon":
        dnsmethod.check_lexicon(ctx, values, table.data)
    else:
        table.require("hook", why=f' (method = "{method}")')
    for name, port in (
        ("nameservers", values.get("ns_port", DnsConfig.ns_port)),
        ("resolvers", 53),
    ):
        if name in values:
            values[name] = tuple(Endpoint(a, p or port) for a, p in values[name])
    return DnsConfig(**values)


_ROLLOUT: dict[str, check.Conv[Any]] = {
    "canary": check.integer(0, 10000),
    "concurrency": check.integer(1, 256),
    "failure_budget": check.count_or_percent,
    "max_unreachable": check.count_or_percent,
    "rollback_on_halt": check.boolean,
    "connect_timeout": check.seconds(86400),
    "command_timeout": check.seconds(86400),
    "verify_timeout": check.seconds(86400),
}

_HOST: dict[str, check.Conv[Any]] = {
    "name": check.name,
    "address": check.address,
    "port": check.port,
    "user": check.user,
    "identity_file": check.local_path,
    "known_hosts": check.local_path,
    "root": check.remote_root,
    "config_test": check.command,
    "reload": check.command,
    "probe_address": check.address,
    "probe_port": check.port,
}

_CERTIFICATE: dict[str, check.Conv[Any]] = {
    "name": check.name,
    "domains": check.array(check.domain, nonempty=True, unique="domain"),
    "key_type": check.choice(KEY_TYPES),
    "reuse_key": check.boolean,
    "deploy_to": check.array(check.string),
    "rollout": lambda ctx, key, value: None,  # see _own_rollouts
}


def _array_of_tables(ctx: check.Ctx, name: str, value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ctx.error(
            (name,), f"expected an array of tables ([[{name}]]), got {check.got(value)}"
        )
    return value


def _refuse_duplicate(
    ctx: check.Ctx, table: str, i: int, name: str, index: dict[str, int]
) -> None:
    """``<table>[i].name`` must be unique; ``index`` records where each name was first used."""
    if name in index:
        raise ctx.error(
            (table, i, "name"),
            f"duplicate {table[:-1]} name {name!r} (first used by {table}[{index[name]}])",
        )
    index[name] = i


_PER_HOST_ONLY = ("name", "address")


def _host_defaults(ctx: check.Ctx, value: object) -> dict[str, Any]:
    """[host_defaults]: any host key but name and address, under every [[hosts]] entry."""
    if isinstance(value, dict):
        for key in _PER_HOST_ONLY:
            if key in value:
                raise ctx.error(("host_defaults", key), "is per host: set it in each [[hosts]]")
    schema = {k: v for k, v in _HOST.items() if k not in _PER_HOST_ONLY}
    return check.Table(ctx, ("host_defaults",), value, schema).values()


def _own_rollouts(
    ctx: check.Ctx, doc: dict[str, Any], certs: dict[str, Certificate], rollout: RolloutPolicy
) -> dict[str, Certificate]:
    """Each [certificates.rollout] merged over [rollout], key by key."""
    merged = dict(certs)
    for i, (name, cert) in enumerate(certs.items()):  # certs is in file order, one per entry
        raw = doc["certificates"][i].get("rollout")
        if raw is not None:
            own = check.Table(ctx, ("certificates", i, "rollout"), raw, _ROLLOUT).values()
            merged[name] = replace(cert, rollout=replace(rollout, **own))
    return merged


def _hosts(ctx: check.Ctx, value: object, defaults: Mapping[str, Any]) -> dict[str, Host]:
    hosts: dict[str, Host] = {}
    index: dict[str, int] = {}
    for i, raw in enumerate(_array_of_tables(ctx, "hosts", value)):
        table = check.Table(ctx, ("hosts", i), raw, _HOST)
        table.require("name", "address")
        host = Host(**{**defaults, **table.values()})
        _refuse_duplicate(ctx, "hosts", i, host.name, index)
        hosts[host.name] = host
    return hosts


def _groups(ctx: check.Ctx, value: object, hosts: Mapping[str, Host]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict):
        raise ctx.error(("groups",), f"expected a table ([groups]), got {check.got(value)}")
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in value.items():
        key: KeyPath = ("groups", name)
        check.name(ctx, key, name)
        if name in hosts:
            raise ctx.error(key, f"group name {name!r} is also a host name")
        groups[name] = check.array(check.string, nonempty=True, unique="member")(ctx, key, members)
        for i, member in enumerate(groups[name]):
            if member not in hosts:
                raise ctx.error(
                    key + (i,), f"unknown host {check.show(member)}{check.suggest(member, hosts)}"
                )
    return groups


def _certificates(
    ctx: check.Ctx, value: object, hosts: Mapping[str, Host], groups: Mapping[str, tuple[str, ...]]
) -> dict[str, Certificate]:
    certificates: dict[str, Certificate] = {}
    index: dict[str, int] = {}
    for i, raw in enumerate(_array_of_tables(ctx, "certificates", value)):
        table = check.Table(ctx, ("certificates", i), raw, _CERTIFICATE)
        table.require("name", "domains")
        values = table.values()
        resolved: dict[str, None] = {}  # an ordered set
        for k, target in enumerate(values.get("deploy_to", ())):
            if target in hosts:
                resolved[target] = None
            elif target in groups:
                resolved.update(dict.fromkeys(groups[target]))
            else:
                hint = check.suggest(target, [*hosts, *groups])
                raise ctx.error(
                    ("certificates", i, "deploy_to", k),
                    f"unknown host or group {check.show(target)}{hint}",
                )
        cert = Certificate(**values, hosts=tuple(resolved))
        _refuse_duplicate(ctx, "certificates", i, cert.name, index)
        certificates[cert.name] = cert
    return certificates
