"""The lab tests' fixtures; every test under tests/lab carries the `lab` marker.

`lab` starts the local lab (certfan_lab: Pebble, BIND9, SSH/nginx edge nodes)
once per session. It needs root and the lab's programs; where they are
missing the tests that use it fail, loudly, rather than skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certfan_lab import Lab, LabError, preflight


def _slot_args() -> dict[str, Any]:
    """CERTFAN_LAB_SLOT=N (1-9) runs a lab beside the default one: its own dir,
    namespaces, subnet, ports and login user, so parallel test sessions don't collide."""
    slot = os.environ.get("CERTFAN_LAB_SLOT", "")
    if not slot or slot == "0":
        return {}
    if not slot.isdigit() or not 1 <= int(slot) <= 9:
        pytest.fail(f"CERTFAN_LAB_SLOT must be 0-9, got {slot!r}", pytrace=False)
    n = int(slot)
    return {
        "base_dir": f"/tmp/certfan-lab-{n}",
        "prefix": f"cf{n}",
        "subnet": 110 + n,
        "dns_port": 10053 + 100 * n,
        "acme_port": 14000 + 100 * n,
        "mgmt_port": 15000 + 100 * n,
        "user": f"certfan-lab{n}",
    }


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    problem = preflight()
    if problem:
        pytest.fail(f"the certfan lab cannot run here: {problem}", pytrace=False)
    the_lab = Lab(**_slot_args())
    try:
        the_lab.start()
        error = None
    except LabError as exc:
        error = str(exc)
    if error:
        pytest.fail(f"the certfan lab did not start: {error}", pytrace=False)
    yield the_lab
    the_lab.stop()


@pytest.fixture(scope="session")
def lab_config(lab: Lab) -> Path:
    """The certfan config file the lab wrote for itself."""
    return lab.config_path


@pytest.fixture
def make_case(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    """A reliability case maker: ``make_case(**overrides)`` -> helpers.reliability.Case."""
    from helpers.reliability import case_maker

    yield from case_maker(lab, tmp_path)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/lab/" in str(item.path):
            item.add_marker(pytest.mark.lab)
