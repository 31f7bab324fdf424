"""The fault matrix of storages: studies that are not ours, paths that are not files, a
full disk, a journal whose last record was cut off.

Everything runs in-process on the tiny space with a handful of trials: a foreign study
or a storage that cannot be one is refused before anything is written; a full disk ends
in one line and keeps every trial stored; a torn journal is cut back to its last whole
record (a copy kept) and the search resumes from it.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import warnings

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from helpers import search_in_process
from nas.errors import ConfigError, disk_full, exit_on_user_error
from nas.search.export import main as export_main
from nas.search.storage import damaged_storage_is_refused, open_storage


def _one_line(capsys, code: int, fn, *needles) -> str:
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(fn)()
    err = capsys.readouterr().err.strip()
    assert e.value.code == code and err.count("\n") == 0 and len(err) < 400, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def _complete(url: str, name: str) -> int:
    study = optuna.load_study(study_name=name, storage=open_storage(url, create=False))
    return len(study.get_trials(states=(TrialState.COMPLETE,)))


def test_a_foreign_study_is_refused_before_any_write(tmp_path, tiny_space, tiny_table,
                                                     tiny_scorer_factory, capsys):
    """Plain Optuna studies with our metric names, or none: refused with the search key to
    change, and left exactly as they were (trials, attributes, metric names)."""
    url = f"sqlite:///{tmp_path}/f.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        s = optuna.create_study(study_name="tiny-cpu", storage=url, directions=["minimize"] * 2)
        s.set_metric_names(["val_loss", "latency_ms"])
        s.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=3)
        optuna.create_study(study_name="bare", storage=url, directions=["minimize"] * 2).optimize(
            lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
        attrs = optuna.create_study(study_name="attrs", storage=url, directions=["minimize"] * 2)
        attrs.set_user_attr("owner", "someone else")
    dump = lambda: "\n".join(sqlite3.connect(f"{tmp_path}/f.db").iterdump())  # noqa: E731
    before = dump()
    for name in ("tiny-cpu", "bare", "attrs"):
        _one_line(capsys, 2, lambda: search_in_process(tiny_space, tiny_table, tiny_scorer_factory(),
                                                       url, name, 2, None),
                  "search.study_name", repr(name), "not made by nas.search")
    assert dump() == before


@pytest.mark.parametrize("create", [True, False], ids=["search", "reader"])
def test_storages_that_cannot_be_one(tmp_path, create):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "adir").mkdir()
    for url, needle in [("/dev/null", "not a regular file"), (str(fifo), "not a regular file"),
                        (f"sqlite:///{fifo}", "not a regular file"),
                        ("sqlite:////dev/null", "not a regular file"),
                        (str(tmp_path / "adir"), "directory"),
                        (f"sqlite:///{tmp_path}/adir", "directory"),
                        ("x" * 5000, "cannot open")]:
        with pytest.raises(ConfigError) as e:
            open_storage(url, create=create)
        msg = str(e.value)
        assert needle in msg and len(msg) < 400, msg
    ro = f"sqlite:///{tmp_path}/ro.db?mode=ro"
    if create:
        with pytest.raises(ConfigError, match="read-only"):
            open_storage(ro)
        assert not (tmp_path / "ro.db").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "fifo"]


def test_a_full_disk_ends_in_one_line_and_the_search_resumes(tmp_path, tiny_space, tiny_table,
                                                             tiny_scorer_factory, capsys,
                                                             monkeypatch):
    """The journal fills the disk in the middle of a record: one line, exit 1; once space
    is free, the same search cuts the torn record off (keeping a copy) and finishes."""
    journal = tmp_path / "j.log"
    run = lambda n: search_in_process(tiny_space, tiny_table, tiny_scorer_factory(),  # noqa: E731
                                      str(journal), "s", n, None)
    run(3)
    real = JournalFileBackend.append_logs

    def fills_the_disk(self, logs):
        with open(journal, "ab") as f:
            f.write(b'{"op_code": 5, "worker_id": "half a rec')
        raise OSError(errno.ENOSPC, "No space left on device", str(journal))

    monkeypatch.setattr(JournalFileBackend, "append_logs", fills_the_disk)
    _one_line(capsys, 1, lambda: run(6), "no space left", "j.log", "re-run the same command")
    monkeypatch.setattr(JournalFileBackend, "append_logs", real)
    assert not journal.read_bytes().endswith(b"\n")

    run(6)
    err = capsys.readouterr().err
    assert "last record was cut off" in err and "dropped it" in err
    backup, = tmp_path.glob("j.log.torn-*")
    assert backup.read_bytes().endswith(b"half a rec")
    assert _complete(str(journal), "s") == 6
    # An export of a torn journal is no longer refused for ever either.
    with open(journal, "ab") as f:
        f.write(b'{"op_code": 5, "wor')
    res = export_main(["--storage", str(journal), "--out", str(tmp_path / "out")])
    assert res.trials_csv.is_file() and len(list(tmp_path.glob("j.log.torn-*"))) == 2


def test_full_disk_errors_are_found_inside_other_errors(tmp_path, finished_study, capsys,
                                                        monkeypatch):
    import sqlalchemy.exc

    inner = sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database or disk is full"))
    try:
        try:
            raise inner
        except sqlalchemy.exc.OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised") from e
    except optuna.exceptions.StorageInternalError as wrapped:
        outer = wrapped
    assert disk_full(outer) == " (the SQLite storage)"
    assert disk_full(ValueError("x")) is None

    def storage_fills_up():
        with damaged_storage_is_refused("sqlite:///x.db", "search.storage"):  # not "damaged"
            raise outer
    _one_line(capsys, 1, storage_fills_up, "no space left", "SQLite")

    # An export that fills the disk: one line, and the files of the last export are kept.
    url, name, _ = finished_study
    out = tmp_path / "out"
    first = export_main(["--storage", url, "--out", str(out)])
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    import nas.search.export as export

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(export, "write_atomic", full)
    _one_line(capsys, 1, lambda: export_main(["--storage", url, "--out", str(out)]),
              "no space left", "trials.csv")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == kept
    assert first.winner.is_file()
