"""Opening a storage safely: an SQLAlchemy URL or an Optuna journal file.

Anything that is not an Optuna storage (a user's text file, another SQLite database, a
journal cut off mid-record, a damaged page) is refused before Optuna may write to it,
and a command that only reads never creates a storage.
"""
from __future__ import annotations

import contextlib
import random
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import optuna
from optuna.storages import BaseStorage

from nas.errors import ConfigError, clip, disk_full, shown
from nas.search.storage_files import (STALE_LOCK_S, check_journal_file, check_sqlite_file,
                                      drop_torn_record, not_a_file, one_line, read_only)


def open_storage(url: str, key: str = "search.storage", create: bool = True, *,
                 heartbeat: Heartbeat | None = None) -> BaseStorage:
    """Open the storage at ``url``, refusing anything that is not an Optuna storage.

    An existing file is checked before Optuna may write to it: a journal must be one
    (JSON records, each ending with a newline) and an SQLite file must hold Optuna's
    tables, so a mistyped path never appends to or alters a user's own file.

    Args:
        url: an SQLAlchemy URL (``sqlite:///outputs/nas.db``, ``postgresql://...``) or the
            path of an Optuna journal file.
        key: the config key named in error messages.
        create: create a missing storage (False for commands that only read: a
            mistyped path is then refused instead of leaving an empty storage behind).
        heartbeat: for an RDB storage that runs trials: how its trials say they are alive
            (a journal file has no heartbeat).

    Raises:
        ConfigError: the storage cannot be opened, is missing (``create=False``) or is
            not an Optuna storage.
    """
    if not url:
        raise ConfigError(f"{key}: empty; give an SQLAlchemy URL (sqlite:///outputs/nas.db) "
                          "or a journal file path")
    try:
        if "://" not in url:
            storage = _open_journal(Path(url), url, key, create)
        else:
            kwargs: dict[str, Any] = {}
            if url.startswith("sqlite:///"):
                db, _, query = url[len("sqlite:///"):].partition("?")
                if read_only(query):
                    if create:  # SQLAlchemy would drop the option and write all the same
                        raise ConfigError(f"{key}: {shown(url, 120)} asks for read-only access, but "
                                          "a search writes its trials; drop ?mode=ro (nas-export "
                                          "and nas-plot only read)")
                    url = f"sqlite:///{db}"  # a reading command writes nothing anyway
                if db and db != ":memory:":
                    check_sqlite_file(Path(db), url, key, create)
                    if create:
                        Path(db).parent.mkdir(parents=True, exist_ok=True)
                # The dashboard may read while the search writes: wait for the lock, not fail.
                kwargs = {"connect_args": {"timeout": 30}}
            storage = _open_rdb(url, kwargs, create, heartbeat)
        storage.get_all_studies()  # a probe: a journal file is only read here
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - drivers raise anything; the user needs one line
        raise ConfigError(f"{key}: cannot open {shown(url, 120)} ({one_line(e)})") from None
    return storage


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's heartbeat of an RDB storage: a worker whose trial has not beaten for
    ``grace_period`` seconds is taken for dead, wherever it runs.

    Attributes:
        interval: seconds between beats (``search.heartbeat_interval``).
        grace_period: seconds without a beat before a trial is stale (``search.grace_period``).
        on_stale: called with ``(study, trial)`` for each stale trial marked FAIL.
    """

    interval: int
    grace_period: int
    on_stale: Callable[[optuna.Study, Any], None] | None = None


# Workers that open a new storage together race to create its tables (Optuna's
# create_all and its alembic stamp are not atomic): the losers see "table ... already
# exists" or a duplicate alembic_version row, and a moment later the tables are there.
CREATE_TRIES = 8


def _open_rdb(url: str, engine_kwargs: dict[str, Any], create: bool,
              heartbeat: Heartbeat | None) -> BaseStorage:
    import sqlalchemy.exc

    beat: dict[str, Any] = {}
    if heartbeat is not None:
        beat = {"heartbeat_interval": heartbeat.interval, "grace_period": heartbeat.grace_period,
                "heartbeat_stale_trial_callback": heartbeat.on_stale}
    for attempt in range(CREATE_TRIES):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  skip_table_creation=not create, **beat)
        except sqlalchemy.exc.SQLAlchemyError as e:
            text = str(e)
            race = isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in text \
                or "database is locked" in text
            if not (create and race) or attempt == CREATE_TRIES - 1:
                raise
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
    raise AssertionError("unreachable")


def _open_journal(path: Path, url: str, key: str, create: bool) -> BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

    if path.is_dir():
        raise ConfigError(f"{key}: {shown(url, 120)} is a directory; a journal storage is a file")
    not_a_file(path, url, key)
    if path.exists():
        if check_journal_file(path, url, key) == "torn":
            drop_torn_record(path, key)
    elif not create:
        raise ConfigError(f"{key}: {shown(url, 120)} does not exist; give the journal file of a search "
                          "or an SQLAlchemy URL (sqlite:///outputs/nas.db)")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    lock = Path(f"{path}.lock")
    try:
        if time.time() - lock.lstat().st_mtime > STALE_LOCK_S:
            lock.unlink()
    except FileNotFoundError:
        pass
    backend = JournalFileBackend(str(path), lock_obj=JournalFileSymlinkLock(
        str(path), grace_period=STALE_LOCK_S))
    return JournalStorage(backend)


@contextlib.contextmanager
def damaged_storage_is_refused(url: str, key: str) -> Iterator[None]:
    """A storage that breaks while being read (a corrupt SQLite page) as one line.

    Optuna reports it as ``StorageInternalError`` with SQLAlchemy's long message;
    nothing is written to a storage that cannot be read, so this is all there is to do.
    """
    try:
        yield
    except optuna.exceptions.StorageInternalError as e:
        if disk_full(e) is not None:  # not damaged: the command's edge reports a full disk
            raise
        cause = [clip(line, 160) for line in str(e.__cause__ or e)[:2000].strip().splitlines()] \
            or [type(e).__name__]
        raise ConfigError(f"{key}: {shown(url, 120)} cannot be read ({cause[0]}); it may be damaged: "
                          "restore it from a copy") from None


# The engines fast_sqlite has set up (the listeners are added once per engine).
_FAST_ENGINES: weakref.WeakSet[Any] = weakref.WeakSet()


def fast_sqlite(storage: BaseStorage) -> None:
    """WAL journal with ``synchronous=NORMAL`` on every connection of an SQLite storage.

    Switching a database to WAL writes to its file, so :func:`open_study` does it only
    once every check has passed: a refused command leaves the file as it was.

    Optuna commits once per suggested parameter and attribute, about 25 times a
    trial; with SQLite's default (a rollback journal, fsync on every commit) that costs
    more than scoring a tiny architecture. In WAL mode a commit is an append to the
    log, and a process killed at any point (Ctrl-C, kill -9) still loses no committed
    trial; only a power cut may lose the last few. WAL also lets the dashboard read
    while the search writes.

    Every transaction also takes the write lock as it begins (``BEGIN IMMEDIATE``). The
    driver would otherwise read outside any transaction and lock only at the first
    write, so two workers could both read a trial as WAITING (or RUNNING) and both claim
    (or fail) it: Optuna's ``SELECT ... FOR UPDATE`` means nothing to SQLite. The
    transactions of several workers now run one after another, as on PostgreSQL.
    """
    from sqlalchemy import event

    if not isinstance(storage, optuna.storages.RDBStorage) or storage.engine.name != "sqlite" \
            or storage.engine in _FAST_ENGINES:
        return
    _FAST_ENGINES.add(storage.engine)

    def pragmas(dbapi_conn: Any, _record: Any) -> None:
        # Transactions are begun by `begin` below, not implicitly by the driver.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    def begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(storage.engine, "connect", pragmas)
    event.listen(storage.engine, "begin", begin)
    storage.engine.dispose()  # connections opened while creating the tables lack the pragmas
