"""Reporting commands load no CA or DNS code: ``certfan status`` (and check,
completion, and push and rollback, which need no CA either) run in a fresh
interpreter, which then lists what it imported. The hosts are loopback ports
nothing listens on, so status goes through its whole path (SSH connect, TLS
probes, judging, rendering). A ``renew`` with nothing to do (nothing due,
every host current) loads no CA, DNS, SSH or X.509 code either."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certfan import config as config_mod
from certfan.issue.acmestate import CaState
from certfan.issue.due import RENEWAL_STATE, RenewalState
from certfan.state.deploy import DeployState
from certfan.state.store import Store
from helpers.cliconf import write_config
from helpers.ops import cert_files

SRC = Path(__file__).resolve().parents[2] / "src"
FORBIDDEN = ("acme", "josepy", "dns", "requests")
LIGHT_STATE = {"certfan.state", "certfan.state.revocations", "certfan.state.fsutil"}

CHILD = """
import json, sys
from certfan.cli import app
code = app.main(sys.argv[1:])
loaded = sorted(sys.modules)
print(json.dumps({"code": code, "loaded": loaded}), file=sys.stderr)
"""


def _loaded(*argv: str) -> tuple[int, set[str]]:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True,
                          timeout=60, check=False, env=env)
    doc = json.loads(done.stderr.strip().splitlines()[-1])
    return doc["code"], set(doc["loaded"])


@pytest.mark.parametrize("argv", [
    ("status", "--json"),
    ("status", "--host", "sally"),
    ("check",),
    ("check", "--syntax-only"),
    ("completion", "bash"),
    ("push",),  # nothing stored: ends early, but after importing the push path
    ("rollback", "--cert", "media"),
])
def test_reporting_commands_import_no_ca_or_dns_code(tmp_path: Path, argv: tuple[str, ...]) -> None:
    config = write_config(tmp_path)
    code, loaded = _loaded("-c", str(config), *argv)
    assert code in (0, 1, 2, 3)  # status: the hosts refuse (UNKNOWN); check: files missing
    if argv[0] == "status":  # the whole path ran: collected, probed, judged, rendered
        assert {"certfan.commands.status", "certfan.deploy.probe", "certfan.cli.render"} <= loaded
    heavy = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not heavy, heavy


def test_the_check_is_real_renew_does_load_them(tmp_path: Path) -> None:
    """The same probe sees the CA code when a command does need it."""
    config = write_config(tmp_path)
    _, loaded = _loaded("-c", str(config), "renew")
    assert {"acme", "josepy", "dns", "certfan.issue.acme"} <= loaded


def _nothing_to_do(tmp_path: Path, *, ari: bool) -> Path:
    """A config whose one certificate is stored, current, not due, and served by both hosts."""
    path = write_config(tmp_path)
    cfg = config_mod.load(path)
    key, chain = cert_files(tmp_path, "media", days_left=80, names=("media.example",))
    store = Store(cfg.state_dir)
    release = store.save("media", key.read_bytes(), chain.read_bytes(), order_url=None,
                         key_type="ec-p256", names=("media.example",))
    store.activate(release)
    for host in cfg.certificates["media"].hosts:
        DeployState(cfg.state_dir).record("media", host, deployed=release.version)
    # The directory cache a run that reached the CA leaves: whether it offers ARI.
    CaState(cfg.state_dir, cfg.acme.directory).remember_ari(
        "https://127.0.0.1:9/renewal-info" if ari else None)
    if ari:  # a window remembered from that run, not to be asked about again yet
        now = datetime.now(UTC)
        state = RenewalState(release.version, now + timedelta(days=50), now + timedelta(days=52),
                             now + timedelta(days=51), now + timedelta(hours=5))
        (store.cert_dir("media") / RENEWAL_STATE).write_text(json.dumps(state.to_json()))
    return path


@pytest.mark.parametrize("ari", [False, True], ids=["lifetime", "ari-remembered"])
def test_a_renew_with_nothing_to_do_imports_no_ca_dns_ssh_or_x509_code(
        tmp_path: Path, ari: bool) -> None:
    """What the timer runs most: the due check and the catch-up read local files only, and
    import only what reads them (the store's meta.json holds the dates: no X.509 parsing)."""
    config = _nothing_to_do(tmp_path, ari=ari)
    code, loaded = _loaded("-c", str(config), "renew")
    assert code == 0
    assert {"certfan.commands.renew", "certfan.issue.due", "certfan.state.store",
            "certfan.state.deploy"} <= loaded  # the whole no-op path ran
    heavy = sorted(m for m in loaded if m.split(".")[0] in (*FORBIDDEN, "paramiko", "cryptography")
                   or m in ("certfan.issue.order", "certfan.issue.acme", "certfan.issue.crypto",
                            "certfan.issue.dns01", "certfan.deploy.fleet", "certfan.deploy.ssh"))
    assert not heavy, heavy


def test_the_no_op_check_is_real_a_host_behind_loads_the_rollout(tmp_path: Path) -> None:
    """The same state with one host not recorded as serving the version: renew rolls out
    (to a port nothing listens on), and the rollout code is loaded."""
    config = _nothing_to_do(tmp_path, ari=False)
    DeployState(tmp_path / "state").record("media", "esme", deployed=None, error="missed")
    code, loaded = _loaded("-c", str(config), "renew")
    assert code != 0  # esme refuses the connection
    assert {"certfan.deploy.fleet", "certfan.deploy.ssh"} <= loaded


def test_building_the_parser_loads_no_command_code() -> None:
    """`certfan --help` and completion stay light: the handlers import what they use."""
    code = ("import json, sys; from certfan.cli import app; app.build_parser(); "
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True, env={"PYTHONPATH": str(SRC),
                                                       "PATH": "/usr/bin:/bin"})
    loaded = set(json.loads(done.stdout))
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("cryptography", "paramiko", *FORBIDDEN)
                   or m.startswith(("certfan.deploy", "certfan.commands", "certfan.issue"))
                   or m.startswith("certfan.state") and m not in LIGHT_STATE)
    assert not heavy, heavy
