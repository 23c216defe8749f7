"""The ``[[notify]]`` entries: where certfan tells a person that something needs them.

::

    [[notify]]
    name = "ops-slack"                 # optional; default notify[<index>]
    webhook = "https://hooks.slack.com/services/T000/B000/XXXX"
    format = "slack"                   # certfan (default), slack, matrix, discord
    on = ["failed", "halted", "expiring"]   # default: all three
    timeout = 5.0                      # seconds per delivery (default 5)

    [[notify]]
    command = ["/usr/local/bin/page-oncall", "--team", "edge"]   # argv, no shell

An entry has a ``webhook`` (or ``webhook_file``: a file holding the URL, so
the token need not live in the config) and/or a ``command``. The webhook URL
is a secret (Slack and Discord put the token in it): no message, here or at
delivery, ever shows more than its scheme and host.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any

from certfan.config import checks as check
from certfan.config.lines import KeyPath
from certfan.config.model import NOTIFY_EVENTS, NOTIFY_FORMATS, Notifier

LOOPBACK_NAMES = ("localhost",)


def redact_url(url: str) -> str:
    """``scheme://host[:port]/…``: what may be shown of a webhook URL."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}/…"


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_url(ctx: check.Ctx, key: KeyPath, value: object) -> str:
    """An https:// URL (http:// only to loopback); never echoed back in an error."""
    s = check.string(ctx, key, value)
    if not s or not s.isprintable() or " " in s:
        raise ctx.error(key, "not a URL (the value is not shown: it may hold a token)")
    try:
        parts = urllib.parse.urlsplit(s)
        host = parts.hostname or ""
        parts.port  # noqa: B018 -- raises ValueError on a bad port
    except ValueError:
        raise ctx.error(key, "not a URL (the value is not shown: it may hold a token)") from None
    if not host:
        raise ctx.error(key, "not a URL (the value is not shown: it may hold a token)")
    if not (parts.scheme == "https" or parts.scheme == "http" and _loopback(host)):
        raise ctx.error(
            key, f"must be an https:// URL (http:// only to loopback), got {redact_url(s)}"
        )
    return s


_NOTIFY: dict[str, check.Conv[Any]] = {
    "name": check.name,
    "webhook": webhook_url,
    "webhook_file": check.local_path,
    "format": check.choice(NOTIFY_FORMATS),
    "command": check.command,
    "on": check.array(check.choice(NOTIFY_EVENTS), nonempty=True, unique="event"),
    "timeout": check.seconds(60),
}


def notifiers(ctx: check.Ctx, value: object) -> tuple[Notifier, ...]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ctx.error(
            ("notify",), f"expected an array of tables ([[notify]]), got {check.got(value)}"
        )
    entries: list[Notifier] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(value):
        table = check.Table(ctx, ("notify", i), raw, _NOTIFY)
        values = table.values()
        if "webhook" in values and "webhook_file" in values:
            raise ctx.error(("notify", i, "webhook_file"), "give webhook or webhook_file, not both")
        if not {"webhook", "webhook_file", "command"} & set(values):
            raise ctx.error(
                ("notify", i), "needs a webhook, a webhook_file or a command (or several)"
            )
        if "format" in values and not {"webhook", "webhook_file"} & set(values):
            raise ctx.error(("notify", i, "format"), "format applies to a webhook; there is none")
        name = values.setdefault("name", f"notify[{i}]")
        if name in seen:
            raise ctx.error(
                ("notify", i, "name"),
                f"duplicate notify name {name!r} (first used by notify[{seen[name]}])",
            )
        seen[name] = i
        entries.append(Notifier(**values))
    return tuple(entries)
