"""What a storage file must be before Optuna opens it: a regular file; a journal of
Optuna's records, its cut-off last record dropped; an SQLite file holding Optuna's tables.

``nas.search.storage.open_storage`` calls these checks, so a mistyped path never appends
to a user's own file, a device or FIFO is never opened, and a torn journal resumes.
"""
from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

from nas.errors import ConfigError, clip, shown


def read_only(query: str) -> bool:
    """Whether an SQLite URL's query asks for a database that is not written."""
    from urllib.parse import parse_qs

    q = {k.lower(): v[-1].lower() for k, v in parse_qs(query).items() if v}
    return q.get("mode") == "ro" or q.get("immutable") in ("1", "true")


def not_a_file(path: Path, url: str, key: str) -> None:
    """Refuse a path that exists but is not a regular file (a device such as /dev/null, a
    FIFO, a socket, a folder): a storage is written, and reading a FIFO would hang."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"{key}: cannot open {shown(url, 120)} ({one_line(e)})") from None
    if not stat.S_ISREG(st.st_mode):
        what = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
        raise ConfigError(f"{key}: {shown(url, 120)} is {what}; a storage is a file: give a new "
                          "file name or the storage of a search")


def one_line(e: BaseException) -> str:
    text = str(e)[:2000].strip().splitlines()
    return f"{e.__class__.__name__}: {clip(text[0], 160)}" if text else e.__class__.__name__



# A journal lock is held for one append (milliseconds): one this old was left by a killed
# process. Optuna would wait its whole grace period (30 s) before breaking it.
STALE_LOCK_S = 10



def check_journal_file(path: Path, url: str, key: str) -> str | None:
    """An existing journal: its records are JSON objects, each ending with a newline.

    Optuna skips an unfinished last line, so a user's text file without a final
    newline would pass its reader, and the search would append records to it: the first
    record must be one of Optuna's.

    Returns:
        ``"torn"`` when the last record is cut off (:func:`drop_torn_record`), else None.
    """
    try:
        with open(path, "rb") as f:
            head = f.readline(1 << 20)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 1))
            last = f.read(1)
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {shown(url, 120)} ({one_line(e)})") from None
    if size == 0:
        return
    try:
        first = json.loads(head)
    except ValueError:
        first = None
    if not (isinstance(first, dict) and "op_code" in first):
        raise ConfigError(f"{key}: {shown(url, 120)} is not an Optuna journal; give a new file name, "
                          "the journal of a search, or an SQLAlchemy URL (sqlite:///outputs/nas.db)")
    return "torn" if last != b"\n" else None


def _new_file(stem: str):
    """A file created here (never an existing one, never through a link): ``stem``, or
    ``stem-2``, ``stem-3``... Returns its path and the open binary file."""
    for n in range(1, 1000):
        path = Path(stem if n == 1 else f"{stem}-{n}")
        try:
            return path, open(path, "xb")
        except FileExistsError:
            continue
    raise FileExistsError(stem)


def drop_torn_record(path: Path, key: str) -> None:
    """Cut a journal back to its last whole record, keeping a copy of the whole file.

    A record cut off (a full disk, a killed write) cannot be completed; Optuna skips it
    when reading, but every record appended after it would be glued to it and lost. A
    writer that is still appending holds the journal's lock, so the file is looked at
    again under that lock: only a record no process is writing is dropped.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path), grace_period=STALE_LOCK_S)
    lock.acquire()
    try:
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            tail = b""
            while b"\n" not in tail and len(tail) < size:
                back = min(size, len(tail) + (1 << 16))
                f.seek(size - back)
                tail = f.read(back)
            cut = size - len(tail) + tail.rfind(b"\n") + 1
            if cut == size:
                return  # its writer finished it while we waited for the lock
            if cut == 0:
                raise ConfigError(f"{key}: {clip(str(path), 120)}: its only record is cut "
                                  "off; give a new file name")
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            backup, b = _new_file(f"{path}.torn-{stamp}-{os.getpid()}")
            f.seek(0)
            with b:
                shutil.copyfileobj(f, b)
                b.flush()
                os.fsync(b.fileno())
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    finally:
        lock.release()
    print(f"note: {clip(str(path), 120)}: its last record was cut off (a full disk or a killed "
          f"write); dropped it ({size - cut} bytes), the whole file is kept as {backup.name}",
          file=sys.stderr)


def check_sqlite_file(db: Path, url: str, key: str, create: bool) -> None:
    """An existing SQLite file must be an Optuna storage: read it without writing."""
    import sqlite3

    if db.is_dir():
        raise ConfigError(f"{key}: {shown(url, 120)} names a directory, not a database file")
    not_a_file(db, url, key)
    if not db.exists():
        if create:
            return
        raise ConfigError(f"{key}: {shown(url, 120)}: {db} does not exist; give the storage of a search")
    if db.stat().st_size == 0:
        if create:
            return
        raise ConfigError(f"{key}: {shown(url, 120)}: {db} is empty, not an Optuna storage")
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            # A search writes (the WAL switch, its trials): a damaged page must be found first.
            problem = con.execute("PRAGMA quick_check(1)").fetchone()[0] if create else "ok"
        finally:
            con.close()
    except sqlite3.Error as e:
        raise ConfigError(f"{key}: cannot open {shown(url, 120)} ({one_line(e)})") from None
    if problem != "ok":
        problem = " ".join(problem.replace("*** in database main ***", "").split())
        raise ConfigError(f"{key}: {shown(url, 120)} is damaged ({problem}); restore it from a copy")
    if "studies" not in tables:
        raise ConfigError(f"{key}: {shown(url, 120)} is an SQLite database without Optuna's tables; "
                          "give a new file name or the storage of a search")
