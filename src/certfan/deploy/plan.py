"""Plans of remote work, as data: decide here; hostrun.py acts, prune.py lists and deletes.

Nothing in this module touches the network or the disk. Each function takes
what is known (the host, the release, what the host reported) and returns
argv tuples for the fixed scripts in scripts.py, :class:`Step` values for
``--dry-run``, or the parsed report of a script run.

Remote layout under ``host.root`` (nginx reads ``live/<cert>/fullchain.pem``
and ``live/<cert>/privkey.pem``)::

    archive/<cert>/<version>/      one directory per version, never modified
        privkey.pem                0600 from creation (umask 077)
        fullchain.pem cert.pem chain.pem
    archive/<cert>/certbot-<n>/    a copy of what certbot's live dir pointed to
    live/<cert> -> ../archive/<cert>/<version>     the one pointer, flipped by rename
    live/.<cert>.certbot/          certbot's old live directory, kept aside
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from certfan.config import Host
from certfan.deploy import scripts
from certfan.deploy.model import Step
from certfan.deploy.probe import sha256_hex, sni_for

if TYPE_CHECKING:
    from certfan.state.store import Release

# Upload order matters: the script reads the files from stdin in this order.
RELEASE_FILES = ("privkey.pem", "fullchain.pem", "cert.pem", "chain.pem")
KEY_FILE = "privkey.pem"

LIVE_LINK = "link"  # live/<cert> is a symlink (our layout)
LIVE_DIR = "dir"  # live/<cert> is a directory (certbot's layout)
LIVE_MISSING = "missing"
LIVE_OTHER = "other"

# Phases of one DEPLOY exec (see scripts.py).
INSPECT, STAGE, APPLY, PUSH, ROLLBACK = "inspect", "stage", "apply", "stage,apply", "rollback"
HELD = "stage,hold,apply"  # staged, then apply once the controller says go
HELD_MARK = b"held=yes\n"
REFRESH = "refresh"  # apply's ``back`` when the pointer is right but the leaf is not served


@dataclass(frozen=True)
class FileSpec:
    """A release file to upload: what the remote side checks after writing it."""

    name: str
    size: int
    sha256: str
    source: Path


@dataclass(frozen=True)
class LiveFacts:
    """What the script found on a host for one certificate, before changing anything."""

    root_exists: bool
    live: str  # LIVE_LINK / LIVE_DIR / LIVE_MISSING / LIVE_OTHER
    target: str | None = None  # symlink target when live is a link
    files: dict[str, str] = field(default_factory=dict)  # certbot dir: file -> link target
    version_present: bool = False
    fullchain_pem: bytes = b""  # what live/<cert>/fullchain.pem held

    @property
    def leaf_sha256(self) -> str | None:
        return leaf_sha256_from_pem(self.fullchain_pem)


@dataclass(frozen=True)
class RemoteReport:
    """What one DEPLOY exec reported: the facts, then each step it took."""

    facts: LiveFacts
    marks: dict[str, str]  # upload, convert, flip, test, reload, settle, undo -> what it said
    previous: str | None  # the pointer target apply started from ("" when there was none)
    failed: str | None  # the step that failed, when the script stopped on one
    done: bool  # the script reached its end (not cut off)

    @property
    def flipped(self) -> bool:
        return self.marks.get("flip") == "ok"

    @property
    def reloaded(self) -> bool:
        """The reload ran (or may have run: a test passed and the report stops after it)."""
        return "reload" in self.marks or (self.marks.get("test") == "ok" and not self.done)

    @property
    def undo_ok(self) -> bool | None:
        """None: nothing was undone; else whether flipping back (and reloading) worked."""
        said = self.marks.get("undo")
        return None if said is None else said == "ok"


def version_target(cert: str, version: str) -> str:
    """The live pointer's target for ``version``, relative to ``live/``."""
    return f"../archive/{cert}/{version}"


def probe_snis(names: Sequence[str]) -> tuple[str, ...]:
    """One SNI per certificate name (wildcards get a concrete label), in order."""
    return tuple(dict.fromkeys(sni_for(n) for n in names))


def leaf_sha256_from_pem(pem: bytes) -> str | None:
    """SHA-256 of the DER of the first certificate in a PEM bundle (None: there is none)."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        return None
    import ssl  # not on the start-up path of a run that deploys nothing

    try:
        der = ssl.PEM_cert_to_DER_cert(pem[start : stop + len(end)].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return None
    return sha256_hex(der)


def release_specs(release: Release, contents: dict[str, bytes]) -> tuple[FileSpec, ...]:
    """Sizes and digests of the release's files (the remote side checks them)."""
    import hashlib

    return tuple(
        FileSpec(name, len(contents[name]), hashlib.sha256(contents[name]).hexdigest(),
                 release.file(name))
        for name in RELEASE_FILES
    )


def deploy_argv(
    host: Host,
    release: Release,
    files: Sequence[FileSpec],
    phases: str,
    *,
    back: str = "-",
    settle_for: float = 10.0,
) -> tuple[str, ...]:
    """argv of one DEPLOY exec: phases of scripts.DEPLOY with the host's own commands."""
    args = [host.root, release.cert, release.version, str(host.probe_port), phases, back]
    args.append(str(math.ceil(settle_for)))  # 0: do not settle
    args.append(str(len(files)))
    for spec in files:
        args += [spec.name, str(spec.size), spec.sha256]
    args += [str(len(host.config_test)), *host.config_test]
    args += [str(len(host.reload)), *host.reload]
    return ("sh", "-c", scripts.DEPLOY.strip() + "\n", f"certfan-{phases}", *args)


def plan_inspect(host: Host, cert: str, version: str) -> Step:
    """A read-only look at live/<cert> (status): scripts.DEPLOY's inspect phase."""
    args = (host.root, cert, version, str(host.probe_port), INSPECT, "-", "1", "0", "0", "0")
    return Step("inspect", f"read {host.root}/live/{cert} and look for archive/{cert}/{version}",
                ("sh", "-c", scripts.DEPLOY.strip() + "\n", "certfan-inspect", *args))


def parse_inspect(stdout: bytes) -> LiveFacts:
    return parse_report(stdout).facts


def parse_report(stdout: bytes) -> RemoteReport:
    """Read what scripts.DEPLOY printed: facts, the old fullchain, then step marks."""
    head, sep, rest = stdout.partition(b"old<<\n")
    pem = b""
    if sep:
        pem, _, tail = rest.partition(b"\nold>>\n")
        head += tail
    root_exists, live, target, present = False, LIVE_OTHER, None, False
    files: dict[str, str] = {}
    marks: dict[str, str] = {}
    previous: str | None = None
    failed: str | None = None
    done = False
    for raw in head.decode("utf-8", "replace").splitlines():
        key, _, value = raw.partition("=")
        if key == "root":
            root_exists = value == "present"
        elif key == "live" and value in (LIVE_LINK, LIVE_DIR, LIVE_MISSING, LIVE_OTHER):
            live = value
        elif key == "target":
            target = value
        elif key == "file":
            name, _, link = value.partition(" ")
            files[name] = link
        elif key == "version":
            present = value == "present"
        elif key == "previous":
            previous = "" if value == "-" else value
        elif key == "failed":
            failed = value
        elif key == "done":
            done = True
        elif key in ("upload", "convert", "flip", "test", "reload", "settle", "undo", "verdict"):
            marks[key] = value
    facts = LiveFacts(root_exists, live, target if live == LIVE_LINK else None, files, present,
                      pem.strip() + b"\n" if pem.strip() else b"")
    return RemoteReport(facts, marks, previous, failed, done)


# ---------------------------------------------------------------- what a push does (pure)

_CERTBOT_NUMBER = re.compile(r"privkey(\d+)\.pem$")


def certbot_copy_name(facts: LiveFacts) -> str:
    """``certbot-<n>`` after the number of the privkey certbot's live dir points to."""
    match = _CERTBOT_NUMBER.search(facts.files.get(KEY_FILE, ""))
    return f"certbot-{match.group(1)}" if match else "certbot"


class PlanError(ValueError):
    """The host is in a state no plan can safely start from."""


def plan_push(
    host: Host, release: Release, facts: LiveFacts, files: Sequence[FileSpec]
) -> tuple[Step, ...]:
    """The steps scripts.DEPLOY takes from ``facts``: [convert] upload [flip] test reload
    settle prove. No flip when the pointer is already at the version (a run that stopped
    after its flip); then there is nothing to flip back to either."""
    cert = release.cert
    if not facts.root_exists:
        raise PlanError(f"{host.root} does not exist on {host.name}")
    if facts.live == LIVE_OTHER:
        raise PlanError(f"{host.root}/live/{cert} is neither a symlink nor a directory")
    target = version_target(cert, release.version)
    steps: list[Step] = []
    if facts.live == LIVE_DIR:
        name = certbot_copy_name(facts)
        steps.append(Step("convert", f"certbot layout: copy {host.root}/live/{cert}/* to "
                          f"archive/{cert}/{name}/, keep the directory as live/.{cert}.certbot, "
                          f"link live/{cert} -> {version_target(cert, name)}"))
    names = ", ".join(f"{f.name} (0600)" if f.name == KEY_FILE else f.name for f in files)
    size = sum(f.size for f in files)
    steps.append(Step("upload", f"{names} ({size} bytes) to {host.root}/archive/{cert}/"
                      f"{release.version}/", stdin_files=tuple(f.source for f in files)))
    if not (facts.live == LIVE_LINK and facts.target == target):
        steps.append(Step("flip", f"{host.root}/live/{cert} -> {target}"))
    steps += [
        Step("test", _cmd(host.config_test), tuple(host.config_test)),
        Step("reload", _cmd(host.reload), tuple(host.reload)),
        Step("settle", f"until the workers from before the reload no longer listen on "
             f":{host.probe_port}"),
        plan_prove(host, release.names, release.sha256),
    ]
    return tuple(steps)


def plan_prove(host: Host, names: Sequence[str], sha256: str, what: str = "new") -> Step:
    snis = probe_snis(names)
    return Step("prove", f"TLS to {host.probe} with SNI {', '.join(snis)} at once presents "
                f"the {what} leaf sha256 {sha256[:16]}...")


def _cmd(argv: Sequence[str]) -> str:
    return " ".join(argv)


# ---------------------------------------------------------------- prune's remote steps


def prune_list(host: Host, cert: str) -> Step:
    return Step("list", f"list {host.root}/archive/{cert}/ and the live pointer",
                ("sh", "-c", scripts.LIST.strip() + "\n", "certfan-list", host.root, cert))


def prune_delete(host: Host, cert: str, versions: Sequence[str]) -> Step:
    return Step("delete", f"delete {', '.join(versions)} from {host.root}/archive/{cert}/",
                ("sh", "-c", scripts.DELETE.strip() + "\n", "certfan-prune", host.root, cert,
                 *versions))


def parse_prune_list(stdout: bytes) -> tuple[str | None, tuple[str, ...]]:
    """(the version the live pointer names, the directories under archive/<cert>/)."""
    live: str | None = None
    dirs = []
    for line in stdout.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key == "live":
            live = Path(value).name or None
        elif key == "dir" and value:
            dirs.append(value)
    return live, tuple(dirs)
