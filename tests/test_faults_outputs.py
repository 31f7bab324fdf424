"""The fault matrix of where ``nas-export`` and ``nas-plot`` write.

A study's name, its architecture ids and the export's own record are read from files a
user (or anyone) can edit. Whatever they hold, everything is written inside the folder
asked for (``outputs/<study>`` or ``--out``), nothing is written through a link, and a
re-export removes only the files an earlier export wrote. Each case runs in-process on a
copy of one finished study, in a second or less.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
import yaml

from nas.search.export import MANIFEST
from nas.search.export import main as export_main
from nas.search.plot import main as plot_main


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if not p.is_symlink()}


@pytest.fixture
def world(tmp_path, finished_study, monkeypatch):
    """A fresh copy of the finished study in ``tmp/work/s.db`` (run from ``tmp/work``) and a
    victim folder of the user's files beside it."""
    url, name, _ = finished_study
    work = tmp_path / "work"
    work.mkdir()
    with sqlite3.connect(url[len("sqlite:///"):]) as con:
        con.execute(f"VACUUM INTO '{work / 's.db'}'")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "trials.csv").write_text("mine\n")
    (victim / "winner_mine.yaml").write_text("mine: 1\n")
    (victim / "pareto").mkdir()
    (victim / "pareto" / "00_mine.yaml").write_text("mine: 2\n")
    monkeypatch.chdir(work)
    return work, victim, f"sqlite:///{work / 's.db'}", name


def _sql(db: Path, query: str, *args) -> None:
    with sqlite3.connect(db) as con:
        con.execute(query, args)


def _refused(capsys, fn, argv, *needles):
    with pytest.raises(SystemExit) as e:
        fn(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and len(err) < 400, err
    for n in needles:
        assert n in err, err
    return err


def test_stored_study_names_never_leave_outputs(world):
    """Renamed to an absolute path, a relative escape, 300 characters, a control character:
    export and plot write one folder inside outputs/, and the victim folder is unchanged."""
    work, victim, url, _ = world
    before = _tree(victim)
    for name in (str(victim), "../victim", "../../" + "x" * 300, "a\nb", "..", "."):
        _sql(work / "s.db", "UPDATE studies SET study_name = ?", name)
        res = export_main(["--storage", url])
        out = plot_main(["--storage", url])
        for p in (res.trials_csv, res.winner, out, *res.pareto_yamls):
            rel = p.resolve().relative_to((work / "outputs").resolve())  # raises if outside
            assert len(rel.parts[0]) <= 100 and not rel.parts[0].startswith(".")
    assert _tree(victim) == before
    assert len(list((work / "outputs").iterdir())) == 6  # one folder per name, none shared


def test_hostile_arch_ids_stay_file_names(world):
    work, victim, url, _ = world
    _sql(work / "s.db", "UPDATE trial_user_attributes SET value_json = ? WHERE key = 'arch_id'",
         json.dumps("../../../victim/evil"))
    res = export_main(["--storage", url, "--out", "out"])
    for p in (res.winner, *res.pareto_yamls):
        assert p.resolve().parent in ((work / "out").resolve(), (work / "out" / "pareto").resolve())
    assert not (victim / "evil").exists()


def test_reexport_removes_only_its_own_files_and_what_if_keeps_the_winner(world):
    work, victim, url, name = world
    out = work / "out"
    out.mkdir()
    (out / "winner_mine.yaml").write_text("mine: 1\n")  # the user's, in the export's folder
    (out / "notes.yaml").write_text("mine: 3\n")
    first = export_main(["--storage", url, "--out", str(out)])
    fastest = float(yaml.safe_load(first.pareto_yamls[0].read_text())["meta"]["predicted_latency_ms"])
    what_if = export_main(["--storage", url, "--out", str(out), "--budget-ms", str(fastest + 1e-9)])
    assert first.winner.is_file() and what_if.winner.is_file() and first.winner != what_if.winner
    assert what_if.winner.name.startswith("winner-lat")
    again = export_main(["--storage", url, "--out", str(out)])  # the study's budgets again
    assert again.winner == first.winner and what_if.winner.is_file()
    assert (out / "winner_mine.yaml").read_text() == "mine: 1\n"
    assert (out / "notes.yaml").read_text() == "mine: 3\n"
    assert sorted(p.name for p in (out / "pareto").iterdir()) == sorted(
        p.name for p in again.pareto_yamls)
    # A record naming files outside the folder, or the user's, removes none of them.
    (out / MANIFEST).write_text(json.dumps({"pareto": ["../../victim/pareto/00_mine.yaml", "../notes.yaml"],
                                            "winners": {"": "../winner_mine.yaml",
                                                        "x": "/etc/passwd"}}))
    export_main(["--storage", url, "--out", str(out)])
    assert (out / "notes.yaml").is_file() and (victim / "pareto" / "00_mine.yaml").is_file()
    (out / MANIFEST).write_text("not json")
    export_main(["--storage", url, "--out", str(out)])
    assert (out / "winner_mine.yaml").is_file()


def test_links_are_not_written_through(world, capsys):
    work, victim, url, name = world
    before = _tree(victim)
    (work / "outputs").mkdir()
    os.symlink(victim, work / "outputs" / name)
    _refused(capsys, export_main, ["--storage", url], "--out", "symbolic link")
    _refused(capsys, plot_main, ["--storage", url], "--out", "symbolic link")
    out = work / "out"
    out.mkdir()
    os.symlink(victim / "pareto", out / "pareto")
    _refused(capsys, export_main, ["--storage", url, "--out", str(out)], "symbolic link")
    (out / "pareto").unlink()
    # A file that is a link is replaced by the export's file; its target is left alone.
    os.symlink(victim / "trials.csv", out / "trials.csv")
    export_main(["--storage", url, "--out", str(out)])
    assert not (out / "trials.csv").is_symlink()
    assert _tree(victim) == before


def test_hand_edited_trial_records_are_one_line(world, capsys):
    work, _, url, _ = world
    cases = [("arch", "null", "not a mapping"), ("arch", '"L2"', "not a mapping"),
             ("arch", json.dumps({"n_layer": 1, "d_model": 10 ** 6, "n_head": [1], "d_ff": [1]}),
              "d_model"),
             ("arch_id", "null", "arch_id"), ("params", '"many"', "params")]
    db = work / "s.db"
    where = "key = ? AND trial_id = (SELECT MIN(trial_id) FROM trials WHERE state = 'COMPLETE')"
    for key, value, needle in cases:
        with sqlite3.connect(db) as con:
            kept, = con.execute(f"SELECT value_json FROM trial_user_attributes WHERE {where}",
                                (key,)).fetchone()
        _sql(db, f"UPDATE trial_user_attributes SET value_json = ? WHERE {where}", value, key)
        _refused(capsys, export_main, ["--storage", url, "--out", "o"], "--study", "trial", needle)
        _sql(db, f"UPDATE trial_user_attributes SET value_json = ? WHERE {where}", kept, key)
    _sql(db, "UPDATE study_user_attributes SET value_json = ? WHERE key = 'budgets'", '{"latency_ms": -1}')
    _refused(capsys, export_main, ["--storage", url, "--out", "o"], "budgets", "edited storage")
