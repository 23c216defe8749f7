"""Lab helpers for rollout tests: releases signed by a test CA, what nodes serve,
nginx's processes, a watcher of every handshake during a rollout, and a certfan
config for the lab with its own state directory (``LabPush``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Self

from cryptography.hazmat.primitives import serialization

from certfan import config
from certfan.cli import app as cli
from certfan.deploy import fleet as rollout
from certfan.state.deploy import DeployState
from certfan.state.store import Release, Store
from certfan_lab import pki
from helpers import labstate

_CA = pki.new_ca("rollout test CA")


def make_release(store: Store, names: Sequence[str] = ("media.lab.test", "*.lab.test"),
                 days: float = 30.0) -> Release:
    """A new current version of "media", signed by a local CA."""
    ca_key, ca = _CA
    key, leaf = pki.issue(ca_key, ca, names, timedelta(days=days))
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    release = store.save(
        "media",
        key_pem,
        leaf.public_bytes(pem) + ca.public_bytes(pem),
        order_url=None,
        key_type="ec-p256",
    )
    store.activate(release)
    return release


ALL_SNIS = ("media.lab.test", "certfan-probe.lab.test", "static.lab.test")


def sha_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def served(lab, node: str, sni: str = "media.lab.test") -> str:  # type: ignore[no-untyped-def]
    return sha_of(lab.served_leaf(node, sni))


def workers(master: int) -> set[int]:
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.add(int(entry))
    return children


def nginx_pids(lab, node: str) -> tuple[int, frozenset[int]]:  # type: ignore[no-untyped-def]
    master = lab.nginx_master_pid(node)
    return master, frozenset(workers(master))


def wait_served(lab, node: str, sha: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Until the node serves ``sha`` and the workers of any earlier reload are gone."""
    deadline = time.monotonic() + timeout
    while served(lab, node) != sha or len(nginx_pids(lab, node)[1]) > 1:  # worker_processes 1
        assert time.monotonic() < deadline, f"{node} does not settle on {sha[:12]}"
        time.sleep(0.05)


def restore_certbot(lab) -> None:  # type: ignore[no-untyped-def]
    """Put every node back on certbot's layout serving the seed certificate."""
    script = """
set -e
cd "$1"
if [ -d live/.media.certbot ]; then
  rm -f live/media && mv -T live/.media.certbot live/media
fi
rm -rf archive/media/certbot-* live/.media.tmp
"""
    for node in lab.default_node_names:
        root = str(lab.node(node).root)
        proc = lab.run_on(node, ["sh", "-c", script, "restore", root])
        assert proc.returncode == 0, proc.stderr
        if served(lab, node) != lab.seed_sha256:
            assert lab.run_on(node, ["systemctl", "reload", "nginx"]).returncode == 0
        wait_served(lab, node, lab.seed_sha256)


class Watcher(labstate.Watcher):
    """Probe every node over and over during a rollout: every handshake must succeed
    (the server proved it holds the key of the leaf it sent) with an expected leaf.
    A context manager that asserts so when the block ends."""

    def __init__(self, lab, allowed: set[str], skip: set[str] | None = None):  # type: ignore[no-untyped-def]
        super().__init__(lab, skip, allowed=allowed, interval=0.01)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        assert self.count > 0
        assert not self.problems, self.problems[:5]


def lab_push_for(lab: Any, tmp_path: Path) -> Any:
    """A certfan config for the lab with its own state dir, and helpers around it."""

    class LabPush:
        state = tmp_path / "state"
        store = Store(tmp_path / "state")
        nodes = tuple(lab.default_node_names)

        def __init__(self) -> None:
            self.config_path = self.write()

        def write(self, **rollout_overrides: object) -> Path:
            policy = {"connect_timeout": 2.0, "command_timeout": 5.0, "verify_timeout": 5.0}
            policy.update(rollout_overrides)
            return lab.write_config(tmp_path / "certfan.toml", self.state, rollout=policy)

        @property
        def cfg(self) -> config.Config:
            return config.load(self.config_path)

        def release(self, days: float = 30.0,
                    names: Sequence[str] = ("media.lab.test", "*.lab.test")) -> Release:
            return make_release(self.store, names, days=days)

        def cli(self, *args: str, command: str = "push") -> int:
            root = logging.getLogger()
            handlers, level = root.handlers[:], root.level
            try:
                return cli.main(["-c", str(self.config_path), command, *args])
            finally:  # main() points logging at this test's captured stderr; undo that
                root.handlers[:], root.level = handlers, level

        def push(self, **kw: object) -> rollout.Report:
            cfg = self.cfg
            targets = rollout.select_targets(cfg, self.store)
            return rollout.push(targets, cfg.rollout, deploy_state=DeployState(self.state), **kw)

        def converge(self) -> Release:
            """Every node on a fresh release (the starting point of most tests)."""
            release = self.release()
            report = self.push()
            assert report.ok, report
            for node in self.nodes:
                wait_served(lab, node, release.sha256)
            return release

    return LabPush()


def json_report(capsys) -> dict:  # type: ignore[no-untyped-def]
    captured = capsys.readouterr()
    assert captured.out.startswith("{"), captured.err
    return json.loads(captured.out)


