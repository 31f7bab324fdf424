"""Signals under ``nas.signals.handling``: cut at once where that is safe, held elsewhere."""
from __future__ import annotations

import os
import signal

import pytest

from nas.signals import Stopped, handling, held, interruptible


@pytest.fixture(autouse=True)
def default_handlers():
    yield
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_signal_outside_a_held_block_is_raised_at_once():
    with pytest.raises(Stopped) as e:
        with handling():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
            pytest.fail("not interrupted")
    assert e.value.signum == signal.SIGTERM


def test_a_held_signal_waits_for_the_next_interruptible_block():
    reached = []
    with pytest.raises(Stopped) as e:
        with handling(), held():
            os.kill(os.getpid(), signal.SIGINT)  # as if it came while Optuna stores a trial
            reached.append("after the signal")   # the bookkeeping goes on to its end
            with interruptible():
                reached.append("inside")         # never: the pending signal is raised first
    assert reached == ["after the signal"] and e.value.signum == signal.SIGINT


def test_inside_an_interruptible_block_a_signal_cuts_at_once_and_later_ones_are_ignored():
    with pytest.raises(Stopped):
        with handling(), held(), interruptible():
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("not interrupted")
    # the handlers are restored once the block is left
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_pending_at_the_end_of_a_held_block_is_raised_there():
    with pytest.raises(Stopped):
        with handling():
            with held():
                os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("the pending signal was not raised")


def test_a_stop_lost_in_a_garbage_collector_callback_is_raised_at_the_next_safe_point(monkeypatch):
    import sys
    import weakref

    from nas.signals import raise_pending

    class Thing:
        pass

    def on_collected(_ref):
        signal.raise_signal(signal.SIGTERM)  # its Stopped is raised inside this callback,
        for _ in range(1000):                # where the interpreter prints and drops it
            pass

    lost = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: lost.append(u.exc_type))
    with handling():
        thing = Thing()
        ref = weakref.ref(thing, on_collected)
        del thing
        assert ref() is None
        assert lost == [Stopped]  # the exception was lost...
        with pytest.raises(Stopped) as e:
            raise_pending()  # ...and the stop is not
    assert e.value.signum == signal.SIGTERM
