"""Many workers, one study: the shared trial budget, dead workers, stops, creation races.

The three-worker test runs the command as a user would (``python -m nas.search`` started
three times on one study) on a real PostgreSQL server, on the journal file and on SQLite,
and kills one worker with kill -9 in the middle of a trial.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.budget import Surplus, TrialBudget
from nas.search.storage import Heartbeat, open_storage
from nas.search.study import open_study
from nas.search.workers import (MAX_RETRIES, REASON_ATTR, RETRY_REASON_ATTR, WORKER_ATTR,
                                enqueue_once, fail_dead_trials, requeue, requeue_stale)
from helpers import ROOT, cli_env, search_cmd


ATTRS = {"space": {"name": "tiny"}, "device": "cpu"}
N_TRIALS = 30


_opened: dict[str, optuna.storages.BaseStorage] = {}


def _study(url: str, name: str = "w") -> optuna.Study | None:
    try:
        # Opened once: the watcher must look often enough to catch a trial running.
        storage = _opened.get(url) or _opened.setdefault(url, open_storage(url, create=False))
        return optuna.load_study(study_name=name, storage=storage)
    except Exception:  # noqa: BLE001 - not made yet (no file, no tables, no study)
        return None


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    study = _study(url)
    return [] if study is None else study.get_trials(deepcopy=False)


def _of(trials, state):
    return [t for t in trials if t.state == state]


def _worker_cmd(url: str, ckpt, *extra: str) -> list[str]:
    # Scoring two batches of eight windows: cheap, and still a trial can be caught running.
    return search_cmd(f"search.storage={url}", "search.study_name=w", f"search.n_trials={N_TRIALS}",
                      f"supernet.checkpoint={ckpt}", "search.progress=false", "score.n_batches=2",
                      "score.batch_size=8", "search.heartbeat_interval=1", "search.grace_period=3",
                      *extra)


def _running_worker(url: str, procs: dict[int, subprocess.Popen]) -> int | None:
    """The pid of one of ``procs`` that runs a trial (with parameters), if any."""
    for t in _of(_trials(url), TrialState.RUNNING):
        worker = t.user_attrs.get(WORKER_ATTR, "")
        pid = int(worker.rpartition(":")[2]) if worker.startswith(socket.gethostname() + ":") else -1
        if pid in procs and procs[pid].poll() is None and t.params:
            return pid
    return None


def _stop_in_a_trial(url: str, pid: int) -> int | None:
    """Freeze ``pid``; the number of the trial it is in the middle of, or None (it is let go)."""
    os.kill(pid, signal.SIGSTOP)
    mine = [t.number for t in _of(_trials(url), TrialState.RUNNING)
            if t.user_attrs.get(WORKER_ATTR) == f"{socket.gethostname()}:{pid}" and t.params]
    if not mine:  # it finished that trial before it froze: try again later
        os.kill(pid, signal.SIGCONT)
        return None
    return mine[0]


@pytest.fixture(params=["postgresql", "journal", "sqlite"])
def storage_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    if request.param == "journal":
        return str(tmp_path / "nas.journal")
    return f"sqlite:///{tmp_path}/nas.db"


@pytest.mark.slow
def test_three_workers_run_n_trials_in_total_and_survive_kill_9(storage_url, tmp_path, tiny_supernet):
    cmd = _worker_cmd(storage_url, tiny_supernet)
    procs = {}
    for _ in range(3):  # at once, on a storage none of them has made yet
        p = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        procs[p.pid] = p
    try:
        t0, killed_number = time.time(), None
        while killed_number is None:
            assert time.time() - t0 < 240, "no trial was caught running"
            trials = _trials(storage_url)
            assert len(_of(trials, TrialState.COMPLETE)) < N_TRIALS, "finished before a kill"
            pid = _running_worker(storage_url, procs) if len(trials) > 5 else None
            if pid is not None:
                killed_number = _stop_in_a_trial(storage_url, pid)
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)  # in the middle of trial killed_number
        procs[pid].wait()
        before = {t.number: t.values for t in _of(_trials(storage_url), TrialState.COMPLETE)}
        outs = {p: procs[p].communicate(timeout=240) for p in procs if p != pid}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in outs.items():
        assert procs[p].returncode == 0, err
        assert "Traceback" not in err

    trials = _trials(storage_url)
    complete = _of(trials, TrialState.COMPLETE)
    assert len(complete) == N_TRIALS
    assert not _of(trials, TrialState.RUNNING)
    assert not _of(trials, TrialState.WAITING)
    # Nothing lost: what was done stays done, and the killed architecture is run again.
    after = {t.number: t.values for t in complete}
    assert all(after[n] == v for n, v in before.items())
    killed = next(t for t in trials if t.number == killed_number)
    assert killed.state == TrialState.FAIL
    assert f":{pid} ended while running it" in killed.user_attrs[REASON_ATTR]
    assert any(t.user_attrs.get("retry_of") == killed_number for t in complete)
    # No architecture measured twice beyond chance draws of the random first generation.
    ids = [t.user_attrs["arch_id"] for t in complete]
    assert len(ids) - len(set(ids)) <= 2
    assert sum(bool(t.user_attrs.get("baseline")) for t in complete) == 1


@pytest.mark.slow
def test_sigterm_fails_the_running_trial_with_a_reason(tmp_path, tiny_supernet):
    url = f"sqlite:///{tmp_path}/nas.db"
    # Full scoring: a trial lasts long enough to be stopped in the middle.
    cmd = _worker_cmd(url, tiny_supernet, "score.n_batches=16", "score.batch_size=32")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    t0, number = time.time(), None
    while number is None:
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()
        if _running_worker(url, {proc.pid: proc}) is not None:
            number = _stop_in_a_trial(url, proc.pid)
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    os.kill(proc.pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    trials = _trials(url)
    assert not _of(trials, TrialState.RUNNING)
    stopped = next(t for t in trials if t.number == number)
    assert stopped.state == TrialState.FAIL
    assert stopped.user_attrs[REASON_ATTR] == f"stopped by SIGTERM (worker {socket.gethostname()}:{proc.pid})"
    retry = _of(trials, TrialState.WAITING)  # queued for whoever runs the study next
    assert [t.user_attrs["retry_of"] for t in retry] == [number]


@pytest.mark.slow
def test_workers_creating_one_study_at_once_do_not_crash(tmp_path):
    """Four processes open a new SQLite file and create the same study at the same moment."""
    url = f"sqlite:///{tmp_path}/new.db"
    code = ("import optuna, sys; from nas.search.storage import open_storage; "
            "from nas.search.study import open_study; from nas.search.workers import enqueue_once; "
            "s = open_study(open_storage(sys.argv[1]), 'race', optuna.samplers.RandomSampler(), "
            "{'space': {'name': 'tiny'}}, sys.argv[1]); enqueue_once(s, {'x': 1}, {'baseline': True})")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], cwd=ROOT, env=cli_env(),
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    storage = open_storage(url, create=False)
    assert [s.study_name for s in storage.get_all_studies()] == ["race"]
    study = optuna.load_study(study_name="race", storage=storage)
    assert len(_of(study.trials, TrialState.WAITING)) == 1  # later copies withdrawn


# --- in one process -------------------------------------------------------------------

def _new(tmp_path, n_trials: int, heartbeat: Heartbeat | None = None):
    url = f"sqlite:///{tmp_path}/nas.db"
    study = open_study(open_storage(url, heartbeat=heartbeat), "s",
                       optuna.samplers.RandomSampler(seed=0), ATTRS, url)
    return study, TrialBudget(study, n_trials, poll_s=0.05)


def _complete(study, n: int) -> None:
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=n)


def test_the_last_place_goes_to_the_earlier_trial(tmp_path):
    study, budget = _new(tmp_path, 3)
    _complete(study, 2)
    first, second = study.ask(), study.ask()  # two workers passed the check together
    budget.claim(first)
    with pytest.raises(Surplus):
        budget.claim(second)
    assert study.get_trials()[-1].user_attrs[REASON_ATTR].startswith("not run: search.n_trials=3")


def test_a_worker_waits_for_running_trials_that_could_fill_the_budget(tmp_path):
    study, budget = _new(tmp_path, 2)
    _complete(study, 1)
    other = study.ask()
    other.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:1")  # a live process
    waited = {}

    def finish_later():
        time.sleep(0.3)
        waited["at"] = time.time()
        study.tell(other, (0.5, 1.0))

    import threading
    threading.Thread(target=finish_later).start()
    assert budget.next_trial() is False  # the other trial filled it: nothing left to run
    assert "at" in waited and budget.complete == 2


def test_a_dead_workers_trial_frees_its_place_and_is_queued_again(tmp_path):
    study, budget = _new(tmp_path, 2)
    _complete(study, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    t = study.ask()
    t.suggest_float("x", 0, 1)
    t.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{dead}")
    assert budget.next_trial() is True
    failed = study.trials[t.number]
    assert failed.state == TrialState.FAIL and "ended while running it" in failed.user_attrs[REASON_ATTR]
    [retry] = _of(study.trials, TrialState.WAITING)
    assert retry.user_attrs["retry_of"] == t.number
    assert retry.system_attrs["fixed_params"] == failed.params


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_silent_worker_on_another_host_is_failed_after_the_grace_period(tmp_path):
    study, budget = _new(tmp_path, 5, Heartbeat(interval=1, grace_period=1, on_stale=requeue_stale))
    t = study.ask()
    t.suggest_float("x", 0, 1)
    t.set_user_attr(WORKER_ATTR, "elsewhere:123")  # no process check possible from here
    study.storage.record_heartbeat(study.trial_id(t.number))
    assert fail_dead_trials(study) == []
    time.sleep(2.2)
    assert fail_dead_trials(study) == [t.number]
    assert study.trials[t.number].state == TrialState.FAIL
    [retry] = _of(study.trials, TrialState.WAITING)  # Optuna failed it; the copy says why
    assert retry.user_attrs["retry_of"] == t.number
    assert retry.user_attrs[RETRY_REASON_ATTR] == "its worker elsewhere:123 stopped sending heartbeats"


def test_an_architecture_that_keeps_killing_its_worker_is_not_queued_forever(tmp_path):
    study, _ = _new(tmp_path, 5)
    runs, queued = 0, True
    while queued:
        t = study.ask()  # the first time a new trial, then the queued copy
        x = t.suggest_float("x", 0, 1)
        study.tell(t, state=TrialState.FAIL)  # its worker died
        runs += 1
        requeue(study, study.trials[t.number])
        queued = bool(_of(study.trials, TrialState.WAITING))
    assert runs == 1 + MAX_RETRIES
    assert {tr.params["x"] for tr in study.trials} == {x}  # the same architecture each time


def test_a_trial_killed_halfway_is_queued_with_what_it_was_given_and_had_drawn(tmp_path):
    study, _ = _new(tmp_path, 5)
    dist = optuna.distributions.FloatDistribution(0, 1)
    study.add_trial(optuna.trial.create_trial(params={"x": 0.25, "y": 0.5}, values=[1.0, 1.0],
                                              distributions={"x": dist, "y": dist}))
    half = study.ask()
    half.suggest_float("x", 0, 1)  # killed before drawing y
    study.tell(half, state=TrialState.FAIL)
    requeue(study, study.trials[half.number])
    assert enqueue_once(study, {"x": 0.5, "y": 0.5}, {"baseline": True})
    study.ask()  # a worker takes the queued copy of the half trial
    ref = study.ask()  # and another the reference
    ref.suggest_float("x", 0, 1)  # killed after drawing x of the reference
    study.tell(ref, state=TrialState.FAIL)
    requeue(study, study.trials[ref.number])
    [again] = _of(study.trials, TrialState.WAITING)
    assert again.system_attrs["fixed_params"] == {"x": 0.5, "y": 0.5}  # the whole reference
    assert again.user_attrs["baseline"] is True
    copy_of_half = next(t for t in study.trials if t.user_attrs.get("retry_of") == half.number)
    assert copy_of_half.system_attrs["fixed_params"] == {"x": study.trials[half.number].params["x"]}
