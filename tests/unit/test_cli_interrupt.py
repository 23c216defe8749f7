"""Signal routing: during a rollout the first SIGINT/SIGTERM only sets the run's
Stop (the fleet starts no further host); outside one, or a second time, the run
stops at once. Real signals to this process, no handler patched in."""

from __future__ import annotations

import os
import signal

import pytest

from certfan.cli.interrupt import stopping
from certfan.commands.tools import Stop


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_in_a_rollout_sets_stop_and_a_second_one_stops_at_once(signum) -> None:  # type: ignore[no-untyped-def]
    stop = Stop()
    before = signal.getsignal(signum)
    with stopping(stop), stop.rollout() as event:
        os.kill(os.getpid(), signum)
        assert stop.is_set() and event.is_set() and stop.rolling
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
    assert not stop.rolling and signal.getsignal(signum) == before  # handler restored


def test_outside_a_rollout_a_signal_stops_at_once() -> None:
    stop = Stop()
    with pytest.raises(KeyboardInterrupt), stopping(stop):
        os.kill(os.getpid(), signal.SIGTERM)
    assert not stop.is_set()
