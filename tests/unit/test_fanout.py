"""The one fan-out: an outcome per item, in order, whatever the job does."""

from __future__ import annotations

import threading

from certfan.deploy.fanout import Done, DoneKind, fan_out


def test_values_errors_and_hangs_each_get_their_outcome_in_order() -> None:
    never = threading.Event()

    def job(item: str) -> str:
        if item == "raises":
            raise RuntimeError("boom")
        if item == "hangs":
            never.wait()  # a host wedged past every socket timeout
        return item.upper()

    done = fan_out(["a", "raises", "hangs", "b"], job, concurrency=4, deadline=0.3)
    assert [d.kind for d in done] == [DoneKind.VALUE, DoneKind.RAISED, DoneKind.LOST,
                                      DoneKind.VALUE]
    assert [d.value for d in done] == ["A", None, None, "B"]
    assert "boom" in done[1].why(0.3) and done[2].why(0.3) == "no answer within 0.3s"
    never.set()


def test_concurrency_is_bounded() -> None:
    lock = threading.Lock()
    running = peak = 0
    gate = threading.Barrier(3, timeout=5)

    def job(item: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait()  # three at once must be possible (else it breaks, the job raises)...
        with lock:
            running -= 1
        return item

    done = fan_out(list(range(9)), job, concurrency=3, deadline=10)
    assert [d.value for d in done] == list(range(9))
    assert peak == 3  # ...and never more


def test_stop_skips_what_has_not_started_and_on_done_sees_every_item() -> None:
    seen: list[tuple[int, DoneKind]] = []
    stopped = False

    def on_done(item: int, done: Done[int]) -> None:
        nonlocal stopped
        seen.append((item, done.kind))
        stopped = stopped or item == 1

    done = fan_out([0, 1, 2, 3], lambda i: i, concurrency=1, deadline=5,
                   stop=lambda: stopped, on_done=on_done)
    assert [d.kind for d in done] == [DoneKind.VALUE, DoneKind.VALUE, DoneKind.SKIPPED,
                                      DoneKind.SKIPPED]
    assert sorted(seen) == [(0, DoneKind.VALUE), (1, DoneKind.VALUE), (2, DoneKind.SKIPPED),
                            (3, DoneKind.SKIPPED)]
