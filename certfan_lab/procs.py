"""Child processes of the lab: daemons under the reaper, commands, deadlines."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

REAPER = Path(__file__).with_name("reaper.py")


class LabError(Exception):
    """The lab could not be built, started or changed; the message says what and why."""


def run(
    argv: Sequence[str], *, input: str | None = None, timeout: float = 20.0, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a short command; a failure raises LabError carrying its stderr."""
    try:
        proc = subprocess.run(
            list(argv),
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{argv[0]}: {exc}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    alive: Callable[[], None] | None = None,
    interval: float = 0.02,
) -> None:
    """Poll `ready` until it holds; `alive` raises if the thing died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if ready():
            return
        if time.monotonic() > deadline:
            raise LabError(f"{what}: not ready after {timeout:.0f}s")
        time.sleep(interval)


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """True for a live process; a zombie counts as gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


class Daemon:
    """One long-running lab process, run in the foreground under reaper.py.

    The reaper is our direct child (so we wait() it) and its pid goes to a
    pidfile, which `certfan_lab down` uses after a crash.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        run_dir: Path,
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.cwd = cwd
        self.pidfile = run_dir / f"{name}.pid"
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running():
            return
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    str(REAPER),
                    "--tag",
                    str(self.pidfile),
                    "--",
                    *self.argv,
                ],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{self.proc.pid}\n")
        log.debug("started %s (pid %d): %s", self.name, self.proc.pid, " ".join(self.argv))

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        """Raise LabError with the log tail if the daemon has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise LabError(
                f"{self.name} exited with status {self.proc.returncode}; "
                f"log {self.log_path}:\n{tail(self.log_path)}"
            )

    def signal_stop(self) -> None:
        """Ask the daemon to stop without waiting (stop() then waits)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.pidfile.unlink(missing_ok=True)
