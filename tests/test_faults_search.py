"""The fault matrix of ``nas.search``, ``nas.search.export`` and ``nas.search.plot``.

Every case runs the command as a user would, in a folder holding finished studies, the
user's own files and the results of an earlier search. A bad input must end with exit
status 2 and one line on stderr that names the key or file (no traceback), and must leave
every file and folder there as it was: no study, output or user file changed, nothing
created. Refusals happen before any training, so each case takes a second or two.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import FAST_SCORE, TABLE, budget_between, cli_env, run_cli, search_in_process


SEARCH = [sys.executable, "-m", "nas.search"]
EXPORT = [sys.executable, "-m", "nas.search.export"]
PLOT = [sys.executable, "-m", "nas.search.plot"]


def _search_args(*overrides: str) -> list[str]:
    return [f"hardware.table={TABLE}", "supernet.checkpoint={ckpt}", "search.progress=false",
            "search.n_trials=4", *FAST_SCORE, *overrides]


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: its path -> a hash of its bytes ('dir' for a folder)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"link:{os.readlink(p)}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _corrupt_last_pages(db: Path, pages: int = 2) -> None:
    """Overwrite the last pages of an SQLite file (its header stays readable)."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    n = len(data) // page
    for p in range(max(1, n - pages), n):
        data[p * page + 8:(p + 1) * page] = b"\xab" * (page - 8)
    db.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_space, tiny_table, tiny_scorer_factory, tiny_supernet):
    """A user's folder: a finished search (journal, with its outputs), an SQLite storage of
    finished studies, one of studies that nas.search did not make, and the user's own files."""
    w = tmp_path_factory.mktemp("world")
    budget = budget_between(tiny_table, tiny_space, 0.4)
    args = [a.format(ckpt=tiny_supernet) for a in _search_args(
        "search.storage=study.log", "search.study_name=done", f"search.latency_budget_ms={budget}")]
    r = run_cli([*SEARCH, *args], cwd=w)
    assert r.returncode == 0, r.stderr
    assert (w / "outputs" / "done" / ".hydra" / "config.yaml").is_file()

    # Made here and copied whole (VACUUM INTO): this process keeps its connections open, and
    # a database it still holds in WAL mode would change under the commands' readers.
    scratch = tmp_path_factory.mktemp("scratch") / "nas.db"
    for name, n in (("done", 8), ("other", 4)):
        search_in_process(tiny_space, tiny_table, tiny_scorer_factory(), f"sqlite:///{scratch}",
                          name, n, budget)
    with sqlite3.connect(scratch) as con:
        con.execute(f"VACUUM INTO '{w / 'nas.db'}'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        url = f"sqlite:///{w}/foreign.db"
        optuna.create_study(study_name="empty", storage=url,
                            directions=["minimize", "minimize"]).set_metric_names(
                                ["val_loss", "latency_ms"])
        optuna.create_study(study_name="single", storage=url).optimize(
            lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        taken = optuna.create_study(study_name="taken", storage=url,
                                    directions=["minimize", "minimize"])
        taken.set_metric_names(["val_loss", "latency_ms"])  # our names, not our study
        taken.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=3)
        optuna.create_study(study_name="nonames", storage=url,
                            directions=["minimize", "minimize"]).optimize(
            lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    shutil.copy(w / "nas.db", w / "corrupt.db")
    _corrupt_last_pages(w / "corrupt.db")

    (w / "notes.txt").write_text("my notes\nwithout a final newline")
    (w / "one_line.txt").write_text("a single line, no newline")
    (w / "afile").write_text("a file where a folder is expected\n")
    (w / "adir").mkdir()
    con = sqlite3.connect(w / "mine.db")
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.execute("INSERT INTO mine VALUES (1)")
    con.commit()
    con.close()
    return w, budget, tiny_supernet


# (id, command, arguments, needles that the one line must hold)
CASES = [
    # --- nas.search: storages that are not ours are refused before anything is written
    ("search-text-no-newline", SEARCH, _search_args("search.storage=one_line.txt"),
     ["search.storage", "one_line.txt", "not an Optuna journal"]),
    ("search-text-file", SEARCH, _search_args("search.storage=notes.txt"),
     ["search.storage", "notes.txt", "not an Optuna journal"]),
    ("search-sqlite-not-optuna", SEARCH, _search_args("search.storage=sqlite:///mine.db"),
     ["search.storage", "mine.db", "without Optuna's tables"]),
    ("search-storage-folder", SEARCH, _search_args("search.storage=adir"),
     ["search.storage", "adir", "directory"]),
    ("search-storage-corrupt", SEARCH, _search_args("search.storage=sqlite:///corrupt.db",
                                                    "search.study_name=done",
                                                    "search.latency_budget_ms={budget}"),
     ["search.storage", "corrupt.db", "damaged"]),
    # --- nas.search: names, devices, seeds and folders
    ("search-foreign-study-same-metrics", SEARCH, _search_args("search.storage=sqlite:///foreign.db",
                                                               "search.study_name=taken"),
     ["search.study_name", "'taken'", "not made by nas.search", "another search.study_name"]),
    ("search-storage-dev-null", SEARCH, _search_args("search.storage=/dev/null"),
     ["search.storage", "/dev/null", "not a regular file"]),
    ("search-storage-read-only", SEARCH, _search_args("search.storage='sqlite:///nas.db?mode=ro'",
                                                      "search.study_name=done"),
     ["search.storage", "mode=ro", "read-only"]),
    ("search-study-name-too-long", SEARCH, _search_args("search.study_name=" + "x" * 300),
     ["search.study_name", "not allowed", "1 to 100"]),
    ("search-study-name-escapes", SEARCH, _search_args("search.study_name=../evil",
                                                       "search.storage=new.log"),
     ["search.study_name", "'../evil'", "letters, digits"]),
    ("search-refused-resume", SEARCH, _search_args("search.storage=study.log", "search.study_name=done",
                                                   "search.latency_budget_ms=9"),
     ["search.study_name", "'done'", "latency_budget_ms"]),
    ("search-resume-other-objectives", SEARCH, _search_args(
        "search.storage=study.log", "search.study_name=done", "search.latency_budget_ms={budget}",
        "search.objectives=[val_loss,latency_ms,params]"),
     ["search.objectives", "'done'", "search.objectives=[val_loss,latency_ms]"]),
    ("search-seed-negative", SEARCH, _search_args("search.seed=-1", "search.storage=new.log"),
     ["search.seed", "-1", "0 to 4294967295"]),
    ("search-seed-too-big", SEARCH, _search_args("search.seed=4294967296", "search.storage=new.log"),
     ["search.seed", "4294967296"]),
    ("search-run-dir-is-file", SEARCH, _search_args("hydra.run.dir=afile", "search.storage=new.log"),
     ["hydra.run.dir", "afile", "is a file"]),
    ("search-run-dir-under-file", SEARCH, _search_args("hydra.run.dir=afile/run",
                                                       "search.storage=new.log"),
     ["hydra.run.dir", "afile", "is a file"]),
    ("search-checkpoint-missing", SEARCH, _search_args("supernet.checkpoint=missing.pt",
                                                       "search.storage=new.db"),
     ["supernet.checkpoint", "missing.pt"]),
    ("search-sweep-bad-int", SEARCH, ["-m", *_search_args("search.n_trials=abc",
                                                          "search.storage=new.log")],
     ["search.n_trials", "'abc'", "integer"]),
    ("search-sweep-bad-job", SEARCH, ["-m", *_search_args("search.study_name=ok,../evil",
                                                          "search.storage=new.log")],
     ["search.study_name", "'../evil'"]),
    ("search-sweep-bad-seed", SEARCH, ["-m", *_search_args("search.seed=1,-1",
                                                           "search.storage=new.log")],
     ["search.seed", "-1"]),
    # --- nas.search.export: storages that do not exist are not created
    ("export-missing-journal", EXPORT, ["--storage", "typo.log"], ["--storage", "typo.log", "does not exist"]),
    ("export-missing-journal-folder", EXPORT, ["--storage", "sub/typo.log"],
     ["--storage", "sub/typo.log", "does not exist"]),
    ("export-missing-sqlite", EXPORT, ["--storage", "sqlite:///typo.db"],
     ["--storage", "typo.db", "does not exist"]),
    ("export-text-file", EXPORT, ["--storage", "one_line.txt"], ["--storage", "not an Optuna journal"]),
    ("export-sqlite-not-optuna", EXPORT, ["--storage", "sqlite:///mine.db"],
     ["--storage", "mine.db", "without Optuna's tables"]),
    ("export-corrupt", EXPORT, ["--storage", "sqlite:///corrupt.db", "--study", "done"],
     ["--storage", "corrupt.db", "cannot be read", "malformed"]),
    # --- nas.search.export: studies it cannot read
    ("export-empty-study", EXPORT, ["--storage", "sqlite:///foreign.db", "--study", "empty"],
     ["--study", "'empty'", "no finished trial"]),
    ("export-single-objective", EXPORT, ["--storage", "sqlite:///foreign.db", "--study", "single"],
     ["--study", "'single'", "val_loss, latency_ms"]),
    ("export-no-metric-names", EXPORT, ["--storage", "sqlite:///foreign.db", "--study", "nonames"],
     ["--study", "'nonames'", "without an architecture"]),
    ("export-unknown-study", EXPORT, ["--storage", "sqlite:///nas.db", "--study", "nope"],
     ["--study", "'nope'", "done", "other"]),
    ("export-which-study", EXPORT, ["--storage", "sqlite:///nas.db"], ["--study", "2 studies"]),
    # --- nas.search.export: options and output folders
    ("export-out-is-file", EXPORT, ["--storage", "study.log", "--out", "afile"],
     ["--out", "afile", "is a file"]),
    ("export-out-under-file", EXPORT, ["--storage", "study.log", "--out", "afile/x"],
     ["--out", "afile", "is a file"]),
    ("export-budget-negative", EXPORT, ["--storage", "study.log", "--budget-ms", "-1"],
     ["--budget-ms", "positive"]),
    ("export-unknown-option", EXPORT, ["--storage", "study.log", "--colour", "red"],
     ["--colour", "--help"]),
    # --- nas.search.plot
    ("plot-missing-journal", PLOT, ["--storage", "typo.log"], ["--storage", "typo.log", "does not exist"]),
    ("plot-missing-sqlite", PLOT, ["--storage", "sqlite:///sub/typo.db"],
     ["--storage", "typo.db", "does not exist"]),
    ("plot-text-file", PLOT, ["--storage", "notes.txt"], ["--storage", "notes.txt"]),
    ("plot-corrupt", PLOT, ["--storage", "sqlite:///corrupt.db", "--study", "done"],
     ["--storage", "corrupt.db", "cannot be read", "malformed"]),
    ("plot-empty-study", PLOT, ["--storage", "sqlite:///foreign.db", "--study", "empty"],
     ["--study", "'empty'", "no finished trial"]),
    ("plot-single-objective", PLOT, ["--storage", "sqlite:///foreign.db", "--study", "single"],
     ["--study", "'single'", "val_loss, latency_ms"]),
    ("plot-no-metric-names", PLOT, ["--storage", "sqlite:///foreign.db", "--study", "nonames"],
     ["--study", "'nonames'", "without an architecture"]),
    ("plot-bad-extension", PLOT, ["--storage", "study.log", "--out", "x.xyz"],
     ["--out", "'.xyz'", ".png, .pdf, .svg"]),
    ("plot-out-is-folder", PLOT, ["--storage", "study.log", "--out", "adir"],
     ["--out", "adir", "folder"]),
    ("plot-out-under-file", PLOT, ["--storage", "study.log", "--out", "afile/p.png"],
     ["--out", "afile", "is a file"]),
    ("plot-study-twice", PLOT, ["--storage", "sqlite:///nas.db", "--study", "done", "--study", "done"],
     ["--study", "twice"]),
    ("plot-unknown-option", PLOT, ["--storage", "study.log", "--size", "9"], ["--size", "--help"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("cmd, args, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_in_one_line_and_nothing_changed(world, cmd, args, needles):
    w, budget, ckpt = world
    before = _tree(w)
    r = run_cli([*cmd, *(a.format(ckpt=ckpt, budget=budget) for a in args)], cwd=w, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert _tree(w) == before


@pytest.mark.slow
def test_cuda_on_a_cpu_machine_is_refused_before_the_storage(world):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    w, _, ckpt = world
    before = _tree(w)
    r = run_cli([*SEARCH, *(a.format(ckpt=ckpt) for a in _search_args(
        "search.device=cuda", "search.storage=fresh.db"))], cwd=w)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: search.device: 'cuda'"), r.stderr
    assert _tree(w) == before  # no fresh.db, no outputs/<study>


@pytest.mark.slow
def test_plot_without_extension_prints_the_file_it_wrote(world, tmp_path):
    w, _, _ = world
    r = run_cli([*PLOT, "--storage", str(w / "study.log"), "--out", "t/p_noext"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    written = r.stdout.strip().removeprefix("plot: ")
    assert written == str(Path("t") / "p_noext.png")
    assert (tmp_path / written).stat().st_size > 0


def test_a_stale_journal_lock_does_not_stall(tmp_path):
    from nas.search.storage import open_storage
    from nas.search.storage_files import STALE_LOCK_S

    journal = tmp_path / "j.log"
    lock = tmp_path / "j.log.lock"
    os.symlink(journal, lock)  # what a process killed in the middle of an append leaves
    old = time.time() - 10 * STALE_LOCK_S
    os.utime(lock, (old, old), follow_symlinks=False)
    t0 = time.perf_counter()
    storage = open_storage(str(journal))
    optuna.create_study(storage=storage, study_name="s", directions=["minimize", "minimize"])
    assert time.perf_counter() - t0 < 5
    assert not lock.exists() and not lock.is_symlink()


# --- signals ----------------------------------------------------------------------------

def _count(db: Path, state: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = ?", (state,)).fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("signals, code, word", [
    ([signal.SIGTERM], 143, "stopped by SIGTERM"),
    ([signal.SIGINT, signal.SIGINT], 130, "stopped by Ctrl-C"),
], ids=["sigterm", "double-ctrl-c"])
def test_signals_end_a_search_cleanly(world, tmp_path, signals, code, word):
    _, budget, ckpt = world
    db = tmp_path / "nas.db"
    cmd = [*SEARCH, f"hardware.table={TABLE}", f"supernet.checkpoint={ckpt}", "search.progress=false",
           f"search.storage=sqlite:///{db}", "search.study_name=sig", "search.n_trials=500",
           f"search.latency_budget_ms={budget}", "score.n_batches=2", "score.batch_size=8"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while _count(db, "COMPLETE") < 3:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < 120, "search too slow"
        time.sleep(0.05)
    for s in signals:
        proc.send_signal(s)
        time.sleep(0.01)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err and word in err and "re-run the same command" in err
    study = optuna.load_study(study_name="sig", storage=f"sqlite:///{db}")
    assert not study.get_trials(states=(TrialState.RUNNING,))
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 3
