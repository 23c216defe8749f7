"""certfan in a child process (tests/helpers/killchild.py) that kills or pauses itself
at a log line; waiting for it and killing it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
# ---------------------------------------------------------------- certfan in a child process

KILLCHILD = Path(__file__).resolve().with_name("killchild.py")  # run by path


def certfan_process(config_path: Path, *args: str, at: str = r"(?!)", action: str = "none",
                    log: Path | None = None) -> subprocess.Popen[str]:
    """``certfan -v -c CONFIG ARGS`` in a child; at the first log line matching ``at``
    it does ``action``: ``kill`` (SIGKILL itself), ``pause:<dir>`` (touch <dir>/reached,
    wait for <dir>/go) or nothing."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, str(KILLCHILD), at, action, "-v", "-c", str(config_path), *args]
    if log is None:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
    with open(log, "w") as stderr:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                stdin=subprocess.DEVNULL)


def wait_exit(proc: subprocess.Popen[str], timeout: float = 90.0) -> int:
    try:
        proc.communicate(timeout=timeout)  # reads the pipes: a full one must not stall it
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("certfan did not finish in time") from None
    return proc.returncode


def kill(proc: subprocess.Popen[str]) -> None:
    """SIGKILL the child, unless it has already exited (and been reaped)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
