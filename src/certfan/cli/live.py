"""Live progress on a terminal: one line per host, rewritten in place."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from certfan.cli import render

if TYPE_CHECKING:
    from certfan.deploy.hostrun import Event


class LiveLines(logging.Handler):
    """One line per host, rewritten in place as its steps go by (terminals only).

    While it is active it is also the logging handler, so a log line is printed
    above the block instead of being overwritten by the next redraw.
    """

    def __init__(self, out: TextIO, err: TextIO, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.out, self.err = out, err
        self.setFormatter(formatter or logging.Formatter())
        self.lines: dict[tuple[str, str], str] = {}
        self.started: dict[tuple[str, str], float] = {}
        self.drawn = 0
        self.guard = threading.Lock()

    def update(self, event: Event) -> None:
        key = (event.cert, event.host)
        now = time.monotonic()
        start = self.started.setdefault(key, now)
        with self.guard:
            self.lines[key] = render.live_line(event, now - start)
            self._redraw()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own contract: never raise
            self.handleError(record)
            return
        with self.guard:
            self._erase()
            self.err.write(message + "\n")
            self.err.flush()
            self._redraw()

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.out.flush()
            self.drawn = 0

    def _redraw(self) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)  # a wrapped line breaks the count
        text = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
        text += "".join(f"{line[:width]}\n" for line in self.lines.values())
        self.drawn = len(self.lines)
        self.out.write(text)
        self.out.flush()


@contextmanager
def progress(enabled: bool) -> Iterator[LiveLines | None]:
    """The live display while the block runs, when ``enabled`` and stdout is a terminal."""
    if not enabled or not sys.stdout.isatty():
        yield None
        return
    root = logging.getLogger()
    saved = root.handlers[:]
    live = LiveLines(sys.stdout, sys.stderr, saved[0].formatter if saved else None)
    root.handlers[:] = [live]
    try:
        yield live
    finally:
        root.handlers[:] = saved
