"""The one exception type for mistakes a user can fix, and how entry points report it."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class ConfigError(ValueError):
    """A user mistake (bad config, missing file, mismatched table...).

    The message is one line that names the key or file, the bad value and what is allowed.
    Entry points print it without a traceback and exit with status 2.
    """


def exit_on_user_error(fn: F) -> F:
    """Wrap a command's main: a ConfigError becomes one line on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted: completed work is saved; re-run the same command to resume",
                  file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
