"""The command line against the lab: --json on every command (each document
checked against docs/cli.md's table), did-you-mean for `--host sallly`, and
Ctrl-C (a real SIGINT to a real certfan process) in the middle of a push."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from certfan.commands import status
from certfan.deploy import probe, ssh
from helpers.clidoc import check_document
from helpers.ops import Ops, cert_files, import_args, restore_logging

SRC = Path(__file__).resolve().parents[2] / "src"

_logging = pytest.fixture(autouse=True)(restore_logging)


@pytest.fixture
def ops(lab, tmp_path: Path) -> Ops:  # type: ignore[no-untyped-def]
    return Ops(lab, tmp_path)


def _json(ops: Ops, capsys, command: str, *args: str) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    code = ops.cli(command, *args, "--json")
    return code, check_document(capsys.readouterr().out, command, code)


def _version_served(ops: Ops, node: str) -> str:
    sha = ops.served(node)
    [version] = [r.version for r in ops.store.versions("media") if r.sha256 == sha]
    return version


def test_every_command_prints_its_documented_json_document_on_the_lab(lab, ops, capsys):  # type: ignore[no-untyped-def]
    key, chain = cert_files(ops.dir, "seed", days_left=60)
    code, doc = _json(ops, capsys, *import_args("media", key, chain))
    assert code == 0 and doc["release"]["version"] == ops.versions()[-1]
    first = doc["release"]["version"]
    code, doc = _json(ops, capsys, "check")
    assert code == 0 and doc["certificates"][0]["name"] == "media"
    code, doc = _json(ops, capsys, "push", "--dry-run")
    assert code == 0 and doc["dry_run"] and {p["host"] for p in doc["plans"]} == set(ops.nodes)
    code, doc = _json(ops, capsys, "push")
    assert code == 0 and {o["host"]: o["serving"] for o in doc["outcomes"]} == dict.fromkeys(
        ops.nodes, first)
    assert doc["interrupted"] is False and doc["finish"] == []
    code, doc = _json(ops, capsys, "status")
    assert code == status.OK and {c["on_disk"] for c in doc["checks"]} == {first}
    code, doc = _json(ops, capsys, "renew")  # nothing due, every host current
    assert code == 0 and doc["rollout"] is None and doc["issued"] == []
    code, doc = _json(ops, capsys, "issue", "media")
    assert code == 0 and [i["error"] for i in doc["issued"]] == [None]
    issued = doc["issued"][0]["release"]["version"]
    code, doc = _json(ops, capsys, "renew")  # the issued version goes out: hosts are behind
    assert code == 0 and doc["rolled_out"] == [{"cert": "media", "version": issued,
                                                "hosts": list(ops.nodes)}]
    code, doc = _json(ops, capsys, "rollback", "--cert", "media", "--host", "sally")
    assert code == 0 and doc["version"] == first and doc["held"] == ["sally"]
    code, doc = _json(ops, capsys, "reissue", "media", "--no-canary")
    assert code == 0 and doc["previous"] == issued and doc["revoked"] is False
    assert {o["serving"] for o in doc["outcomes"]} == {doc["version"]}
    code, doc = _json(ops, capsys, "prune", "--keep", "1", "--dry-run")
    assert code == 0 and doc["dry_run"] and [p["cert"] for p in doc["local"]] == ["media"]
    for node in ops.nodes:
        assert _version_served(ops, node) == doc_version(ops)


def doc_version(ops: Ops) -> str:
    current = ops.store.current("media")
    assert current is not None
    return current.version


def test_did_you_mean_for_a_misspelt_host_on_the_lab(lab, ops, capsys):  # type: ignore[no-untyped-def]
    ops.import_cert(days_left=60)
    capsys.readouterr()
    assert ops.cli("push", "--host", "sallly") == 2
    out, err = capsys.readouterr()
    [line] = err.splitlines()
    assert out == "" and "--host 'sallly': no such host" in line
    assert "did you mean 'sally'?" in line and str(ops.config_path) in line
    assert ops.store.current("media") is not None and all(
        ops.served(node) != ops.store.current("media").sha256 for node in ops.nodes)  # type: ignore[union-attr]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _table(out: str) -> dict[str, dict[str, str]]:
    """The rollout table's rows by host: column name -> cell."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("HOST "))
    names = lines[head].split()
    starts = [lines[head].index(n) for n in names]
    rows = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        if len(cells) != len(names) or cells[0] not in ("cdn-frankfurt-1", "cdn-fremont-1",
                                                         "sally", "esme"):
            break
        rows[cells[0]] = dict(zip(names, cells, strict=True))
    return rows


@pytest.mark.parametrize(("when", "concurrency"), [
    ("deployed", 1),  # the canary is proven; the next host may be in flight, none after it
    ('"step": "upload"', 64),  # the canary is at work, the others staged at the gate
])
def test_ctrl_c_during_a_push_prints_a_table_true_to_what_the_nodes_serve(lab, ops, when,  # type: ignore[no-untyped-def]
                                                                          concurrency):
    """SIGINT to a real push (once the canary is proven, or while it is at work and
    the others wait staged): the hosts in flight finish, no other is started or
    flipped; the table's SERVES column is then checked against a TLS handshake with
    every node, and the printed command finishes the job."""
    ops.write(canary=1, concurrency=concurrency, connect_timeout=5.0)
    old = ops.import_cert(days_left=60)
    assert ops.cli("push") == 0
    new = ops.import_cert(days_left=60)
    slow = [lab.faults.add_latency(node, 150) for node in ops.nodes]
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "certfan", "-c", str(ops.config_path), "push", "-v",
             "--log-format", "json"], env=_env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        seen: list[str] = []
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr],  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        canary = ops.nodes[0]
        give_up = time.monotonic() + 120
        while True:  # until the canary's log record that ``when`` names
            line = lines.get(timeout=max(0.1, give_up - time.monotonic()))
            seen.append(line)
            if f'"host": "{canary}"' in line and when in line:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        reader.join(10)
        while not lines.empty():
            seen.append(lines.get())
    finally:
        for fault in slow:
            fault.heal()
    assert proc.returncode == 130, (out, "".join(seen))
    rows = _table(out)
    assert set(rows) == set(ops.nodes), out
    by_version = {r.version: r.sha256 for r in ops.store.versions("media")}
    for node, row in rows.items():
        assert by_version[row["SERVES"]] == ops.served(node), (node, row)
    results = {node: row["RESULT"] for node, row in rows.items()}
    assert results[canary] == "deployed" and rows[canary]["SERVES"] == new.version
    skipped = [n for n, r in results.items() if r == "skipped: interrupted"]
    assert skipped and all(rows[n]["SERVES"] == old.version for n in skipped), out
    assert "interrupted: no further host was started" in out
    [finish] = [line.strip() for line in out.splitlines() if line.startswith("    certfan ")]
    assert finish.split()[1:4] == ["--config", str(ops.config_path), "push"]
    for node in skipped:
        assert f"--host {node}" in finish
    done = subprocess.run(finish.split(), env={**_env(), "PATH": f"{Path(sys.executable).parent}"
                                               f"{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for node in ops.nodes:
        assert ops.served(node) == new.sha256


def test_status_probes_a_cut_host_and_reads_its_disk_at_once(lab, ops):  # type: ignore[no-untyped-def]
    """The issue's bound, "one cut host costs about one connect timeout", is held
    structurally rather than by the clock (no wall-clock assertions here): the SSH
    connect to the cut host and every TLS probe of its names are in progress at the
    same moment, recorded around the real ssh.connect and probe.served_leaf. Run one
    after another (the old code) no probe would start before the connect gave up."""
    ops.write(connect_timeout=3.0)
    ops.import_cert(days_left=60)
    assert ops.cli("push") == 0
    spans: dict[str, list[tuple[float, float]]] = {}
    guard = threading.Lock()

    def timed(kind: str, func):  # type: ignore[no-untyped-def]
        def run(*args, **kwargs):  # type: ignore[no-untyped-def]
            host = args[0].name if kind == "connect" else str(args[0])
            started = time.monotonic()
            try:
                return func(*args, **kwargs)
            finally:
                with guard:
                    spans.setdefault(f"{kind} {host}", []).append((started, time.monotonic()))
        return run

    cfg = ops.cfg
    esme = cfg.hosts["esme"]
    with lab.faults.cut("esme"):
        report = status.collect(cfg, ops.store, connect=timed("connect", ssh.connect),
                                prober=timed("probe", probe.served_leaf))
    [cut] = [c for c in report.checks if c.host == "esme"]
    assert cut.state == status.UNKNOWN and cut.disk_error and all(s.error for s in cut.served)
    mine = spans[f"connect {esme.name}"] + spans[f"probe {esme.probe}"]
    assert len(mine) == 1 + len(cut.served) >= 2
    assert max(s for s, _ in mine) < min(e for _, e in mine), mine  # all at once
    assert {c.state for c in report.checks if c.host != "esme"} == {status.OK}
