"""Extra things a test puts on the lab: trust for Pebble's roots, hand-made
certificates and nginx server blocks on nodes (the fleet certfan finds when it
adopts one: audit and doctor tests).

Everything here writes on this machine only, inside the lab's directory and
its nodes' roots.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.DOTALL)


def add_to_bundle(bundle: Path, pem: str) -> None:
    """Append the certificates in ``pem`` to ``bundle`` (atomically) unless already there.

    The lab's ``acme.ca_bundle`` verifies Pebble's listener and, since certfan
    checks that every stored chain ends at a trusted root, also holds each
    issuing root Pebble made (a new one on every Pebble start; the old ones
    stay, so versions issued before a restart still check out)."""
    have = bundle.read_text() if bundle.exists() else ""
    new = [block for block in _PEM.findall(pem) if block.strip() not in have]
    if not new:
        return
    text = have if have.endswith("\n") or not have else have + "\n"
    tmp = bundle.with_name(bundle.name + ".tmp")
    tmp.write_text(text + "".join(b if b.endswith("\n") else b + "\n" for b in new))
    os.chmod(tmp, 0o644)
    os.replace(tmp, bundle)
