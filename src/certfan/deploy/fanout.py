"""The one fan-out: a job per item, a bounded number at a time, each with a deadline.

Used by the rollout (canary gate, waves, rollback), ``status`` and ``prune``.
Every item gets exactly one :class:`Done`, in input order: the job's value, the
exception it raised, ``LOST`` when it outlived its deadline, or ``SKIPPED`` when
``stop()`` said so before it started. Workers are daemon threads, so a job
wedged past every socket timeout can neither block the result nor keep the
process alive; its late result is dropped.
"""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K")
T = TypeVar("T")


class DoneKind(enum.Enum):
    VALUE = "value"
    RAISED = "raised"
    LOST = "lost"  # no result before the deadline; its thread was left behind
    SKIPPED = "skipped"  # never started: stop() was true


@dataclass(frozen=True)
class Done(Generic[T]):
    kind: DoneKind
    value: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.kind is DoneKind.VALUE

    @property
    def lost(self) -> bool:
        return self.kind is DoneKind.LOST

    def why(self, deadline: float) -> str:
        """One line for a result that is not a value."""
        if self.kind is DoneKind.LOST:
            return f"no answer within {deadline:g}s"
        if self.kind is DoneKind.SKIPPED:
            return "not started"
        return str(self.error) or repr(self.error)


def fan_out(
    items: Sequence[K],
    job: Callable[[K], T],
    *,
    concurrency: int,
    deadline: float,
    name: Callable[[K], str] = str,
    stop: Callable[[], bool] | None = None,
    on_done: Callable[[K, Done[T]], None] | None = None,
) -> list[Done[T]]:
    """``job(item)`` for every item, ``concurrency`` at a time, ``deadline`` seconds each.

    ``on_done`` runs in the calling thread as each item finishes (so it may
    decide ``stop()`` for the items not yet started).
    """
    results: queue.Queue[tuple[int, Done[T]]] = queue.Queue()
    pending = deque(range(len(items)))
    running: dict[int, float] = {}
    done: dict[int, Done[T]] = {}

    def finish(index: int, outcome: Done[T]) -> None:
        done[index] = outcome
        if on_done is not None:
            on_done(items[index], outcome)

    def worker(index: int) -> None:
        try:
            outcome: Done[T] = Done(DoneKind.VALUE, value=job(items[index]))
        except BaseException as exc:  # the item's outcome, reported by the caller
            log.debug("%s: %r", name(items[index]), exc, exc_info=True)
            outcome = Done(DoneKind.RAISED, error=exc)
        results.put((index, outcome))

    while pending or running:
        while pending and len(running) < max(1, concurrency):
            if stop is not None and stop():
                while pending:
                    finish(pending.popleft(), Done(DoneKind.SKIPPED))
                break
            index = pending.popleft()
            running[index] = time.monotonic() + deadline
            threading.Thread(
                target=worker, args=(index,), name=f"certfan-{name(items[index])}", daemon=True
            ).start()
        if not running:
            continue
        try:
            index, outcome = results.get(
                timeout=max(0.0, min(running.values()) - time.monotonic())
            )
        except queue.Empty:
            now = time.monotonic()
            for index, limit in list(running.items()):
                if limit <= now:
                    del running[index]
                    finish(index, Done(DoneKind.LOST))
            continue
        if running.pop(index, None) is not None:
            finish(index, outcome)
        else:
            log.warning("%s: result arrived after its deadline; ignored", name(items[index]))
    return [done[i] for i in range(len(items))]
