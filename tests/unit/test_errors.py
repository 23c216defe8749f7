"""errors.py draws the whole exception tree of the package, and draws it true."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

import certfan
from certfan import errors


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(certfan.__path__, prefix="certfan."):
        if info.name.endswith(".__main__"):  # running it is what importing it does
            continue
        module = importlib.import_module(info.name)
        for name, obj in list(vars(module).items()):  # not getmembers: no module __getattr__
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__):
                found[name] = obj
    return found


def _drawn() -> tuple[dict[str, tuple[int, str | None]], set[str]]:
    """Tree entries (name -> depth, drawn parent) and the internal ones."""
    doc = errors.__doc__ or ""
    tree_part, _, internal_part = doc.partition("Internal,")
    entries: dict[str, tuple[int, str | None]] = {}
    stack: list[str] = []
    for line in tree_part.splitlines():
        m = re.match(r"^ {4}((?:[│ ] {3})*)(?:[├└]── )?([A-Z]\w+) ", line)
        if not m:
            continue
        depth = len(m.group(1)) // 4 + (1 if "──" in line else 0)
        del stack[depth:]
        entries[m.group(2)] = (depth, stack[-1] if stack else None)
        stack.append(m.group(2))
    internal = set(re.findall(r"^ {4}(_?[A-Z]\w+)[( ]", internal_part, re.MULTILINE))
    return entries, internal


def test_every_exception_class_in_the_package_is_drawn() -> None:
    entries, internal = _drawn()
    assert "CertfanError" in entries and "StoreError" in entries
    missing = sorted(set(_defined_exceptions()) - set(entries) - internal)
    assert not missing, f"exception classes missing from the errors.py docstring: {missing}"


def test_nothing_drawn_that_does_not_exist() -> None:
    entries, internal = _drawn()
    stale = sorted((set(entries) | internal) - set(_defined_exceptions()))
    assert not stale, f"errors.py docstring draws classes that do not exist: {stale}"


def test_the_tree_is_the_class_hierarchy() -> None:
    defined = _defined_exceptions()
    entries, internal = _drawn()
    for name, (_, parent) in entries.items():
        cls = defined[name]
        if parent is None:
            assert cls is errors.CertfanError
        else:
            assert cls.__bases__ == (defined[parent],), f"{name} is drawn under {parent}"
    for name in internal:
        assert not issubclass(defined[name], errors.CertfanError), (
            f"{name} is a CertfanError: draw it in the tree"
        )
