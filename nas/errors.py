"""The one exception type for mistakes a user can fix, and how entry points report
errors and signals."""
from __future__ import annotations

import argparse
import functools
import os
import signal
import sys
from typing import Callable, TypeVar

from nas.signals import Stopped

F = TypeVar("F", bound=Callable)


class ConfigError(ValueError):
    """A user mistake (bad config, missing file, mismatched table...).

    The message is one line that names the key or file, the bad value and what is allowed.
    Entry points print it without a traceback and exit with status 2.
    """


class OneLineParser(argparse.ArgumentParser):
    """argparse, reporting a bad option as one line (its default is the usage, then the error)."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def exit_on_user_error(fn: F) -> F:
    """Wrap a command's main: a ConfigError becomes one line on stderr and exit status 2;
    a plain Ctrl-C, one line and 130 (a command under ``nas.signals.stop_cleanly`` reports
    its stops there)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            if os.environ.get("RANK", "0") == "0":  # torchrun's ranks share the mistake: say it once
                print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt as e:
            if isinstance(e, Stopped):  # nas.signals.stop_cleanly reports it, with its command's words
                raise
            print("interrupted: completed work is saved; re-run the same command to resume",
                  file=sys.stderr)
            sys.exit(128 + signal.SIGINT)

    return wrapper  # type: ignore[return-value]
