"""One writer at a time: a lock on what two commands could write together.

Two builds of one latency table, or two trainings into one ``out_dir``, would interleave
their rows or replace each other's checkpoints. The second is refused at once, with one
line naming the process that holds the place (its pid, host and command, written into
the lock file). The lock is the OS's (``flock``): a process killed at any point holds
nothing, so there is never a stale lock to remove by hand.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
from pathlib import Path
from typing import Iterator

from nas.errors import ConfigError, clip


def lock_path(target: str | Path, folder: bool = False) -> Path:
    """The lock file of ``target``: hidden, beside a file, or inside a ``folder``."""
    p = Path(target)
    return p / ".nas.lock" if folder else p.with_name(f".{p.name}.lock")


def _holder() -> str:
    cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    return f"pid {os.getpid()} on {socket.gethostname()} ({clip(cmd, 160)})"


@contextlib.contextmanager
def exclusive(path: str | Path, key: str, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` (its folder made if missing) while the block runs, or
    refuse at once if another process holds it.

    The file is removed when the block ends; a process that opened it just before is
    made to open the new one (the inode is checked after locking), so two processes
    never both hold a lock.

    Args:
        path: the lock file (:func:`lock_path`).
        key: the setting that named the place, for the message (``out_dir``).
        what: the place, for the message (``the training folder outputs/x``).

    Raises:
        ConfigError: another process holds it (named), or the lock file cannot be made.
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            # O_NOFOLLOW: a link planted at the lock's name is not written through.
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip()
                os.close(fd)
                raise ConfigError(f"{key}: {what} is in use by {clip(holder, 220) or 'another process'}; "
                                  f"wait for it to end, or choose another {key}") from None
            try:
                same = os.stat(p, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its holder removed it as we opened it: lock the new one
        else:
            raise ConfigError(f"{key}: cannot lock {what} ({p} keeps being replaced)")
    except OSError as e:
        raise ConfigError(f"{key}: cannot lock {what} ({p}: {e.strerror or e})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (_holder() + "\n").encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(p)  # before closing: whoever opens the name next gets a new file
        os.close(fd)
