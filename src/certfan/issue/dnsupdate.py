"""RFC 2136 dynamic updates signed with TSIG: add one TXT value, remove one.

RFC 2136 "add" adds one RR to the RRset and "delete" with rdata removes that
one RR (sections 2.5.1 and 2.5.4), so an apex and its wildcard can both have
a value at ``_acme-challenge.<apex>`` and values someone else put there are
never touched. One of the two modules importing dnspython (with
``dnslookup``); its errors become :class:`DnsError` naming the config key.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import dns.exception
import dns.query
import dns.rcode
import dns.tsig
import dns.update

from certfan.config import DnsConfig, Endpoint
from certfan.config.preflight import tsig_secret
from certfan.errors import DnsError
from certfan.issue.dnslookup import Lookup, absolute, describe

log = logging.getLogger(__name__)

TXT_TTL = 60
UPDATE_TIMEOUT = 10.0


def read_tsig_secret(path: Path) -> str:
    """A bare base64 line, or BIND's ``key "n" { algorithm ..; secret "..."; };``.

    Messages never include the file's content.
    """
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise DnsError(f"{path}: cannot read TSIG secret: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s: TSIG secret file is readable by group or others (mode %o); chmod 600",
                    path, stat.S_IMODE(info.st_mode))
    secret = tsig_secret(text)  # the parser `certfan check` uses too
    if secret is None:
        raise DnsError(f"{path}: TSIG secret is not base64 (nor a BIND key clause)")
    return secret


class Rfc2136:
    """Dynamic updates to ``dns.server``, signed with the configured TSIG key."""

    def __init__(self, cfg: DnsConfig, lookup: Lookup | None = None):
        if not cfg.tsig_key_name or not cfg.tsig_secret_file:
            raise DnsError("dns.method = rfc2136 needs dns.tsig_key_name and dns.tsig_secret_file")
        self.cfg = cfg
        self.lookup = lookup or Lookup(cfg)
        self.server = Endpoint(cfg.server, cfg.port)
        self._key = dns.tsig.Key(
            cfg.tsig_key_name, read_tsig_secret(cfg.tsig_secret_file), cfg.tsig_algorithm
        )

    def add(self, fqdn: str, value: str, zone: str | None = None) -> None:
        zone = zone or self.lookup.find_zone(fqdn)
        update = dns.update.UpdateMessage(zone, keyring=self._key)
        update.add(absolute(fqdn), TXT_TTL, "TXT", _txt(value))
        self._send(update, zone, f"add TXT at {fqdn}")

    def remove(self, fqdn: str, value: str, zone: str | None = None) -> None:
        zone = zone or self.lookup.find_zone(fqdn)
        update = dns.update.UpdateMessage(zone, keyring=self._key)
        update.delete(absolute(fqdn), "TXT", _txt(value))  # this RR only, not the RRset
        self._send(update, zone, f"remove TXT at {fqdn}")

    def _send(self, update: dns.update.UpdateMessage, zone: str, what: str) -> None:
        where = f"zone {zone} at {self.server}"
        key = self.cfg.tsig_key_name
        try:
            response = dns.query.tcp(
                update, self.server.address, timeout=UPDATE_TIMEOUT, port=self.server.port
            )
        except dns.tsig.PeerBadKey:
            raise DnsError(f"{what}: {where} refused: BADKEY, the server does not know "
                           f"TSIG key {key!r} (dns.tsig_key_name / dns.tsig_algorithm)") from None
        except (dns.tsig.PeerBadSignature, dns.tsig.BadSignature):
            raise DnsError(f"{what}: {where} refused: BADSIG, wrong secret for TSIG key "
                           f"{key!r} (dns.tsig_secret_file)") from None
        except dns.tsig.PeerBadTime:
            raise DnsError(f"{what}: {where} refused: BADTIME, clocks differ too much") from None
        except dns.exception.FormError as exc:
            if "requires a TSIG" not in str(exc):
                raise DnsError(f"{what}: {where}: {describe(exc)}") from exc
            # PowerDNS answers a request it cannot verify unsigned (BIND says BADSIG/BADKEY).
            raise DnsError(f"{what}: {where} refused: the server did not accept TSIG key "
                           f"{key!r}: wrong secret (dns.tsig_secret_file) or a key it does "
                           "not know (dns.tsig_key_name)") from None
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsError(f"{what}: {where}: {describe(exc)}") from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            hint = {dns.rcode.REFUSED: " (updates not allowed for this key?)",
                    dns.rcode.NOTAUTH: " (server not authoritative, or TSIG rejected: "
                                       "dns.tsig_key_name / dns.tsig_secret_file)",
                    dns.rcode.NOTZONE: " (name outside the zone)"}.get(rcode, "")
            raise DnsError(f"{what}: {where} refused: {dns.rcode.to_text(rcode)}{hint}")
        log.debug("%s in %s: NOERROR", what, where)


def _txt(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
