"""Run one lab daemon and reap everything it leaves behind.

PID 1 on the lab machines does not reap orphans, and sshd abandons its
per-connection processes when the listener exits. So every lab daemon runs
under this small parent, a child subreaper (prctl PR_SET_CHILD_SUBREAPER):
orphans of the daemon are re-parented here and reaped, and when the daemon
exits its leftovers are terminated and reaped before this process exits with
the daemon's status. TERM/INT/HUP/QUIT are forwarded to the daemon. If the lab
process that started us goes away, the daemon is stopped too.

Started by path (``python -I -S reaper.py --tag T -- argv...``), stdlib only, so
it starts fast and never imports certfan.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
STOP_GRACE = 5.0  # seconds the daemon gets after TERM before KILL
ORPHAN_GRACE = 1.0  # seconds leftovers get after TERM before KILL


def _children(me: int) -> list[int]:
    """Pids whose parent is `me` (no /proc/<pid>/task/*/children here)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            found.append(int(entry))
    return found


def _reap() -> list[tuple[int, int]]:
    reaped: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped.append((pid, status))


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap_leftovers(sigset: set[signal.Signals]) -> None:
    me = os.getpid()
    started = time.monotonic()
    while True:
        _reap()
        left = _children(me)
        if not left:
            return
        late = time.monotonic() - started > ORPHAN_GRACE
        for pid in left:
            _kill(pid, signal.SIGKILL if late else signal.SIGTERM)
        signal.sigtimedwait(sigset, 0.05)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") + 1 >= len(argv):
        print("usage: reaper.py [--tag TAG] -- ARGV...", file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    parent = os.getppid()
    sigset = {signal.SIGCHLD, *FORWARDED}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigset)
    try:
        child = os.posix_spawnp(
            command[0], command, os.environ, setsigmask=(), setsigdef=tuple(sigset)
        )
    except OSError as exc:
        print(f"reaper: cannot run {command[0]}: {exc}", file=sys.stderr, flush=True)
        return 127
    status: int | None = None
    kill_at: float | None = None
    while status is None:
        info = signal.sigtimedwait(sigset, 0.5)
        if info is not None and info.si_signo in FORWARDED:
            _kill(child, info.si_signo)
            if info.si_signo in (signal.SIGTERM, signal.SIGINT) and kill_at is None:
                kill_at = time.monotonic() + STOP_GRACE
        for pid, st in _reap():
            if pid == child:
                status = st
        if status is None and os.getppid() != parent and kill_at is None:
            _kill(child, signal.SIGTERM)
            kill_at = time.monotonic() + STOP_GRACE
        if status is None and kill_at is not None and time.monotonic() > kill_at:
            _kill(child, signal.SIGKILL)
    _reap_leftovers(sigset)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
