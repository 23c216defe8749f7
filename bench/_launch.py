"""Run a command and write its own wall time, CPU seconds and peak RSS to a file.

    python -I -S bench/_launch.py FIGURES.json ARGV...

Why a launcher: a child's ``ru_maxrss`` starts at the peak RSS of the process
it was forked from (Linux carries the parent's high-water mark across the
exec), so a child of the benchmark, itself 50+ MiB, would never report less.
This process is small (stdlib only, no site), so the figure is the command's
own, above a floor of about 10 MiB (what this launcher holds when it forks).

FIGURES.json gets ``{"wall", "utime", "stime", "maxrss_kib", "code"}``, CPU and
RSS of the command and the children it reaped. Exit status: the command's.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: _launch.py FIGURES.json ARGV...", file=sys.stderr)
        return 2
    figures, command = argv[0], argv[1:]
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(status)
    with open(figures, "w") as f:
        json.dump({"wall": wall, "utime": usage.ru_utime, "stime": usage.ru_stime,
                   "maxrss_kib": usage.ru_maxrss, "code": code}, f)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
