"""The remote plan and the one script it runs (no network).

The plans are tables: facts in, steps out. The DEPLOY script is run here with
``sh`` on a temporary directory standing in for a node's root, so its effect
on disk (modes, atomic flip, certbot conversion, flip back) and the steps it
reports are checked against the plan without SSH.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certfan.config import Host
from certfan.deploy import plan as remote
from certfan.deploy.plan import FileSpec, LiveFacts, PlanError
from certfan.state.store import Release

HOST = Host(name="sally", address="10.77.3.2", root="/srv/le", config_test=("nginx", "-t"),
            reload=("systemctl", "reload", "nginx"), probe_address="10.77.3.2")
VERSION = "0002-1a2b3c4d5e6f"
TARGET = "../archive/media/0002-1a2b3c4d5e6f"


def _release(path: Path = Path("/state/media/0002"),
             names: tuple[str, ...] = ("media.lab.test",)) -> Release:
    now = datetime.now(UTC)
    return Release(cert="media", version=VERSION, path=path, sha256="ab" * 32, serial="1",
                   names=names, not_before=now, not_after=now, issuer="CN=test", order_url=None,
                   key_type="ec-p256")


def _files(base: Path = Path("/state/media/0002")) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(n, 10, "00" * 32, base / n) for n in remote.RELEASE_FILES)


CERTBOT = LiveFacts(root_exists=True, live=remote.LIVE_DIR,
                    files={"privkey.pem": "../../archive/media/privkey3.pem"})
OLDER = LiveFacts(root_exists=True, live=remote.LIVE_LINK,
                  target="../archive/media/0001-aaaaaaaaaaaa")
AT_VERSION = LiveFacts(root_exists=True, live=remote.LIVE_LINK, target=TARGET,
                       version_present=True)
FRESH = LiveFacts(root_exists=True, live=remote.LIVE_MISSING)
PUSH = ["upload", "flip", "test", "reload", "settle", "prove"]


@pytest.mark.parametrize(("facts", "steps"), [
    (CERTBOT, ["convert", *PUSH]),
    (OLDER, PUSH),
    (AT_VERSION, ["upload", "test", "reload", "settle", "prove"]),  # stopped after its flip
    (FRESH, PUSH),
], ids=["certbot-layout", "older-version", "pointer-already-there", "fresh-node"])
def test_plan_push_steps(facts: LiveFacts, steps: list[str]) -> None:
    planned = remote.plan_push(HOST, _release(), facts, _files())
    assert [s.name for s in planned] == steps
    assert planned[-1].name == "prove" and "media.lab.test" in planned[-1].summary
    test, reload = (s for s in planned if s.name in ("test", "reload"))
    assert test.argv == ("nginx", "-t") and reload.argv == ("systemctl", "reload", "nginx")


@pytest.mark.parametrize(("facts", "message"), [
    (LiveFacts(root_exists=False, live=remote.LIVE_MISSING), "/srv/le does not exist on sally"),
    (LiveFacts(root_exists=True, live=remote.LIVE_OTHER), "neither a symlink nor a directory"),
])
def test_plan_push_refuses_unknown_states(facts: LiveFacts, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        remote.plan_push(HOST, _release(), facts, _files())


@pytest.mark.parametrize(("names", "snis"), [
    (("media.lab.test",), ("media.lab.test",)),
    (("*.lab.test", "lab.test"), ("certfan-probe.lab.test", "lab.test")),
    (("a.test", "a.test"), ("a.test",)),
])
def test_prove_asks_for_every_name(names: tuple[str, ...], snis: tuple[str, ...]) -> None:
    assert remote.probe_snis(names) == snis


def test_config_values_are_arguments_never_script_text() -> None:
    odd = Host(name="odd", address="10.0.0.1", root="/srv/$(touch pwned); x",
               config_test=("nginx", "-t", "-c", "/etc/a b;c"), reload=("kill", "-HUP", "`id`"))
    argv = remote.deploy_argv(odd, _release(), _files(), remote.PUSH)
    assert argv[:2] == ("sh", "-c") and "pwned" not in argv[2] and "`id`" not in argv[2]
    assert odd.root in argv and "/etc/a b;c" in argv and "`id`" in argv
    # The host's commands travel as counted lists: 4 words of test, 3 of reload.
    assert argv[-9:] == ("4", "nginx", "-t", "-c", "/etc/a b;c", "3", "kill", "-HUP", "`id`")


@pytest.mark.parametrize(("stdout", "facts"), [
    (b"root=present\nlive=missing\n", FRESH),
    (b"root=present\nlive=link\ntarget=../archive/media/0001-aaaaaaaaaaaa\n", OLDER),
    (b"root=present\nlive=dir\nfile=privkey.pem ../../archive/media/privkey3.pem\n", CERTBOT),
    (b"root=missing\nlive=missing\n", LiveFacts(root_exists=False, live=remote.LIVE_MISSING)),
])
def test_parse_report_facts(stdout: bytes, facts: LiveFacts) -> None:
    assert remote.parse_report(stdout).facts == facts


def test_parse_report_steps_and_the_old_fullchain() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nZGVyIG9mIG9sZA==\n-----END CERTIFICATE-----\n"
    out = (b"root=present\nlive=link\ntarget=../archive/media/0001-a\nold<<\n" + pem
           + b"\nold>>\nupload=ok\nprevious=../archive/media/0001-a\nflip=ok\ntest=failed\n"
           b"undo=ok\nfailed=test\n")
    report = remote.parse_report(out)
    assert report.facts.fullchain_pem == pem
    assert report.facts.leaf_sha256 == hashlib.sha256(b"der of old").hexdigest()
    assert report.previous == "../archive/media/0001-a" and report.failed == "test"
    assert report.flipped and report.undo_ok is True and not report.reloaded and not report.done


# ---------------------------------------------------------------- the script, run locally


def _pem(text: str) -> bytes:
    import base64

    return (b"-----BEGIN CERTIFICATE-----\n" + base64.b64encode(text.encode())
            + b"\n-----END CERTIFICATE-----\n")


def _local_release(tmp: Path, version: str = VERSION) -> tuple[Release, tuple[FileSpec, ...],
                                                               bytes]:
    directory = tmp / "store" / version
    directory.mkdir(parents=True)
    body = {"privkey.pem": b"KEY " + version.encode() + b"\n", "fullchain.pem": _pem(version),
            "cert.pem": _pem(version), "chain.pem": b""}
    for name, data in body.items():
        (directory / name).write_bytes(data)
    release = _release(directory)
    release = Release(**{**release.__dict__, "version": version})
    specs = remote.release_specs(release, body)
    return release, specs, b"".join(body[n] for n in remote.RELEASE_FILES)


def _host(root: Path, test: str = "true", reload: str = "true") -> Host:
    return Host(name="local", address="127.0.0.1", root=str(root), config_test=("sh", "-c", test),
                reload=("sh", "-c", reload), probe_port=1)


def _run(host: Host, release: Release, specs: tuple[FileSpec, ...], phases: str,
         stdin: bytes = b"", back: str = "-") -> tuple[remote.RemoteReport, int, str]:
    argv = remote.deploy_argv(host, release, specs, phases, back=back, settle_for=1)
    proc = subprocess.run(argv, input=stdin, capture_output=True, timeout=30, check=False)
    return remote.parse_report(proc.stdout), proc.returncode, proc.stderr.decode()


@pytest.fixture
def node_root(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    (root / "live").mkdir(parents=True)
    return root


def _certbot(root: Path) -> None:
    archive = root / "archive-le" / "media"
    archive.mkdir(parents=True)
    (archive / "privkey3.pem").write_bytes(b"certbot key\n")
    (archive / "fullchain3.pem").write_bytes(_pem("certbot"))
    live = root / "live" / "media"
    live.mkdir()
    for name in ("privkey", "fullchain"):
        (live / f"{name}.pem").symlink_to(archive / f"{name}3.pem")


def test_script_converts_certbot_uploads_and_flips_as_planned(node_root: Path,
                                                              tmp_path: Path) -> None:
    _certbot(node_root)
    release, specs, stdin = _local_release(tmp_path)
    host = _host(node_root)
    report, code, err = _run(host, release, specs, remote.PUSH, stdin)
    assert code == 0 and report.done, err
    planned = [s.name for s in remote.plan_push(host, release, report.facts, specs)]
    assert [s for s in planned if s in report.marks] == [s for s in planned if s != "prove"]
    assert report.previous == "../archive/media/certbot-3"
    assert os.readlink(node_root / "live" / "media") == f"../archive/media/{VERSION}"
    key = node_root / "archive" / "media" / VERSION / "privkey.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_bytes().startswith(b"KEY")
    copy = node_root / "archive" / "media" / "certbot-3"
    assert (copy / "privkey.pem").read_bytes() == b"certbot key\n"
    assert stat.S_IMODE((copy / "privkey.pem").stat().st_mode) == 0o600
    assert (node_root / "live" / ".media.certbot").is_dir()
    assert report.facts.leaf_sha256 == hashlib.sha256(b"certbot").hexdigest()


@pytest.mark.parametrize(("test", "reload", "failed", "reloaded"), [
    ("exit 1", "true", "test", False),
    ("true", "echo no nginx >&2; exit 1", "reload", True),
])
def test_script_flips_back_on_a_failed_test_or_reload(node_root: Path, tmp_path: Path, test: str,
                                                      reload: str, failed: str,
                                                      reloaded: bool) -> None:
    old, old_specs, old_stdin = _local_release(tmp_path / "a", "0001-aaaaaaaaaaaa")
    assert _run(_host(node_root), old, old_specs, remote.PUSH, old_stdin)[1] == 0
    new, specs, stdin = _local_release(tmp_path / "b")
    report, code, err = _run(_host(node_root, test, reload), new, specs, remote.PUSH, stdin)
    assert code == 3 and report.failed == failed and report.flipped
    assert report.reloaded is reloaded
    assert os.readlink(node_root / "live" / "media") == "../archive/media/0001-aaaaaaaaaaaa"
    # Flipping back also reloads after a failed reload, which fails the same way here.
    assert report.undo_ok is (failed == "test")


def test_script_upload_is_idempotent_and_refuses_other_content(node_root: Path,
                                                               tmp_path: Path) -> None:
    release, specs, stdin = _local_release(tmp_path)
    host = _host(node_root)
    assert _run(host, release, specs, remote.STAGE, stdin)[0].marks["upload"] == "ok"
    assert _run(host, release, specs, remote.STAGE, stdin)[0].marks["upload"] == "present"
    assert not (node_root / "live" / "media").exists()  # staging changes nothing live
    other = tuple(FileSpec(s.name, s.size, "11" * 32, s.source) for s in specs)
    report, code, err = _run(host, release, other, remote.STAGE, stdin)
    assert code == 3 and report.failed == "upload" and "other content" in err


def test_script_upload_with_short_stdin_leaves_nothing_behind(node_root: Path,
                                                              tmp_path: Path) -> None:
    release, specs, stdin = _local_release(tmp_path)
    report, code, _ = _run(_host(node_root), release, specs, remote.STAGE, stdin[:-5])
    assert code != 0 and report.failed == "upload"
    archive = node_root / "archive" / "media"
    assert [p.name for p in archive.iterdir()] == []


def test_script_refuses_to_flip_to_an_incomplete_version(node_root: Path, tmp_path: Path) -> None:
    release, specs, _ = _local_release(tmp_path)
    (node_root / "archive" / "media" / VERSION).mkdir(parents=True)
    report, code, err = _run(_host(node_root), release, specs, remote.APPLY)
    assert code == 3 and report.failed == "flip" and "missing or empty" in err
    assert not (node_root / "live" / "media").exists()


def test_script_rollback_and_refresh(node_root: Path, tmp_path: Path) -> None:
    old, old_specs, old_stdin = _local_release(tmp_path / "a", "0001-aaaaaaaaaaaa")
    new, specs, stdin = _local_release(tmp_path / "b")
    host = _host(node_root)
    assert _run(host, old, old_specs, remote.PUSH, old_stdin)[1] == 0
    assert _run(host, new, specs, remote.PUSH, stdin)[1] == 0
    again, code, _ = _run(host, new, specs, remote.APPLY)  # already live: nothing to do
    assert code == 0 and again.marks == {"flip": "already"}
    refresh, code, _ = _run(host, new, specs, remote.APPLY, back=remote.REFRESH)
    assert code == 0 and refresh.marks["test"] == refresh.marks["reload"] == "ok"
    previous = "../archive/media/0001-aaaaaaaaaaaa"
    back, code, _ = _run(host, new, specs, remote.ROLLBACK, back=previous)
    assert code == 0 and back.undo_ok is True
    assert os.readlink(node_root / "live" / "media") == "../archive/media/0001-aaaaaaaaaaaa"
    gone, code, _ = _run(host, new, specs, remote.ROLLBACK, back="-")  # a first deployment
    assert code == 0 and not (node_root / "live" / "media").is_symlink()
