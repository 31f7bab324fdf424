"""Checking, before any work, that a command will be able to write its results.

A training or a measurement that cannot save at its end is lost; these checks run
first and create nothing: they probe the nearest existing folder with a temporary file
that they delete at once.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from nas.errors import ConfigError


def check_folder(path: str | Path, key: str) -> None:
    """Raise a ConfigError unless ``path`` is, or can be created as, a writable folder.

    Args:
        path: the output folder (it may not exist yet).
        key: the setting that named it, for the message (``out_dir``).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{key}: {p} is a file, not a folder; give another path")
    q = p
    while not q.exists():
        if q.is_symlink():  # a dangling link: creating folders through it would fail
            raise ConfigError(f"{key}: {q} is a broken symbolic link; give another folder")
        q = q.parent
    if not q.is_dir():
        raise ConfigError(f"{key}: {p} cannot be created: {q} is a file, not a folder; "
                          "give another folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=q)
    except OSError as e:
        raise ConfigError(f"{key}: {p} is not writable ({q}: {e.strerror or e.__class__.__name__}); "
                          "give a folder you can write to") from None
    os.close(fd)
    os.unlink(probe)


def check_file(path: str | Path, key: str) -> None:
    """Raise a ConfigError unless the file ``path`` can be written (its folder included)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{key}: {p} is a folder; give a file path")
    check_folder(p.parent, key)
