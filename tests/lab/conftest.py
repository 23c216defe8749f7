"""The lab tests' fixtures; every test under tests/lab carries the `lab` marker.

`lab` starts the local lab (certfan_lab: Pebble, BIND9, SSH/nginx edge nodes)
once per session. It needs root and the lab's programs; where they are
missing the tests that use it fail, loudly, rather than skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from certfan_lab import Lab, LabError, preflight, slots


def _slot_args() -> dict[str, Any]:
    """CERTFAN_LAB_SLOT=N (1-9) runs a lab beside the default one: its own dir,
    namespaces, subnet, ports and login user (certfan_lab/slots.py), so parallel
    test sessions don't collide."""
    try:
        return slots.lab_args(slots.from_env())
    except slots.SlotError as exc:
        pytest.fail(f"{slots.SLOT_ENV}: {exc}", pytrace=False)


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
    # The lab's own self-test (test_lab.py) and the audit of what certbot left
    # (test_audit.py) look at the nodes as the lab starts them: the seeded
    # certbot-layout certificates. They run first, before any test deploys to the nodes.
    first = ("test_lab.py", "test_audit.py")
    items.sort(key=lambda item: first.index(item.path.name) if item.path.name in first else 2)
