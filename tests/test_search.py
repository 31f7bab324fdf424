"""The search end to end: the command, cheap-objective-first, resume, kill -9 and Ctrl-C."""
from __future__ import annotations

import math
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from nas.model import build_model
from nas.search.trial import n_params
from nas.search.study import named_constraints
from nas.space import ArchConfig
from nas.search.objectives import DEFAULT as METRICS
from helpers import (FAST_SCORE, budget_between, cli_env, run_cli, search_cmd,
                            search_in_process)



def _complete(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=url)
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_command_end_to_end(tmp_path, tiny_space, tiny_table, tiny_supernet):
    budget = budget_between(tiny_table, tiny_space, 0.4)
    url = f"sqlite:///{tmp_path}/nas.db"
    r = run_cli(search_cmd(f"search.storage={url}", "search.study_name=e2e", "search.n_trials=12",
                           f"search.latency_budget_ms={budget}", f"supernet.checkpoint={tiny_supernet}",
                           "search.progress=false", *FAST_SCORE), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "outputs" / "e2e"
    for name in ("pareto.csv", "trials.csv", "pareto.png", "config.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert str(out / "pareto.csv") in r.stdout and "winner" in r.stdout
    assert "Pareto front" in r.stdout and "optuna-dashboard" in r.stdout
    # Hydra's job log holds the run: every trial (file only) and the summary (both).
    log = (out / "search.log").read_text()
    assert all(f"trial {n} COMPLETE" in log for n in range(12)) and "Pareto front" in log
    assert "trial 0 COMPLETE" not in r.stdout
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == 12
    assert trials["baseline"].sum() == 1  # nanoGPT's CPU recipe, enqueued as the reference
    winners = list(out.glob("winner_*.yaml"))
    assert len(winners) == 1
    arch = ArchConfig.from_yaml(winners[0])
    assert tiny_table.predict_ms(arch) <= budget
    build_model(arch)  # the export is a config build_model accepts as it is


def test_over_budget_trials_are_never_scored(tmp_path, tiny_space, tiny_table, tiny_scorer_factory):
    scorer = tiny_scorer_factory()
    budget = budget_between(tiny_table, tiny_space, 0.3)
    url = f"sqlite:///{tmp_path}/nas.db"
    res = search_in_process(tiny_space, tiny_table, scorer, url, "cheap-first", 24, budget)
    trials = res.study.get_trials(states=(TrialState.COMPLETE,))
    over_ms = {t.number: named_constraints(res.study.user_attrs, t)["latency_over_budget_ms"]
               for t in trials}
    over = [t for t in trials if over_ms[t.number] > 0]
    within = [t for t in trials if over_ms[t.number] <= 0]
    assert over and within
    for t in over:
        assert t.values[1] > budget
        assert math.isinf(t.values[0])  # over budget: never a "best" trial, whoever ranks them
        if t.user_attrs.get("baseline"):  # the reference is scored, for the plot and the summary
            assert t.user_attrs["reference_val_loss"] == pytest.approx(
                scorer.cache[t.user_attrs["arch_id"]])
            continue
        assert t.user_attrs["scored"] is False
        assert t.user_attrs["arch_id"] not in scorer.cache
    for t in within:
        assert t.user_attrs["scored"] is True
        assert t.values[0] == pytest.approx(scorer.cache[t.user_attrs["arch_id"]])
    scored = [t for t in trials if t.user_attrs["scored"]]
    assert scorer.n_calls == len(scored)
    assert {t.number for t in res.study.best_trials} <= {t.number for t in within}


def test_trials_record_what_they_are(finished_study, tiny_space, tiny_table):
    url, name, budget = finished_study
    study = optuna.load_study(study_name=name, storage=url)
    assert study.metric_names == list(METRICS)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.user_attrs["latency_budget_ms"] == budget
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 16
    for t in trials:
        arch = ArchConfig.from_dict(t.user_attrs["arch"])
        assert t.user_attrs["arch_id"] == arch.arch_id
        assert t.user_attrs["params"] == n_params(arch)
        assert t.user_attrs["table_fingerprint"] == tiny_table.fingerprint
        assert t.values[1] == pytest.approx(tiny_table.predict_ms(arch))
    first = study.trials[0]
    assert first.user_attrs["baseline"] is True
    assert ArchConfig.from_dict(first.user_attrs["arch"]) == tiny_space.baseline_arch("fp32")


@pytest.mark.parametrize("arch_fn", ["smallest", "largest", "baseline_arch"])
def test_param_count_matches_the_built_model(tiny_space, arch_fn):
    arch = getattr(tiny_space, arch_fn)()
    assert n_params(arch) == build_model(arch).num_params()


def test_rerun_resumes_to_n_trials_in_total(tmp_path, tiny_space, tiny_table, tiny_scorer_factory):
    url = f"sqlite:///{tmp_path}/nas.db"
    budget = budget_between(tiny_table, tiny_space, 0.4)
    first = search_in_process(tiny_space, tiny_table, tiny_scorer_factory(), url, "again", 6, budget)
    before = {t.number: t.values for t in _complete(url, "again")}
    assert first.new_trials == 6 and len(before) == 6
    second = search_in_process(tiny_space, tiny_table, tiny_scorer_factory(), url, "again", 10, budget)
    after = {t.number: t.values for t in _complete(url, "again")}
    assert second.new_trials == 4 and len(after) == 10
    assert all(after[n] == v for n, v in before.items())
    third = search_in_process(tiny_space, tiny_table, tiny_scorer_factory(), url, "again", 10, budget)
    assert third.new_trials == 0
    baselines = [t for t in third.study.trials if t.user_attrs.get("baseline")]
    assert len(baselines) == 1  # enqueued once, not on every resume


def _count(db: Path, state: str) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT count(*) FROM trials WHERE state = ?", (state,)).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _claimed_running(db: Path) -> int:
    """RUNNING trials that say which process runs them (nas.search.study.fail_dead_trials)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        return con.execute("SELECT count(*) FROM trials t JOIN trial_user_attributes a "
                           "USING (trial_id) WHERE t.state = 'RUNNING' AND a.key = 'worker'"
                           ).fetchone()[0]


def _start(cmd: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(db: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while _count(db, "COMPLETE") < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "search too slow"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_and_kill_9_lose_no_completed_trial(tmp_path, tiny_space, tiny_table, tiny_supernet):
    db = tmp_path / "nas.db"
    budget = budget_between(tiny_table, tiny_space, 0.6)
    cmd = search_cmd(f"search.storage=sqlite:///{db}", "search.study_name=killed",
                     "search.n_trials=20", f"search.latency_budget_ms={budget}",
                     f"supernet.checkpoint={tiny_supernet}", "search.progress=false",
                     "score.n_batches=2", "score.batch_size=8")

    proc = _start(cmd, tmp_path)  # Ctrl-C
    _wait_for(db, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "re-run the same command" in err

    proc = _start(cmd, tmp_path)  # kill -9, in the middle of a trial (one that has started)
    _wait_for(db, _count(db, "COMPLETE") + 2, proc)
    while _claimed_running(db) == 0 and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    url = f"sqlite:///{db}"
    killed = {t.number: t.values for t in _complete(url, "killed")}
    assert 4 <= len(killed) < 20

    r = run_cli(cmd, tmp_path)  # the same command resumes
    assert r.returncode == 0, r.stderr
    done = {t.number: t.values for t in _complete(url, "killed")}
    assert len(done) == 20
    assert all(done[n] == v for n, v in killed.items())
    study = optuna.load_study(study_name="killed", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # the killed one is marked FAIL
    # The killed trial; the Ctrl-C'ed one too unless Ctrl-C came between two trials.
    assert len(study.get_trials(states=(TrialState.FAIL,))) >= 1
