"""The two things a killed run leaves that the next run must finish, without a lab.

* ``dns01.PendingTxt``: TXT values recorded before they are added; a later run
  removes what a dead run recorded, and keeps what it cannot remove yet.
* ``Store.unactivated`` / ``order.adopt_unactivated``: a version stored by
  a run that died before making it current becomes current, instead of being
  issued again; a version a rollback moved away from does not.

The lab cases that drive them are in test_reliability_kill.py and
test_reliability_issuance.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certfan.config import AcmeConfig, Certificate, Config, DnsConfig, Endpoint, RolloutPolicy
from certfan.errors import DnsError
from certfan.issue import dns01, order
from certfan.state.store import Release, Store
from helpers.hostile import HOSTILE
from helpers.ops import cert_files


class FakePublisher:
    def __init__(self) -> None:
        self.zone: set[tuple[str, str]] = set()
        self.down = False

    def add(self, fqdn: str, value: str, zone: str | None = None) -> None:
        if self.down:
            raise DnsError("server down")
        self.zone.add((fqdn, value))

    def remove(self, fqdn: str, value: str, zone: str | None = None) -> None:
        if self.down:
            raise DnsError("server down")
        self.zone.discard((fqdn, value))


class FakeLookup:
    def resolve_target(self, name: str) -> str:
        return name + "."

    def find_zone(self, name: str) -> str:
        return "lab.test."

    def authoritative(self, zone: str) -> tuple[Endpoint, ...]:
        return (Endpoint("127.0.0.1", 53),)

    def wait_propagated(self, pending: Sequence[object], **kw: object) -> int:
        return 1


def _dns(state: Path, publisher: FakePublisher) -> dns01.Dns01:
    return dns01.Dns01(DnsConfig(), publisher=publisher, lookup=FakeLookup(),  # type: ignore[arg-type]
                       pending=dns01.PendingTxt(state))


def _journal(state: Path) -> list[dict]:
    path = state / dns01.PENDING_FILE
    return json.loads(path.read_text()) if path.exists() else []


RECORDS = [("_acme-challenge.a.lab.test", "one"), ("_acme-challenge.b.lab.test", "two")]


def test_values_a_dead_run_left_are_removed_by_the_next(tmp_path: Path) -> None:
    publisher = FakePublisher()
    dead = _dns(tmp_path, publisher).published(RECORDS)
    dead.__enter__()  # published and never left: the process died (SIGKILL) in there
    assert len(publisher.zone) == 2 and len(_journal(tmp_path)) == 2

    publisher.down = True  # the next run cannot reach the server: both stay recorded
    assert _dns(tmp_path, publisher).remove_leftovers() == 2
    assert len(_journal(tmp_path)) == 2

    publisher.down = False
    again = _dns(tmp_path, publisher)
    with again.published([("_acme-challenge.c.lab.test", "three")]):
        # the leftovers went first; this run's own value is not a leftover of anyone
        assert publisher.zone == {("_acme-challenge.c.lab.test.", "three")}
        assert [e["value"] for e in _journal(tmp_path)] == ["three"]
        assert again.remove_leftovers() == 0
    assert publisher.zone == set() and _journal(tmp_path) == []


def test_a_failed_add_stays_recorded_and_a_clean_run_leaves_no_record(tmp_path: Path) -> None:
    publisher = FakePublisher()
    with _dns(tmp_path, publisher).published(RECORDS):
        pass
    assert publisher.zone == set() and _journal(tmp_path) == []

    publisher.down = True
    with pytest.raises(DnsError), _dns(tmp_path, publisher).published(RECORDS):
        pass
    assert [e["value"] for e in _journal(tmp_path)] == ["one"]  # it may have landed
    publisher.down = False
    assert _dns(tmp_path, publisher).remove_leftovers() == 0
    assert _journal(tmp_path) == []


def test_an_unreadable_journal_is_an_error_not_a_guess(tmp_path: Path) -> None:
    (tmp_path / dns01.PENDING_FILE).write_text("{not json")
    with pytest.raises(DnsError, match="cannot read pending TXT values"):
        _dns(tmp_path, FakePublisher()).remove_leftovers()


# ---------------------------------------------------------------- stored, never current


def _cfg(state: Path) -> Config:
    return Config(path=state / "certfan.toml", state_dir=state,
                  acme=AcmeConfig("https://127.0.0.1:9/dir"), dns=DnsConfig(),
                  rollout=RolloutPolicy(),
                  certificates={"media": Certificate("media", ("media.lab.test",))})


def _save(store: Store, tmp_path: Path, tag: str, *, order_url: str | None = "https://ca/o/1",
          names: tuple[str, ...] = ("media.lab.test",)) -> Release:
    key, chain = cert_files(tmp_path, tag, days_left=60, names=names)
    return store.save("media", key.read_bytes(), chain.read_bytes(), order_url=order_url,
                      key_type="ec-p256")


def _activated_a_while_ago(store: Store) -> None:
    """File times tick coarsely (a few ms): make the last flip clearly older than what follows."""
    link = store.cert_dir("media") / "current"
    then = os.lstat(link).st_mtime_ns - 10**9
    os.utime(link, ns=(then, then), follow_symlinks=False)


def test_a_version_stored_by_a_run_that_died_becomes_current(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    cfg = _cfg(tmp_path / "state")
    v1 = _save(store, tmp_path, "v1")
    assert store.unactivated("media") == v1  # the very first issuance died before activate
    store.activate(v1)
    assert store.unactivated("media") is None
    _activated_a_while_ago(store)
    v2 = _save(store, tmp_path, "v2")  # ... and the run died here
    assert store.unactivated("media") == v2
    assert order.adopt_unactivated(cfg, store) == [v2]
    assert store.current("media") == v2 and store.unactivated("media") is None


def test_a_version_rolled_away_from_stays_where_the_rollback_put_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    cfg = _cfg(tmp_path / "state")
    v1, v2 = _save(store, tmp_path, "v1"), _save(store, tmp_path, "v2")
    store.activate(v2)
    store.activate(v1)  # `certfan rollback` of the whole fleet
    assert store.unactivated("media") is None
    assert order.adopt_unactivated(cfg, store) == [] and store.current("media") == v1


@pytest.mark.parametrize("why", ["imported", "other names", "expired"])
def test_only_a_fitting_issued_version_is_adopted(tmp_path: Path, why: str) -> None:
    store = Store(tmp_path / "state")
    cfg = _cfg(tmp_path / "state")
    v1 = _save(store, tmp_path, "v1")
    store.activate(v1)
    _activated_a_while_ago(store)
    if why == "imported":
        _save(store, tmp_path, "v2", order_url=None)  # `certfan import` died: not ours to guess
    elif why == "other names":
        _save(store, tmp_path, "v2", names=("other.lab.test",))
    else:
        _save(store, tmp_path, "v2")
    later = datetime(2100, 1, 1, tzinfo=UTC) if why == "expired" else None
    assert order.adopt_unactivated(cfg, store, later) == []
    assert store.current("media") == v1


# ---------------------------------------------------------------- docs/reliability.md stays true

ROOT = Path(__file__).resolve().parents[2]
LAB_FILES = {"R": "test_reliability_rollout.py", "I": "test_reliability_issuance.py",
             "K": "test_reliability_kill.py"}


def test_the_reliability_doc_names_every_lab_case_and_no_other() -> None:
    doc = (ROOT / "docs" / "reliability.md").read_text()
    named = {f"tests/lab/{LAB_FILES[f]}::{case}"
             for f, case in re.findall(r"`([RIK])::(test_\w+(?:\[[^\]`]+\])?)`", doc)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *(f"tests/lab/{name}" for name in LAB_FILES.values())],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"})
    collected = {line for line in done.stdout.splitlines() if "::" in line}
    assert collected, done.stdout + done.stderr
    assert named == collected, (named ^ collected)
    assert f"{len(collected)} fault cases on the lab" in doc


def test_the_reliability_doc_counts_the_bad_input_cases() -> None:
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert f"{len(HOSTILE)} hostile values" in doc
