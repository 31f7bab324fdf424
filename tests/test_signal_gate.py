"""Signals under ``stop_on_signals``: cut at once where that is safe, deferred elsewhere."""
from __future__ import annotations

import os
import signal

import pytest

from nas.errors import Interrupted, deferred_signals, interruptible, stop_on_signals


@pytest.fixture(autouse=True)
def default_handlers():
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_signal_outside_a_deferred_block_is_raised_at_once():
    with pytest.raises(Interrupted) as e:
        with stop_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            pytest.fail("not interrupted")
    assert e.value.signum == signal.SIGTERM


def test_a_deferred_signal_waits_for_the_next_interruptible_block():
    reached = []
    with pytest.raises(Interrupted) as e:
        with stop_on_signals(), deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)  # as if it came while Optuna stores a trial
            reached.append("after the signal")   # the bookkeeping goes on to its end
            with interruptible():
                reached.append("inside")         # never: the pending signal is raised first
    assert reached == ["after the signal"] and e.value.signum == signal.SIGINT


def test_inside_an_interruptible_block_a_signal_cuts_at_once_and_later_ones_are_ignored():
    with pytest.raises(Interrupted):
        with stop_on_signals(), deferred_signals(), interruptible():
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("not interrupted")
    # the command is ending: a second Ctrl-C must not cut its clean-up
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_signal_pending_at_the_end_of_a_deferred_block_is_raised_there():
    with pytest.raises(Interrupted):
        with stop_on_signals():
            with deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("the pending signal was not raised")
