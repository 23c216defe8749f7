"""Lab slots: several labs side by side on one machine, one table for everyone.

Slot 0 is the default lab; slot N (1-9) moves everything that could collide:

    slot  dir                  netns   subnet          DNS    ACME   Pebble mgmt  login user
    0     /tmp/certfan-lab     cfl-*   10.77.0.0/16    10053  14000  15000        certfan-lab
    N     /tmp/certfan-lab-N   cfN-*   10.(110+N)/16   10053+100N  14000+100N  15000+100N
                                                                                  certfan-labN

pytest takes the slot from ``CERTFAN_LAB_SLOT`` (tests/lab/conftest.py), the
benchmarks run in slot 7 (bench/_lab.py), and ``python -m certfan_lab up
--slot N`` starts one by hand; each parameter can still be moved on its own.
"""

from __future__ import annotations

import os
from typing import Any

SLOT_ENV = "CERTFAN_LAB_SLOT"
MAX_SLOT = 9
BENCH_SLOT = 7


class SlotError(ValueError):
    """A slot that is not 0-9."""


def parse(text: str | int | None) -> int:
    """A slot number from the command line or the environment ('' and None: 0)."""
    if text is None or text == "":
        return 0
    if isinstance(text, int):
        n = text
    elif text.isdigit():
        n = int(text)
    else:
        raise SlotError(f"a lab slot is a number 0-{MAX_SLOT}, got {text!r}")
    if not 0 <= n <= MAX_SLOT:
        raise SlotError(f"a lab slot is a number 0-{MAX_SLOT}, got {n}")
    return n


def lab_args(slot: int) -> dict[str, Any]:
    """Keyword arguments for ``Lab(...)`` that put it in ``slot``."""
    n = parse(slot)
    if n == 0:
        return {}  # Lab's own defaults (core.py); $CERTFAN_LAB_DIR still moves the directory
    return {
        "base_dir": f"/tmp/certfan-lab-{n}",
        "prefix": f"cf{n}",
        "subnet": 110 + n,
        "dns_port": 10053 + 100 * n,
        "acme_port": 14000 + 100 * n,
        "mgmt_port": 15000 + 100 * n,
        "user": f"certfan-lab{n}",
    }


def from_env(env: dict[str, str] | None = None) -> int:
    """The slot ``CERTFAN_LAB_SLOT`` names (0 when unset)."""
    return parse((os.environ if env is None else env).get(SLOT_ENV, ""))
