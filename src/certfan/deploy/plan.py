"""Plans of remote steps, as data: decide here, act in rollout.py.

Nothing in this module touches the network or the disk. Each function takes
what is known (the host, the release, the facts an ``inspect`` step reported)
and returns :class:`Step` objects: a name, an argv, and where stdin comes from.

Remote layout under ``host.root`` (nginx reads ``live/<cert>/fullchain.pem``
and ``live/<cert>/privkey.pem``)::

    archive/<cert>/<version>/      one directory per version, never modified
        privkey.pem                0600 from creation (umask 077)
        fullchain.pem cert.pem chain.pem
    archive/<cert>/certbot-<n>/    a copy of what certbot's live dir pointed to
    live/<cert> -> ../archive/<cert>/<version>     the one pointer, flipped by rename
    live/.<cert>.certbot/          certbot's old live directory, kept aside

Config values never become shell text: the fixed scripts below are run as
``sh -c SCRIPT NAME ARG...`` and read the values from ``$1``, ``$2``...; the
whole argv is quoted by ``shlex.join`` in ssh.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from certfan.config import Host
from certfan.deploy.probe import sni_for
from certfan.state.store import Release

# Upload order matters: the script reads the files from stdin in this order.
RELEASE_FILES = ("privkey.pem", "fullchain.pem", "cert.pem", "chain.pem")
KEY_FILE = "privkey.pem"

LIVE_LINK = "link"  # live/<cert> is a symlink (our layout)
LIVE_DIR = "dir"  # live/<cert> is a directory (certbot's layout)
LIVE_MISSING = "missing"
LIVE_OTHER = "other"


@dataclass(frozen=True)
class Step:
    """One thing to do for a host: a remote command, or (argv empty) a local probe."""

    name: str  # inspect, convert, upload, flip, test, reload, prove
    argv: tuple[str, ...] = ()
    stdin_files: tuple[Path, ...] = ()  # local files streamed to stdin, in order
    summary: str = ""  # one human line, for --dry-run and logs
    expect_sha256: str | None = None  # prove: the leaf that must be served
    snis: tuple[str, ...] = ()  # prove: the names to ask for

    @property
    def local(self) -> bool:
        return not self.argv


@dataclass(frozen=True)
class FileSpec:
    """A release file to upload: what the remote side checks after writing it."""

    name: str
    size: int
    sha256: str
    source: Path


@dataclass(frozen=True)
class LiveFacts:
    """What ``inspect`` found on a host for one certificate."""

    root_exists: bool
    live: str  # LIVE_LINK / LIVE_DIR / LIVE_MISSING / LIVE_OTHER
    target: str | None = None  # symlink target when live is a link
    files: dict[str, str] = field(default_factory=dict)  # certbot dir: file -> link target
    version_present: bool = False
    fullchain_pem: bytes = b""  # what live/<cert>/fullchain.pem holds now


@dataclass(frozen=True)
class PushPlan:
    steps: tuple[Step, ...]
    previous_target: str | None  # where rollback flips back to (None: remove the link)
    already_live: bool  # the pointer is already at the version


# ---------------------------------------------------------------- scripts

_INSPECT = r"""
set -u
root=$1 cert=$2 version=$3
live="$root/live/$cert"
if [ -d "$root" ]; then echo root=present; else echo root=missing; fi
if [ -L "$live" ]; then
  printf 'live=link\ntarget=%s\n' "$(readlink -- "$live")"
elif [ -d "$live" ]; then
  echo live=dir
  for f in privkey.pem fullchain.pem cert.pem chain.pem; do
    if [ -L "$live/$f" ]; then printf 'file=%s %s\n' "$f" "$(readlink -- "$live/$f")"
    elif [ -e "$live/$f" ]; then printf 'file=%s\n' "$f"
    fi
  done
elif [ -e "$live" ]; then echo live=other
else echo live=missing
fi
if [ -d "$root/archive/$cert/$version" ]; then echo version=present; fi
if [ -r "$live/fullchain.pem" ]; then echo 'fullchain<<'; cat -- "$live/fullchain.pem"; fi
exit 0
"""

# Args: root cert version, then (name size sha256) per file; file bodies on stdin
# back to back. GNU head -c reads exactly N bytes, and sha256sum checks what landed.
_UPLOAD = r"""
set -eu
root=$1 cert=$2 version=$3
shift 3
dir="$root/archive/$cert"
final="$dir/$version"
# Our own staging name: an upload of a run that died may still be going on here.
stage="$dir/.$version.$$.tmp"
verify() {
  d=$1; shift
  while [ $# -gt 0 ]; do
    sum=$(sha256sum < "$d/$1") || return 1
    [ "${sum%% *}" = "$3" ] || { echo "$d/$1: sha256 mismatch" >&2; return 1; }
    shift 3
  done
}
write() {
  while [ $# -gt 0 ]; do
    if [ "$1" = privkey.pem ]; then
      (umask 077; head -c "$2" > "$stage/$1")
    else
      head -c "$2" > "$stage/$1"
    fi
    shift 3
  done
}
umask 022
mkdir -p -- "$dir" "$root/live"
if [ -d "$final" ]; then
  cat > /dev/null
  verify "$final" "$@" || { echo "$final exists with other content; not replacing it" >&2; exit 3; }
  echo "present $final"
  exit 0
fi
rm -rf -- "$stage"
trap 'rm -rf -- "$stage"' EXIT
# certfan gone (killed, connection lost): the next write to it raises SIGPIPE, which
# would end the shell without its EXIT trap and leave the staging directory behind.
trap 'exit 1' HUP INT TERM PIPE
mkdir -- "$stage"
write "$@"
verify "$stage" "$@"
sync -- "$stage"/* "$stage"
if ! mv -T -- "$stage" "$final" 2>/dev/null; then
  # That other upload placed the version first (rename never replaces a full directory).
  verify "$final" "$@" || { echo "$final exists with other content; not replacing it" >&2; exit 3; }
  echo "present $final"
  exit 0
fi
trap - EXIT
sync -- "$dir"
echo "uploaded $final"
"""

# Args: root cert target (relative to live/). One rename switches key and chain together.
_FLIP = r"""
set -eu
root=$1 cert=$2 target=$3
cd -- "$root/live"
for f in fullchain.pem privkey.pem; do
  [ -s "$target/$f" ] || { echo "$root/live/$target/$f: missing or empty; not flipping" >&2; exit 3; }
done
rm -f -- ".$cert.tmp"
ln -s -- "$target" ".$cert.tmp"
mv -T -- ".$cert.tmp" "$cert"
sync -- .
echo "$cert -> $target"
"""

# Args: root cert. Rollback of a first deployment: there was no pointer before.
_UNLINK = r"""
set -eu
root=$1 cert=$2
cd -- "$root/live"
if [ -L "$cert" ]; then rm -f -- "$cert"; fi
sync -- .
echo "removed $cert"
"""

# Args: root cert name. Copies what certbot's live/<cert>/ points to into
# archive/<cert>/<name>/, then swaps the directory for a symlink to that copy.
# The two renames at the end leave live/<cert> absent for microseconds: a
# directory cannot be renamed over, and RENAME_EXCHANGE has no portable
# command. nginx reads these files only on (re)load, and a reload that hit the
# window would fail its config load and keep running the old config.
_CONVERT = r"""
set -eu
root=$1 cert=$2 name=$3
cd -- "$root/live"
if [ -L "$cert" ] || [ ! -d "$cert" ]; then
  echo "$root/live/$cert is not a certbot directory" >&2; exit 3
fi
archive="../archive/$cert"
final="$archive/$name"
stage="$archive/.$name.tmp"
same() { [ "$(sha256sum < "$1")" = "$(sha256sum < "$2")" ]; }
mkdir -p -- "$archive"
if [ -d "$final" ]; then
  for f in fullchain.pem privkey.pem; do
    same "$cert/$f" "$final/$f" || {
      echo "$root/archive/$cert/$name exists and differs from live/$cert; not converting" >&2
      exit 3
    }
  done
else
  rm -rf -- "$stage"
  trap 'rm -rf -- "$stage"' EXIT
  umask 022
  mkdir -- "$stage"
  for f in fullchain.pem cert.pem chain.pem; do
    if [ -e "$cert/$f" ]; then cat -- "$cert/$f" > "$stage/$f"; fi
  done
  (umask 077; cat -- "$cert/privkey.pem" > "$stage/privkey.pem")
  [ -s "$stage/fullchain.pem" ] && [ -s "$stage/privkey.pem" ] || {
    echo "$root/live/$cert: no fullchain.pem and privkey.pem to keep" >&2; exit 3
  }
  sync -- "$stage"/* "$stage"
  mv -T -- "$stage" "$final"
  trap - EXIT
fi
aside=".$cert.certbot"
if [ -e "$aside" ] || [ -L "$aside" ]; then aside="$aside.$(date +%Y%m%d%H%M%S)"; fi
rm -f -- ".$cert.tmp"
ln -s -- "$final" ".$cert.tmp"
mv -T -- "$cert" "$aside"
mv -T -- ".$cert.tmp" "$cert"
sync -- .
echo "$cert -> $final (certbot directory kept as live/$aside)"
"""


def _sh(script: str, step: str, *args: str) -> tuple[str, ...]:
    return ("sh", "-c", script.strip() + "\n", f"certfan-{step}", *args)


# ---------------------------------------------------------------- plans


def version_target(cert: str, version: str) -> str:
    """The live pointer's target for ``version``, relative to ``live/``."""
    return f"../archive/{cert}/{version}"


def probe_snis(names: Sequence[str]) -> tuple[str, ...]:
    """One SNI per certificate name (wildcards get a concrete label), in order."""
    return tuple(dict.fromkeys(sni_for(n) for n in names))


def plan_inspect(host: Host, cert: str, version: str) -> Step:
    return Step(
        name="inspect",
        argv=_sh(_INSPECT, "inspect", host.root, cert, version),
        summary=f"read {host.root}/live/{cert} and look for archive/{cert}/{version}",
    )


def parse_inspect(stdout: bytes) -> LiveFacts:
    """Read what the inspect script printed (key=value lines, then the fullchain)."""
    head, sep, pem = stdout.partition(b"fullchain<<\n")
    root_exists = False
    live = LIVE_OTHER
    target: str | None = None
    files: dict[str, str] = {}
    present = False
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
        elif key == "version" and value == "present":
            present = True
    return LiveFacts(
        root_exists=root_exists,
        live=live,
        target=target if live == LIVE_LINK else None,
        files=files,
        version_present=present,
        fullchain_pem=pem if sep else b"",
    )


def plan_upload(host: Host, release: Release, files: Sequence[FileSpec]) -> Step:
    cert, version = release.cert, release.version
    args: list[str] = [host.root, cert, version]
    for spec in files:
        args += [spec.name, str(spec.size), spec.sha256]
    names = ", ".join(f"{f.name} (0600)" if f.name == KEY_FILE else f.name for f in files)
    size = sum(f.size for f in files)
    return Step(
        name="upload",
        argv=_sh(_UPLOAD, "upload", *args),
        stdin_files=tuple(f.source for f in files),
        summary=f"{names} ({size} bytes) to {host.root}/archive/{cert}/{version}/",
    )


def plan_flip(host: Host, cert: str, target: str | None) -> Step:
    """Point live/<cert> at ``target`` by one rename; None removes a pointer we made."""
    if target is None:
        return Step(
            name="flip",
            argv=_sh(_UNLINK, "unlink", host.root, cert),
            summary=f"remove {host.root}/live/{cert} (there was none before)",
        )
    return Step(
        name="flip",
        argv=_sh(_FLIP, "flip", host.root, cert, target),
        summary=f"{host.root}/live/{cert} -> {target}",
    )


_CERTBOT_NUMBER = re.compile(r"privkey(\d+)\.pem$")


def certbot_copy_name(facts: LiveFacts) -> str:
    """``certbot-<n>`` after the number of the privkey certbot's live dir points to."""
    match = _CERTBOT_NUMBER.search(facts.files.get(KEY_FILE, ""))
    return f"certbot-{match.group(1)}" if match else "certbot"


def plan_convert_certbot(host: Host, cert: str, facts: LiveFacts) -> tuple[Step, str]:
    """The step converting certbot's live dir, and the pointer target it leaves."""
    name = certbot_copy_name(facts)
    target = version_target(cert, name)
    step = Step(
        name="convert",
        argv=_sh(_CONVERT, "convert", host.root, cert, name),
        summary=(
            f"certbot layout: copy {host.root}/live/{cert}/* to archive/{cert}/{name}/, "
            f"keep the directory as live/.{cert}.certbot, link live/{cert} -> {target}"
        ),
    )
    return step, target


def plan_test(host: Host) -> Step:
    return Step(
        name="test", argv=tuple(host.config_test), summary=_cmd(host.config_test)
    )


def plan_reload(host: Host) -> Step:
    return Step(name="reload", argv=tuple(host.reload), summary=_cmd(host.reload))


def plan_prove(host: Host, names: Sequence[str], sha256: str, what: str = "new") -> Step:
    snis = probe_snis(names)
    return Step(
        name="prove",
        summary=f"TLS to {host.probe} with SNI {', '.join(snis)} presents the {what} "
        f"leaf sha256 {sha256[:16]}...",
        expect_sha256=sha256,
        snis=snis,
    )


class PlanError(ValueError):
    """The host is in a state no plan can safely start from."""


def plan_push(
    host: Host, release: Release, facts: LiveFacts, files: Sequence[FileSpec]
) -> PushPlan:
    """Steps taking ``host`` to ``release``: [convert] upload [flip] test reload prove.

    The flip is left out when the pointer is already at the version (a run that
    stopped after its flip); then there is nothing to flip back to either.
    """
    cert = release.cert
    if not facts.root_exists:
        raise PlanError(f"{host.root} does not exist on {host.name}")
    if facts.live == LIVE_OTHER:
        raise PlanError(f"{host.root}/live/{cert} is neither a symlink nor a directory")
    target = version_target(cert, release.version)
    steps: list[Step] = []
    previous = facts.target
    if facts.live == LIVE_DIR:
        convert, previous = plan_convert_certbot(host, cert, facts)
        steps.append(convert)
    already = facts.live == LIVE_LINK and facts.target == target
    steps.append(plan_upload(host, release, files))
    if not already:
        steps.append(plan_flip(host, cert, target))
    steps += [plan_test(host), plan_reload(host), plan_prove(host, release.names, release.sha256)]
    return PushPlan(
        steps=tuple(steps), previous_target=None if already else previous, already_live=already
    )


def plan_rollback(
    host: Host,
    cert: str,
    previous_target: str | None,
    names: Sequence[str],
    old_sha256: str | None,
    *,
    reload: bool,
) -> tuple[Step, ...]:
    """Flip back; when nginx was (or may have been) reloaded, test, reload and prove the old leaf."""
    steps = [plan_flip(host, cert, previous_target)]
    if reload and previous_target is not None:
        steps += [plan_test(host), plan_reload(host)]
        if old_sha256:
            steps.append(plan_prove(host, names, old_sha256, what="old"))
    return tuple(steps)


def _cmd(argv: Sequence[str]) -> str:
    return " ".join(argv)
