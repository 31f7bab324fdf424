"""Writing results: checked before any work, written whole or not at all.

A training or a measurement that cannot save at its end is lost; the checks run first
and create nothing: they probe the nearest existing folder with a temporary file that
they delete at once. :func:`write_atomic` is how every command writes a file that a
crash must not leave half-written (checkpoints, table fingerprints).
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Callable

from nas.errors import ConfigError, shown
from nas.signals import held


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


NAME_MAX = 100


def is_plain(name: str) -> bool:
    """A name used as a folder or file name as it is: 1 to :data:`NAME_MAX` letters, digits,
    '.', '_', '-', not starting with '.' (so never '..', never hidden, and short enough for
    any filesystem with a suffix added)."""
    return (0 < len(name) <= NAME_MAX and not name.startswith(".")
            and all(c.isalnum() or c in "._-" for c in name))


def folder_name(name: str) -> str:
    """``name`` (read from a storage, a checkpoint, a config) as one plain path component.

    A plain name is kept; any other (``/tmp/x``, ``../..``, 300 characters, a control
    character) keeps its plain characters and gets a hash of the whole, so that it can
    only name a folder inside the one it is joined to, and two names never share one.
    """
    name = str(name)
    if is_plain(name):
        return name
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:60] or "unnamed"
    return f"{stem}-{hashlib.sha1(name.encode('utf-8', 'replace')).hexdigest()[:10]}"


def check_name(name: str, key: str) -> None:
    """Refuse a configured name that is meant to be used as a folder name as it is.

    Raises:
        ConfigError: naming ``key``, the name (shortened) and what is allowed.
    """
    if not is_plain(str(name)):
        raise ConfigError(f"{key}: {shown(name, 80)} is not allowed; it names a folder: "
                          f"1 to {NAME_MAX} letters, digits, '.', '_' or '-', not starting with '.'")


def no_link(path: str | Path, key: str) -> Path:
    """Refuse ``path`` when it is a symbolic link: a folder a command derives (from a
    stored name) is written into only where it lies, never where a link points.

    Returns:
        ``path`` as a Path.
    """
    p = Path(path)
    if p.is_symlink():
        raise ConfigError(f"{key}: {p} is a symbolic link; this command does not write through "
                          "links: remove it, or give the folder to write into")
    return p


def check_file(path: str | Path, key: str) -> None:
    """Raise a ConfigError unless the file ``path`` can be written (its folder included)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{key}: {p} is a folder; give a file path")
    check_folder(p.parent, key)


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it onto ``path``.

    The rename is atomic on one filesystem, so readers see the old file or the new one,
    never half of one; the temporary name is unique, so parallel writers never share it,
    and Ctrl-C cannot land between writing and renaming. The file gets the usual
    permissions (``mkstemp`` makes it owner-only; results are meant to be shared).

    Args:
        path: the destination; its folder is created if needed.
        write: writes the content to the binary file it is given.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with held():
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as e:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(e, OSError) and e.errno is not None and e.filename is None:
                e.filename = str(path)  # a full disk is reported with the file it hit
            raise
    return path
