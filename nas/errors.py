"""The one exception type for mistakes a user can fix, the output-path checks every
command shares, and how entry points report errors and signals."""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable)


class ConfigError(ValueError):
    """A user mistake (bad config, missing file, mismatched table...).

    The message is one line that names the key or file, the bad value and what is allowed.
    Entry points print it without a traceback and exit with status 2.
    """


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised where the program was, like Ctrl-C (see :func:`stop_on_signals`)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Gate:
    """Where the first signal under :func:`stop_on_signals` may be raised.

    Optuna stores a trial's result in several steps after the objective returns; a
    KeyboardInterrupt raised half-way through them ends in Optuna's own error instead of
    a clean stop. So inside :func:`deferred_signals` a signal only marks itself pending,
    and is raised at the next safe point: the start of an objective call
    (:meth:`raise_pending`), a block that writes nothing (:func:`interruptible`), or the
    end of the deferred block.
    """

    def __init__(self) -> None:
        self.deferred = False
        self.pending: int | None = None

    def raise_pending(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending)


GATE = _Gate()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the first SIGINT or SIGTERM into :class:`Interrupted`; ignore the ones after it.

    A second Ctrl-C would otherwise interrupt the clean-up of the first (marking the
    running trial failed, closing the storage) and end in a traceback; that clean-up
    takes milliseconds, so later signals are ignored until the program exits.
    """
    def handler(signum: int, _frame: object) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        if GATE.deferred:
            GATE.pending = signum
            return
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
        GATE.raise_pending()
    finally:
        GATE.pending, GATE.deferred = None, False
        for s, h in previous.items():
            if signal.getsignal(s) is handler:
                signal.signal(s, h)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """A block (Optuna's optimize loop) in which a signal waits for a safe point."""
    GATE.deferred = True
    try:
        yield
    finally:
        GATE.deferred = False
    GATE.raise_pending()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """A block (one objective call) that a signal may cut at once, even when deferred."""
    GATE.raise_pending()
    was, GATE.deferred = GATE.deferred, False
    try:
        yield
    finally:
        GATE.deferred = was


class OneLineParser(argparse.ArgumentParser):
    """argparse, reporting a bad option as one line (its default is the usage, then the error)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def check_out_dir(path: Path, key: str) -> None:
    """Refuse an output folder that cannot be made or written, before any work is done.

    Args:
        path: the folder (it may not exist yet).
        key: the option or config key named in the message.

    Raises:
        ConfigError: ``path`` or one of its parents is a file, or the nearest existing
            folder is not writable.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}: {path} is a file; give a folder")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{key}: {path} cannot be made: {parent} is a file; give a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: {path} cannot be written: {parent} is not writable; "
                          "give a folder you can write to")


def exit_on_user_error(fn: F) -> F:
    """Wrap a command's main: a ConfigError becomes one line on stderr and exit status 2;
    Ctrl-C (130) or SIGTERM (143, under :func:`stop_on_signals`), one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as e:
            signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
            name = "terminated" if signum == signal.SIGTERM else "interrupted"
            print(f"{name}: completed work is saved; re-run the same command to resume",
                  file=sys.stderr)
            sys.exit(128 + signum)

    return wrapper  # type: ignore[return-value]
