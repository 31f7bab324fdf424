"""Storages and studies: opening, refusing, resuming, cleaning up after a dead process."""
from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from nas.search import workers as workers_mod
from nas.errors import ConfigError
from nas.search.objectives import DEFAULT as METRICS
from nas.search.storage import open_storage
from nas.search.study import check_compatible, count_complete, open_study
from nas.search.workers import WORKER_ATTR, enqueue_once, fail_dead_trials

ATTRS = {"space": {"name": "tiny"}, "device": "cpu", "latency_budget_ms": 2.0}


def _sampler():
    return optuna.samplers.RandomSampler(seed=0)


def test_sqlite_storage_is_created_with_its_folder(tmp_path):
    url = f"sqlite:///{tmp_path}/a/b/nas.db"
    study = open_study(open_storage(url), "s", _sampler(), ATTRS, url)
    assert (tmp_path / "a" / "b" / "nas.db").is_file()
    assert study.metric_names == list(METRICS)
    assert study.user_attrs["latency_budget_ms"] == 2.0


def test_journal_file_storage(tmp_path):
    path = str(tmp_path / "nas.journal")
    study = open_study(open_storage(path), "j", _sampler(), ATTRS, path)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=2)
    again = optuna.load_study(study_name="j", storage=open_storage(path))
    assert count_complete(again) == 2 and again.metric_names == list(METRICS)


@pytest.mark.parametrize("url", ["sqlite:///{tmp}/notes.txt", "{tmp}/notes.txt", "nosuch://x/y",
                                 "sqlite:///{tmp}"])
def test_unopenable_storage_is_one_line_and_untouched(tmp_path, url):
    notes = tmp_path / "notes.txt"
    notes.write_text("just some text\n" * 50)
    before = notes.read_bytes()
    with pytest.raises(ConfigError) as e:
        open_storage(url.format(tmp=tmp_path))
    assert str(e.value).startswith("search.storage: ") and "\n" not in str(e.value)
    assert notes.read_bytes() == before


def test_resume_refuses_another_budget_or_objectives(tmp_path):
    url = f"sqlite:///{tmp_path}/nas.db"
    storage = open_storage(url)
    study = open_study(storage, "s", _sampler(), ATTRS, url)
    check_compatible(study, ATTRS, url, METRICS)
    check_compatible(study, {**ATTRS, "supernet_sha256": "new"}, url, METRICS)  # not stored yet: fine
    with pytest.raises(ConfigError, match="latency_budget_ms"):
        check_compatible(study, {**ATTRS, "latency_budget_ms": 3.0}, url, METRICS)
    single = optuna.create_study(study_name="one", storage=storage)
    with pytest.raises(ConfigError, match="this search needs val_loss"):
        check_compatible(single, ATTRS, url, METRICS)


def test_dead_workers_trials_are_failed_live_ones_kept(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/nas.db"
    study = open_study(open_storage(url), "s", _sampler(), ATTRS, url)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket
    t_dead, t_live, t_new = study.ask(), study.ask(), study.ask()
    t_dead.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{dead}")
    t_live.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:1")  # init: always alive
    assert fail_dead_trials(study) == [t_dead.number]
    states = {t.number: t.state for t in study.get_trials()}
    assert states[t_dead.number] == TrialState.FAIL
    assert states[t_live.number] == states[t_new.number] == TrialState.RUNNING
    # A trial that never said who runs it is stale only after a grace period.
    monkeypatch.setattr(workers_mod, "UNCLAIMED_GRACE_S", -1.0)
    assert fail_dead_trials(study) == [t_new.number]


def test_enqueue_once_retries_a_failed_reference(tmp_path):
    url = f"sqlite:///{tmp_path}/nas.db"
    study = open_study(open_storage(url), "s", _sampler(), ATTRS, url)
    assert enqueue_once(study, {"x": 0.5}, {"baseline": True})
    assert not enqueue_once(study, {"x": 0.5})
    t = study.ask()
    assert t.params == {} and t.user_attrs["baseline"] is True
    study.tell(t, state=TrialState.FAIL)
    assert enqueue_once(study, {"x": 0.5})
