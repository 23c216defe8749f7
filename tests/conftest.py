"""Shared fixtures.

`lab` starts the local lab (certfan.lab: Pebble, BIND9, SSH/nginx edge nodes)
once per session. It needs root and the lab's programs; where they are
missing the tests that use it fail, loudly, rather than skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from certfan.lab import Lab, LabError, preflight


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    problem = preflight()
    if problem:
        pytest.fail(f"the certfan lab cannot run here: {problem}", pytrace=False)
    the_lab = Lab()
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
