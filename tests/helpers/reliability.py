"""The harness of the fault-injection suite (tests/test_reliability_*.py).

Every case runs the same way:

    case = Case(lab, tmp_path)          # own state dir and config; a baseline of the lab
    case.start()                        # v1 (due for renewal) on every node
    ... certfan under a fault ...       # usually `renew`: issue v2 and roll it out
    heal the fault
    case.heal()                         # `certfan renew` again, then once more (a no-op)
    case.assert_invariants(expected)    # the four invariants of docs/reliability.md

``assert_invariants`` (labstate.py) is the one checker every case uses:

1. every node serves, for every name, a leaf whose public key is that of the
   key file its live pointer points to; ``nginx -t`` passes; the nginx master
   is the one from before the case and never logged a failed reconfiguration
   (a SIGHUP onto a broken config logs ``[emerg] <master pid>#``), and every
   TLS handshake a watcher made during the case succeeded;
2. every node serves the store's current version (the expected one), the
   deploy state says so, and the CA issued exactly the certificates the case
   expects, each of them stored (Pebble logs every issuance; nothing issued is
   lost, nothing is issued twice);
3. the TXT values at every challenge name are those from before the case, and
   certfan's record of pending TXT values is empty;
4. every JSON file of the state dir parses, every stored version is complete
   with a key matching its certificate, and no temporary name is left over,
   locally or on a node.

Faults the lab does not have are beside it, each a context manager that heals:
``refuse_auth`` (sshd stops accepting the key), ``break_reload`` (the reload
command fails while the config test passes), ``hold_upload`` (a node's
``sync`` waits during the upload, so a test can act mid-upload), a slow DNS
server (``SlowDns``) and an ACME proxy that answers some requests with errors
(``AcmeProxy``), in labfaults.py. ``certfan_process`` (childproc.py) runs
``python -m certfan``'s ``main`` in a child that kills (SIGKILL) or pauses
itself at the first log line matching a pattern: the exact step, without racing
a reader of its stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certfan import cli, config
from certfan.state.store import Release, Store
from certfan_lab import Lab
from helpers.childproc import certfan_process, kill, wait_exit
from helpers.labfaults import AcmeProxy, SlowDns, break_reload, cut_off, hold_upload, refuse_auth
from helpers.labstate import (
    CERT,
    FAST_ROLLOUT,
    Baseline,
    Watcher,
    assert_invariants,
    pebble_serials_since,
    txt_snapshot,
)
from helpers.ops import cert_files, import_args

# What the lab test modules take from here (the harness's parts live beside it).
__all__ = [
    "CERT", "AcmeProxy", "Baseline", "Case", "Run", "SlowDns", "Watcher", "assert_invariants",
    "break_reload", "case_maker", "certfan_process", "cut_off", "hold_upload", "kill",
    "pebble_serials_since", "refuse_auth", "txt_snapshot", "wait_exit",
]

# ---------------------------------------------------------------- the case harness


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        assert self.out.lstrip().startswith("{"), (self.out, self.err)
        return json.loads(self.out)


@dataclass
class Case:
    """One fault case: its own state dir and config over the shared lab nodes."""

    lab: Lab
    dir: Path
    rollout: dict[str, object] = field(default_factory=dict)
    dns: dict[str, object] = field(default_factory=dict)
    acme: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state = self.dir / "state"
        self.store = Store(self.state)
        self.nodes = tuple(self.lab.default_node_names)
        # A copy of the TSIG secret the case may spoil and restore.
        self.tsig_secret = self.dir / "tsig.secret"
        shutil.copy2(self.lab.tsig_secret_path, self.tsig_secret)
        self.config_path = self.write()
        self.baseline = Baseline.take(self.lab)
        self.watcher = Watcher(self.lab).start()
        self.issued_before: set[str] = set()
        self.runs: list[Run] = []
        self.children: list[subprocess.Popen[str]] = []

    # -------------------------------------------------------- config and runs

    def write(self) -> Path:
        dns = {"tsig_secret_file": str(self.tsig_secret), **self.dns}
        return self.lab.write_config(
            self.dir / "certfan.toml", self.state,
            rollout={**FAST_ROLLOUT, **self.rollout}, dns=dns, acme=self.acme or None,
            certificates={"wild": None, "static": None},
        )

    @property
    def cfg(self) -> config.Config:
        return config.load(self.config_path)

    def cli(self, *args: str) -> Run:
        """``certfan -c <config> ARGS`` in this process; logging put back afterwards."""
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = cli.main(["-c", str(self.config_path), *args])
        finally:
            root.handlers[:], root.level = handlers, level
        run = Run(code, out.getvalue(), err.getvalue())
        self.runs.append(run)
        return run

    def process(self, *args: str, at: str = r"(?!)", action: str = "none",
                log: Path | None = None) -> subprocess.Popen[str]:
        """``certfan ARGS`` in a child process (see certfan_process); killed at teardown."""
        child = certfan_process(self.config_path, *args, at=at, action=action, log=log)
        self.children.append(child)
        return child

    def versions(self) -> list[str]:
        return [r.version for r in self.store.versions(CERT)]

    def current(self) -> Release:
        release = self.store.current(CERT)
        assert release is not None
        return release

    # -------------------------------------------------------- the steps of a case

    def start(self, days_left: float = 2.0) -> Release:
        """v1, a certbot-era certificate inside its last third (due), on every node."""
        key, chain = cert_files(self.dir, "v1", days_left=days_left, lifetime_days=90)
        run = self.cli(*import_args(CERT, key, chain))
        assert run.code == 0, run
        run = self.cli("push")
        assert run.code == 0, run
        v1 = self.current()
        self.issued_before = set(self.versions())
        return v1

    def heal(self) -> Run:
        """The fault is gone: run certfan again, then once more, which must be a no-op."""
        self.watcher.skip.clear()
        first = self.cli("renew")
        assert first.code == 0, first
        again = self.cli("renew")
        assert again.code == 0 and "nothing due, every host current" in again.out, again
        return first

    def finish(self) -> None:
        """Stop watching and end any child still running (idempotent)."""
        self.watcher.stop()
        for child in self.children:
            kill(child)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.communicate(timeout=10)

    # -------------------------------------------------------- the invariants

    def assert_invariants(self, expected_version: str | None = None, *, issued: int = 1) -> None:
        self.finish()
        assert_invariants(self.lab, self.cfg, self.store, expected_version, self.issued_before,
                          baseline=self.baseline, issued=issued, watcher=self.watcher)


def case_maker(lab: Lab, tmp_path: Path) -> Iterator[Callable[..., Case]]:
    """The ``make_case`` fixture: ``make_case(**overrides)`` -> a Case, whose watcher and
    children end with the test (a module declares it with ``pytest.fixture``)."""
    cases: list[Case] = []

    def make(**overrides: Any) -> Case:
        case = Case(lab, tmp_path, **overrides)
        cases.append(case)
        return case

    yield make
    for case in cases:
        case.finish()
