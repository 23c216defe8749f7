"""certfan's own main() in a child process that kills or pauses itself at a log line.

Run by path (``python tests/helpers/killchild.py PATTERN ACTION CERTFAN-ARGS...``)
from :func:`helpers.reliability.certfan_process`. A handler on the "certfan"
logger acts at the first record whose message matches PATTERN: it runs in the
thread that logs, before the step the line announces, so the kill or pause
lands exactly there. ACTION is ``kill`` (SIGKILL itself), ``pause:<dir>``
(touch <dir>/reached, wait up to 60 s for <dir>/go) or ``none``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

PAUSE_LIMIT = 60.0  # seconds a paused child waits for "go" before it carries on


class At(logging.Handler):
    def __init__(self, pattern: re.Pattern[str], action: str) -> None:
        super().__init__(logging.INFO)
        self.pattern = pattern
        self.action = action
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.fired or not self.pattern.search(record.getMessage()):
            return
        self.fired = True
        sys.stderr.write(f"certfan-test: {self.action} at: {record.getMessage()}\n")
        sys.stderr.flush()
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action.startswith("pause:"):
            folder = Path(self.action.split(":", 1)[1])
            (folder / "reached").touch()
            deadline = time.monotonic() + PAUSE_LIMIT
            while not (folder / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.01)


def main(argv: list[str]) -> int:
    pattern, action, *args = argv
    # Run by path, Python put this folder first on sys.path, where helpers/dns.py
    # would shadow dnspython's ``dns``.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    logging.getLogger("certfan").addHandler(At(re.compile(pattern), action))
    from certfan.cli import app as cli  # after the handler: import-time logging counts too

    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
