"""Shared by tests/unit and tests/lab: the helpers' asserts explain themselves too."""

from __future__ import annotations

import pytest

pytest.register_assert_rewrite("helpers")
