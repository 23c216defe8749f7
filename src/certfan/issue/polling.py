"""Waiting without fixed sleeps: deadline-bound pauses that Ctrl-C (a cancel event) cuts short.

Shared by the ACME pollers (authorization, finalize) and the DNS propagation
proof, so both stop at the same deadline rules and on the same cancel event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from certfan.errors import Interrupted


def pause(seconds: float, cancel: threading.Event | None, what: str) -> None:
    """Wait ``seconds``; raise Interrupted at once if ``cancel`` is set meanwhile."""
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise Interrupted(f"{what}: interrupted")


def backoff(deadline: float, start: float, most: float) -> Iterator[tuple[float, float]]:
    """(suggested wait, seconds left) for each round after the first, doubling up to ``most``.

    Stops (the caller's deadline is hit) when nothing is left.
    """
    wait = start
    while (left := deadline - time.monotonic()) > 0:
        yield wait, left
        wait = min(wait * 2, most)
