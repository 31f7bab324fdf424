"""The one exception type for mistakes a user can fix, and how entry points report
errors and signals."""
from __future__ import annotations

import argparse
import errno
import functools
import os
import reprlib
import signal
import sys
from typing import Callable, TypeVar

from nas.signals import Stopped

F = TypeVar("F", bound=Callable)

# The most of a bad value a message shows, and of a whole message: a value read from a
# hostile file (a YAML alias bomb, a megabyte string) must not become a megabyte "line".
SHOWN_MAX = 200
MESSAGE_MAX = 600

_repr = reprlib.Repr()
# reprlib stops descending and listing early, so even a value of billions of shared
# elements costs a few hundred characters to show, never its full repr.
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 3, 6, 8, 8, 8
_repr.maxstring = _repr.maxother = _repr.maxlong = SHOWN_MAX


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """``repr(value)`` for a message: one line, at most ``limit`` characters."""
    try:
        text = _repr.repr(value)
    except Exception:  # noqa: BLE001 - a hostile object's __repr__ may raise anything
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


def clip(text: str, limit: int = SHOWN_MAX) -> str:
    """``text`` on one line, cut to ``limit`` characters (an ellipsis marks the cut)."""
    text = " ".join(str(text).split()) if "\n" in str(text) or "\r" in str(text) else str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


class ConfigError(ValueError):
    """A user mistake (bad config, missing file, mismatched table...).

    The message is one line that names the key or file, the bad value and what is allowed.
    Entry points print it without a traceback and exit with status 2.
    """


FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(e: BaseException) -> str | None:
    """When ``e`` (or an error it was raised from) says the disk is full: ``" (<file>)"``,
    or ``""`` without a file name; None for any other error.

    A full disk reaches a command wrapped in other errors: SQLite's "database or disk is
    full" inside SQLAlchemy's and Optuna's, a journal's OSError inside Optuna's trial error.
    """
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in FULL:
            return f" ({clip(cur.filename, 120)})" if cur.filename else ""
        if "database or disk is full" in str(cur)[:2000]:
            return " (the SQLite storage)"
        cur = cur.__cause__ or cur.__context__
    return None


class OneLineParser(argparse.ArgumentParser):
    """argparse, reporting a bad option as one line (its default is the usage, then the error)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {clip(message, SHOWN_MAX + 100)}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def exit_on_user_error(fn: F) -> F:
    """Wrap a command's main: a ConfigError becomes one line on stderr and exit status 2;
    a full disk (:func:`disk_full`), one line and 1; a plain Ctrl-C, one line and 130 (a command under ``nas.signals.stop_cleanly`` reports
    its stops there)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            if os.environ.get("RANK", "0") == "0":  # torchrun's ranks share the mistake: say it once
                print(f"error: {clip(str(e), MESSAGE_MAX)}", file=sys.stderr)
            sys.exit(2)
        except Exception as e:  # noqa: BLE001 - only a full disk is reported here
            where = disk_full(e)
            if where is None:
                raise
            print(f"error: no space left on the device{where}; what was finished before is kept: "
                  "free some space and re-run the same command to resume", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt as e:
            if isinstance(e, Stopped):  # nas.signals.stop_cleanly reports it, with its command's words
                raise
            print("interrupted: completed work is saved; re-run the same command to resume",
                  file=sys.stderr)
            sys.exit(128 + signal.SIGINT)

    return wrapper  # type: ignore[return-value]
