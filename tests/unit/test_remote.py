"""The remote planner: which steps, in which order, with which argv (no network).

The scripts the plans carry are also run here, with ``sh`` on a temporary
directory standing in for a node's root, so their effect on disk (modes,
atomic flip, certbot conversion) is checked without SSH.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from certfan.config import Host
from certfan.deploy import plan as remote
from certfan.deploy.plan import FileSpec, LiveFacts, PlanError
from certfan.state.store import Release

HOST = Host(
    name="sally",
    address="10.77.3.2",
    root="/srv/le",
    config_test=("nginx", "-t"),
    reload=("systemctl", "reload", "nginx"),
    probe_address="10.77.3.2",
)
VERSION = "0002-1a2b3c4d5e6f"
TARGET = "../archive/media/0002-1a2b3c4d5e6f"


def _release(tmp: Path = Path("/state/media/0002"), names: tuple[str, ...] = ("media.lab.test",)):
    now = datetime.now(UTC)
    return Release(
        cert="media",
        version=VERSION,
        path=tmp,
        sha256="ab" * 32,
        serial="1",
        names=names,
        not_before=now,
        not_after=now,
        issuer="CN=test",
        order_url=None,
        key_type="ec-p256",
    )


def _files(base: Path = Path("/state/media/0002")) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(n, 10, "00" * 32, base / n) for n in remote.RELEASE_FILES)


CERTBOT = LiveFacts(
    root_exists=True,
    live=remote.LIVE_DIR,
    files={
        "privkey.pem": "../../archive/media/privkey3.pem",
        "fullchain.pem": "../../archive/media/fullchain3.pem",
    },
)
OLDER = LiveFacts(
    root_exists=True, live=remote.LIVE_LINK, target="../archive/media/0001-aaaaaaaaaaaa"
)
AT_VERSION = LiveFacts(root_exists=True, live=remote.LIVE_LINK, target=TARGET, version_present=True)
FRESH = LiveFacts(root_exists=True, live=remote.LIVE_MISSING)


@pytest.mark.parametrize(
    ("facts", "steps", "previous", "already"),
    [
        (
            CERTBOT,
            ["convert", "upload", "flip", "test", "reload", "prove"],
            "../archive/media/certbot-3",
            False,
        ),
        (
            OLDER,
            ["upload", "flip", "test", "reload", "prove"],
            "../archive/media/0001-aaaaaaaaaaaa",
            False,
        ),
        # A run that stopped after its flip: nothing to flip, and nothing to flip back to.
        (AT_VERSION, ["upload", "test", "reload", "prove"], None, True),
        (FRESH, ["upload", "flip", "test", "reload", "prove"], None, False),
    ],
    ids=["certbot-layout", "older-version", "pointer-already-there", "fresh-node"],
)
def test_plan_push_steps(facts, steps, previous, already):
    plan = remote.plan_push(HOST, _release(), facts, _files())
    assert [s.name for s in plan.steps] == steps
    assert plan.previous_target == previous
    assert plan.already_live is already
    flips = [s for s in plan.steps if s.name == "flip"]
    for flip in flips:
        assert flip.argv[-3:] == (HOST.root, "media", TARGET)


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (LiveFacts(root_exists=False, live=remote.LIVE_MISSING), "/srv/le does not exist"),
        (LiveFacts(root_exists=True, live=remote.LIVE_OTHER), "neither a symlink nor a directory"),
    ],
)
def test_plan_push_refuses_unknown_states(facts, message):
    with pytest.raises(PlanError, match=message):
        remote.plan_push(HOST, _release(), facts, _files())


@pytest.mark.parametrize(
    ("previous", "reload", "old_sha", "steps", "flip_args"),
    [
        (
            "../archive/media/0001-x",
            False,
            "cd" * 32,
            ["flip"],
            ("media", "../archive/media/0001-x"),
        ),
        (
            "../archive/media/0001-x",
            True,
            "cd" * 32,
            ["flip", "test", "reload", "prove"],
            ("media", "../archive/media/0001-x"),
        ),
        (
            "../archive/media/0001-x",
            True,
            None,
            ["flip", "test", "reload"],
            ("media", "../archive/media/0001-x"),
        ),
        # First deployment to a node: there was no pointer; remove ours, reload nothing.
        (None, True, None, ["flip"], (HOST.root, "media")),
    ],
    ids=["not-reloaded", "reloaded", "reloaded-old-unknown", "no-previous"],
)
def test_plan_rollback(previous, reload, old_sha, steps, flip_args):
    plan = remote.plan_rollback(
        HOST, "media", previous, ("media.lab.test",), old_sha, reload=reload
    )
    assert [s.name for s in plan] == steps
    assert plan[0].argv[-len(flip_args) :] == flip_args
    if "prove" in steps:
        assert plan[-1].expect_sha256 == old_sha
        assert plan[-1].local


def test_test_and_reload_run_the_hosts_argv_verbatim():
    plan = remote.plan_push(HOST, _release(), OLDER, _files())
    by_name = {s.name: s for s in plan.steps}
    assert by_name["test"].argv == ("nginx", "-t")
    assert by_name["reload"].argv == ("systemctl", "reload", "nginx")


@pytest.mark.parametrize(
    ("names", "snis"),
    [
        (("media.lab.test",), ("media.lab.test",)),
        (("lab.test", "*.lab.test"), ("lab.test", "certfan-probe.lab.test")),
        (("*.a.test", "*.a.test", "b.test"), ("certfan-probe.a.test", "b.test")),
    ],
)
def test_prove_asks_for_every_name(names, snis):
    plan = remote.plan_push(HOST, _release(names=names), OLDER, _files())
    prove = plan.steps[-1]
    assert prove.name == "prove" and prove.local
    assert prove.snis == snis
    assert prove.expect_sha256 == "ab" * 32


def test_upload_carries_sizes_and_digests_and_streams_files_in_order():
    files = _files()
    step = remote.plan_upload(HOST, _release(), files)
    assert step.stdin_files == tuple(f.source for f in files)
    assert step.argv[3:7] == ("certfan-upload", HOST.root, "media", VERSION)
    triples = step.argv[7:]
    assert triples == tuple(x for f in files for x in (f.name, str(f.size), f.sha256))
    assert "privkey.pem (0600)" in step.summary


@pytest.mark.parametrize(
    ("files", "name"),
    [
        ({"privkey.pem": "../../archive/media/privkey1.pem"}, "certbot-1"),
        ({"privkey.pem": "../../archive/media/privkey12.pem"}, "certbot-12"),
        ({"privkey.pem": "/etc/ssl/private/media.key"}, "certbot"),
        ({}, "certbot"),
    ],
)
def test_certbot_copy_name(files, name):
    facts = LiveFacts(root_exists=True, live=remote.LIVE_DIR, files=files)
    assert remote.certbot_copy_name(facts) == name


def test_config_values_are_arguments_never_script_text():
    hostile = Host(
        name="h",
        address="192.0.2.1",
        root="/srv/x'; rm -rf / #",
        config_test=("nginx", "-t", "$(reboot)"),
    )
    plan = remote.plan_push(hostile, _release(), CERTBOT, _files())
    for step in plan.steps:
        if step.local:
            continue
        if step.argv[:2] == ("sh", "-c"):
            assert hostile.root not in step.argv[2]
            assert hostile.root in step.argv[3:]
        # What ssh.py sends is shlex.join(argv); the remote shell must get argv back unchanged.
        assert tuple(shlex.split(shlex.join(step.argv))) == step.argv


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        (
            b"root=present\nlive=link\ntarget=../archive/media/0001-aaaaaaaaaaaa\nversion=present\n",
            LiveFacts(True, remote.LIVE_LINK, "../archive/media/0001-aaaaaaaaaaaa", {}, True, b""),
        ),
        (
            b"root=present\nlive=dir\nfile=privkey.pem ../../archive/media/privkey1.pem\n"
            + b"file=cert.pem\nfullchain<<\n-----BEGIN CERTIFICATE-----\nX\n",
            LiveFacts(
                True,
                remote.LIVE_DIR,
                None,
                {"privkey.pem": "../../archive/media/privkey1.pem", "cert.pem": ""},
                False,
                b"-----BEGIN CERTIFICATE-----\nX\n",
            ),
        ),
        (b"root=missing\nlive=missing\n", LiveFacts(False, remote.LIVE_MISSING)),
        (b"root=present\nlive=other\n", LiveFacts(True, remote.LIVE_OTHER)),
        (b"", LiveFacts(False, remote.LIVE_OTHER)),
    ],
    ids=["link", "certbot-dir", "no-root", "other", "empty"],
)
def test_parse_inspect(stdout, expected):
    assert remote.parse_inspect(stdout) == expected


# ---------------------------------------------------------------- the scripts, run locally


def _run(step: remote.Step, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    if stdin is None and step.stdin_files:
        stdin = b"".join(p.read_bytes() for p in step.stdin_files)
    # A wide-open umask must not leak into the key's mode: the scripts set their own.
    return subprocess.run(
        list(step.argv),
        check=False,
        input=stdin or b"",
        capture_output=True,
        timeout=30,
        preexec_fn=lambda: os.umask(0),
    )


def _make_release(tmp_path: Path, tag: str) -> tuple[Release, tuple[FileSpec, ...]]:
    src = tmp_path / f"release-{tag}"
    src.mkdir()
    specs = []
    for name in remote.RELEASE_FILES:
        data = f"{tag} {name}\n".encode() * 3
        (src / name).write_bytes(data)
        specs.append(FileSpec(name, len(data), hashlib.sha256(data).hexdigest(), src / name))
    release = _release(src)
    release = Release(**{**release.__dict__, "version": f"000{tag}-{tag * 12}"})
    return release, tuple(specs)


@pytest.fixture
def node_root(tmp_path: Path) -> tuple[Host, Path]:
    """A certbot-style root: live/media/*.pem -> ../../archive/media/*1.pem."""
    root = tmp_path / "letsencrypt"
    (root / "archive" / "media").mkdir(parents=True)
    (root / "live" / "media").mkdir(parents=True)
    for stem in ("privkey", "fullchain", "cert", "chain"):
        (root / "archive" / "media" / f"{stem}1.pem").write_bytes(f"certbot {stem}\n".encode())
        os.symlink(f"../../archive/media/{stem}1.pem", root / "live" / "media" / f"{stem}.pem")
    return Host(name="local", address="127.0.0.1", root=str(root)), root


def _inspect(host: Host, version: str) -> LiveFacts:
    proc = _run(remote.plan_inspect(host, "media", version))
    assert proc.returncode == 0, proc.stderr
    return remote.parse_inspect(proc.stdout)


def test_scripts_convert_upload_flip_and_flip_back(node_root, tmp_path):
    host, root = node_root
    release, files = _make_release(tmp_path, "2")
    facts = _inspect(host, release.version)
    assert facts.live == remote.LIVE_DIR and facts.fullchain_pem == b"certbot fullchain\n"
    plan = remote.plan_push(host, release, facts, files)
    for step in plan.steps[:3]:  # convert, upload, flip
        proc = _run(step)
        assert proc.returncode == 0, (step.name, proc.stderr)

    live = root / "live" / "media"
    assert os.readlink(live) == remote.version_target("media", release.version)
    assert (live / "privkey.pem").read_bytes() == b"2 privkey.pem\n" * 3
    version_dir = root / "archive" / "media" / release.version
    assert stat.S_IMODE((version_dir / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((version_dir / "fullchain.pem").stat().st_mode) == 0o644
    # certbot's directory is kept aside, and its content copied where rollback can reach it.
    assert (root / "live" / ".media.certbot" / "privkey.pem").read_bytes() == b"certbot privkey\n"
    copy = root / "archive" / "media" / "certbot-1"
    assert stat.S_IMODE((copy / "privkey.pem").stat().st_mode) == 0o600
    assert not [p for p in (root / "archive" / "media").iterdir() if p.name.startswith(".")]

    after = _inspect(host, release.version)
    assert after.live == remote.LIVE_LINK and after.version_present
    for step in remote.plan_rollback(host, "media", plan.previous_target, (), None, reload=False):
        assert _run(step).returncode == 0
    assert (live / "fullchain.pem").read_bytes() == b"certbot fullchain\n"
    assert os.readlink(live) == "../archive/media/certbot-1"


def test_upload_is_idempotent_and_refuses_to_replace_different_content(node_root, tmp_path):
    host, root = node_root
    release, files = _make_release(tmp_path, "3")
    step = remote.plan_upload(host, release, files)
    assert _run(step).returncode == 0
    again = _run(step)
    assert again.returncode == 0 and b"present" in again.stdout
    tampered = root / "archive" / "media" / release.version / "fullchain.pem"
    tampered.write_bytes(b"something else\n")
    refused = _run(step)
    assert refused.returncode != 0 and b"not replacing" in refused.stderr


def test_upload_with_short_stdin_leaves_nothing_behind(node_root, tmp_path):
    host, root = node_root
    release, files = _make_release(tmp_path, "4")
    step = remote.plan_upload(host, release, files)
    payload = b"".join(p.read_bytes() for p in step.stdin_files)
    proc = _run(step, stdin=payload[:-5])
    assert proc.returncode != 0
    assert sorted(p.name for p in (root / "archive" / "media").iterdir()) == [
        "cert1.pem",
        "chain1.pem",
        "fullchain1.pem",
        "privkey1.pem",
    ]


def test_flip_refuses_an_incomplete_target_and_a_directory(node_root, tmp_path):
    host, root = node_root
    missing = _run(remote.plan_flip(host, "media", "../archive/media/0009-nothing"))
    assert missing.returncode != 0 and b"not flipping" in missing.stderr
    # live/media is still certbot's directory: a symlink cannot be renamed over it.
    (root / "archive" / "media" / "v").mkdir()
    for name in ("privkey.pem", "fullchain.pem"):
        (root / "archive" / "media" / "v" / name).write_bytes(b"x")
    onto_dir = _run(remote.plan_flip(host, "media", "../archive/media/v"))
    assert onto_dir.returncode != 0
    assert (root / "live" / "media").is_dir() and not (root / "live" / "media").is_symlink()
