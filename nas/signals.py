"""Ending a command on Ctrl-C or SIGTERM without losing or half-writing anything.

A command runs under :func:`stop_cleanly`: the first Ctrl-C or SIGTERM raises
:class:`Stopped` where the work is, so it unwinds like any error, and the command ends
with one line and exit status 128 + the signal (130, 143). Further signals while it
stops are ignored, so a second Ctrl-C cannot break a cleanup halfway. Writers wrap what
must land whole (a checkpoint, a table row) in :func:`held`; a signal arriving inside
is raised when the block ends, and a part of such a block that writes nothing (scoring
inside Optuna's loop) is marked :func:`interruptible`. Without :func:`handling` (library
use) nothing changes: :func:`held` is then a no-op and Ctrl-C raises KeyboardInterrupt
as usual.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from typing import Iterator

NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class Stopped(KeyboardInterrupt):
    """Raised by the first Ctrl-C or SIGTERM. A KeyboardInterrupt, so that no
    ``except Exception`` (Hydra's included) takes it for an error, and code that cleans up
    after a Ctrl-C (Optuna marks the trial failed) does so for SIGTERM too."""

    def __init__(self, signum: int):
        super().__init__(NAMES.get(signum, f"signal {signum}"))
        self.signum = signum


_state = {"signum": None, "pending": False, "held": 0}


def _handler(signum: int, frame: object) -> None:
    if _state["signum"] is not None:
        return  # already stopping: a second Ctrl-C must not interrupt the cleanup
    _state["signum"] = signum
    # Also kept for the next safe point (:func:`raise_pending`): an exception raised here
    # while the interpreter runs a garbage collector's callback is printed and dropped.
    _state["pending"] = True
    if _state["held"]:
        return
    raise Stopped(signum)


def raise_pending() -> None:
    """Raise a signal that arrived inside a :func:`held` block, or whose exception was
    lost (a safe point for it; long loops that write nothing call it as they go)."""
    if _state["pending"]:
        _state["pending"] = False
        raise Stopped(_state["signum"])


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Let the block finish before a Ctrl-C or SIGTERM that arrives inside it stops the run."""
    _state["held"] += 1
    try:
        yield
    finally:
        _state["held"] -= 1
    if not _state["held"]:
        raise_pending()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Inside a :func:`held` block, a part that a signal may cut at once (it writes nothing)."""
    raise_pending()
    was, _state["held"] = _state["held"], 0
    try:
        yield
    finally:
        _state["held"] = was


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Turn the first Ctrl-C or SIGTERM into :class:`Stopped`; ignore the ones after it.

    The caller reports the stop (:func:`stop_cleanly`, or ``nas.errors.exit_on_user_error``).
    """
    _state.update(signum=None, pending=False, held=0)
    old = {s: signal.signal(s, _handler) for s in NAMES}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def stop_cleanly(what: str) -> Iterator[None]:
    """Run a command so that Ctrl-C and SIGTERM end it with one line and 128 + signal.

    Args:
        what: the rest of the message: what is kept and how to continue.
    """
    try:
        with handling():
            yield
    except KeyboardInterrupt as e:
        for s in NAMES:  # the process is ending: a further signal must not print a traceback
            signal.signal(s, signal.SIG_IGN)
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"stopped by {NAMES.get(signum, signum)}; {what}", file=sys.stderr)
        sys.exit(128 + signum)
