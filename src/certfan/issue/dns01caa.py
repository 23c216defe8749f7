"""CAA (RFC 8659): may this CA issue for a name? For ``certfan doctor``.

The relevant record set is found by climbing the tree (section 3): the CAA
set of the name itself, else of its parent, and so on up to (not including)
the root; CNAMEs are followed by the resolver. Then (section 4): a wildcard
name looks at ``issuewild`` when there is any, else ``issue``; no property of
that tag means any CA may issue; otherwise a CA may issue when one property
names one of its identities (``caaIdentities`` in the ACME directory,
RFC 8555 section 7.1.1). An empty value (``0 issue ";"``) allows none; a
critical property of a tag not understood forbids everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.name
import dns.rdatatype

from certfan.issue.dnslookup import Lookup, absolute

KNOWN_TAGS = frozenset({"issue", "issuewild", "iodef", "contactemail", "contactphone"})
CRITICAL_FLAG = 128


@dataclass(frozen=True)
class Caa:
    flags: int
    tag: str
    value: str


@dataclass(frozen=True)
class CaaAnswer:
    name: str  # the certificate name asked about
    owner: str | None  # where the relevant record set was found (None: none anywhere)
    records: tuple[Caa, ...]


def relevant_caa(lookup: Lookup, name: str) -> CaaAnswer:
    """Climb from ``name`` to the first non-empty CAA set. Raises DnsError."""
    base = name[2:] if name.startswith("*.") else name
    labels = dns.name.from_text(absolute(base))
    while labels != dns.name.root:
        response = lookup.ask(labels.to_text(), "CAA")
        found = tuple(
            Caa(int(r.flags), r.tag.decode("ascii", "replace").lower(),
                r.value.decode("utf-8", "replace"))
            for rrset in response.answer if rrset.rdtype == dns.rdatatype.CAA for r in rrset
        )
        if found:
            return CaaAnswer(name, labels.to_text(), found)
        labels = labels.parent()
    return CaaAnswer(name, None, ())


def caa_verdict(answer: CaaAnswer, identities: Sequence[str]) -> tuple[bool | None, str]:
    """(allowed, why): None when it cannot be told (records, but no CA identities)."""
    if answer.owner is None:
        return True, "no CAA records: any CA may issue"
    for record in answer.records:
        if record.flags & CRITICAL_FLAG and record.tag not in KNOWN_TAGS:
            return False, (f"CAA at {answer.owner} has a critical {record.tag!r} property "
                           "this check does not understand: no CA may issue")
    tag = "issue"
    if answer.name.startswith("*.") and any(r.tag == "issuewild" for r in answer.records):
        tag = "issuewild"
    values = [r.value for r in answer.records if r.tag == tag]
    if not values:
        return True, f"CAA at {answer.owner} has no {tag} property: any CA may issue"
    allowed = {v.split(";", 1)[0].strip().lower().rstrip(".") for v in values} - {""}
    listed = ", ".join(sorted(allowed)) or "no CA at all"
    if not identities:
        return None, (f"CAA at {answer.owner} allows {listed}; the CA publishes no "
                      "caaIdentities: set acme.caa_identities to check")
    wanted = {i.lower().rstrip(".") for i in identities}
    if allowed & wanted:
        return True, f"CAA at {answer.owner} {tag} allows {', '.join(sorted(allowed & wanted))}"
    return False, (f"CAA at {answer.owner} {tag} allows {listed}, not this CA "
                   f"({', '.join(sorted(wanted))})")
