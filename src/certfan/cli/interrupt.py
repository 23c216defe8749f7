"""Ctrl-C and SIGTERM during a run.

While a rollout is under way the first signal sets the run's :class:`Stop`:
the fleet starts no further host, the hosts in flight finish or roll back
within their deadlines, and the command then reports where every host
stands. Outside a rollout, or at a second signal, the run stops at once
(KeyboardInterrupt, exit 130): nothing is half-way on a host then.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certfan.commands.tools import Stop

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stopping(stop: Stop) -> Iterator[Stop]:
    """Route SIGINT and SIGTERM to ``stop`` for the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.rolling and not stop.is_set():
            stop.set()
            log.warning("%s: starting no further host; waiting for the hosts in flight to "
                        "finish or roll back (again to stop at once)", signal.Signals(signum).name)
            return
        raise KeyboardInterrupt

    saved = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, old in saved.items():
            signal.signal(s, old)
