"""Run one job per host, a bounded number at a time, each with a deadline.

For the read-mostly fan-outs (status, prune); rollouts have their own, which
also knows about canaries and halting. Every host gets exactly one
:class:`Done`: its value, the exception its job raised, or ``lost`` when it
outlived the deadline. Workers are daemon threads, so a host wedged past every
socket timeout can neither block the result nor keep the process alive.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from certfan.config import Host

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Done(Generic[T]):
    value: T | None = None
    error: BaseException | None = None
    lost: bool = False  # no result before the deadline; its thread was left behind

    @property
    def ok(self) -> bool:
        return self.error is None and not self.lost


def each_host(
    hosts: Sequence[Host], job: Callable[[Host], T], *, concurrency: int, deadline: float
) -> dict[str, Done[T]]:
    """``job(host)`` for every host, ``concurrency`` at a time, ``deadline`` seconds each."""
    results: queue.Queue[tuple[str, Done[T]]] = queue.Queue()
    pending = deque(hosts)
    running: dict[str, float] = {}
    done: dict[str, Done[T]] = {}

    def worker(host: Host) -> None:
        try:
            outcome: Done[T] = Done(value=job(host))
        except Exception as exc:  # the host's outcome, reported by the caller
            log.debug("%s: %r", host.name, exc, exc_info=True)
            outcome = Done(error=exc)
        results.put((host.name, outcome))

    while pending or running:
        while pending and len(running) < max(1, concurrency):
            host = pending.popleft()
            running[host.name] = time.monotonic() + deadline
            threading.Thread(target=worker, args=(host,), name=f"certfan-{host.name}",
                             daemon=True).start()
        try:
            name, outcome = results.get(timeout=max(0.0, min(running.values()) - time.monotonic()))
        except queue.Empty:
            now = time.monotonic()
            for name, limit in list(running.items()):
                if limit <= now:
                    del running[name]
                    done[name] = Done(lost=True)
            continue
        if running.pop(name, None) is not None:
            done[name] = outcome
    return {h.name: done[h.name] for h in hosts}
