"""The hook method: an executable of the operator's adds or removes one TXT value.

Protocol (README, "DNS methods: hook")::

    <hook> add    <name> <value>
    <hook> remove <name> <value>

``<name>`` is where the TXT record goes: the ``_acme-challenge`` name after
following CNAMEs, absolute without the trailing dot. The environment carries
``CERTFAN_DNS_ACTION``, ``CERTFAN_DNS_NAME`` (the same name),
``CERTFAN_DNS_CHALLENGE`` (the ``_acme-challenge`` name before CNAMEs),
``CERTFAN_DNS_ZONE`` (the zone holding the name, by its SOA), ``CERTFAN_DNS_TTL``
and ``CERTFAN_DNS_VALUE``. "add" adds next to values already there and
"remove" removes that one value only. Exit 0 means done; anything else fails
the issuance with the exit status and the tail of stderr; a hook still
running after ``dns.hook_timeout`` seconds is killed. certfan checks
propagation itself afterwards, on the zone's authoritative servers.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from certfan.errors import DnsError
from certfan.issue.dnspending import Published

log = logging.getLogger(__name__)

HOOK_TIMEOUT = 60.0
_STDERR_TAIL = 800
# What a hook may be handed: names come from DNS (CNAME targets), so they are
# checked before they reach a script that may paste them into nsupdate input.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_LDH_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")  # a DNS-01 value is base64url


class HookDns:
    """Runs ``dns.hook`` once per value added or removed."""

    def __init__(self, hook: Path, timeout: float = HOOK_TIMEOUT, ttl: int = 60):
        self.hook = hook
        self.timeout = timeout
        self.ttl = ttl

    def add(self, fqdn: str, value: str, zone: str | None = None,
            challenge: str | None = None) -> None:
        self.run("add", Published(challenge or fqdn, fqdn, zone, value))

    def remove(self, fqdn: str, value: str, zone: str | None = None,
               challenge: str | None = None) -> None:
        self.run("remove", Published(challenge or fqdn, fqdn, zone, value))

    def run(self, action: str, item: Published) -> None:
        name = item.target.rstrip(".")
        for what, text, pattern in (("name", name, _LDH_NAME),
                                    ("challenge name", item.challenge.rstrip("."), _LDH_NAME),
                                    ("zone", (item.zone or "").rstrip(".") or "x", _LDH_NAME),
                                    ("value", item.value, _VALUE)):
            if not pattern.match(text):
                raise DnsError(f"dns hook {self.hook}: refusing to pass {what} {text[:80]!r}: "
                               "not a plain DNS name / base64url value")
        env = dict(os.environ, CERTFAN_DNS_ACTION=action, CERTFAN_DNS_NAME=name,
                   CERTFAN_DNS_CHALLENGE=item.challenge.rstrip("."),
                   CERTFAN_DNS_ZONE=(item.zone or "").rstrip("."),
                   CERTFAN_DNS_TTL=str(self.ttl), CERTFAN_DNS_VALUE=item.value)
        try:
            done = subprocess.run([str(self.hook), action, name, item.value], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DnsError(f"dns hook {self.hook} {action} {name}: no exit after "
                           f"{self.timeout:g}s (dns.hook_timeout)") from None
        except OSError as exc:
            raise DnsError(f"dns hook {self.hook}: cannot run: {exc.strerror} "
                           "(dns.hook)") from None
        if done.returncode != 0:
            tail = done.stderr.decode(errors="replace").strip()[-_STDERR_TAIL:]
            raise DnsError(f"dns hook {self.hook} {action} {name} exited with status "
                           f"{done.returncode}" + (f": {tail}" if tail else ""))
        log.debug("dns hook %s %s: ok", action, name)
