"""Where studies live: creating or resuming a study, safely (storages: ``nas.search.storage``).

A storage is an SQLAlchemy URL (the default ``sqlite:///outputs/nas.db`` is one file
holding every study, so one dashboard command shows them all) or the path of an
Optuna journal file (anything without ``://``). Everything that could refuse a
search is checked before the first write, so a bad command leaves the storage as it
was.
"""
from __future__ import annotations

import datetime
import os
import socket
import warnings
from typing import Any, Mapping

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from nas.errors import ConfigError
from nas.search.storage import damaged_storage_is_refused, fast_sqlite, open_storage  # noqa: F401 (imported from here)

METRICS = ("val_loss", "latency_ms")
DIRECTIONS = (StudyDirection.MINIMIZE, StudyDirection.MINIMIZE)
WORKER_ATTR = "worker"
# A RUNNING trial that has not said which process runs it is stale after this long. A
# live process claims its trial milliseconds after creating it (nas.search.objective); a trial
# left unclaimed comes from a process killed in between.
UNCLAIMED_GRACE_S = 30.0
# Study attributes that must match to resume: change any of them and earlier trials
# would measure something else.
MUST_MATCH = ("space", "device", "table_sha256", "latency_budget_ms", "supernet_sha256", "score")
# optuna-dashboard 0.21 reads a trial's constraints only from this system attribute (a
# list, Optuna's format before 5); Optuna 5's set_constraint writes "constraints:<key>".
DASHBOARD_CONSTRAINTS_ATTR = "constraints"


def study_names(storage: BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def find_study(storage: BaseStorage, name: str,
               sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study | None:
    """The study called ``name``, or None when there is none."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler)


def check_compatible(study: optuna.Study, attrs: Mapping[str, Any], where: str) -> None:
    """Refuse to resume ``study`` when it measures something other than this search.

    Args:
        study: an existing study.
        attrs: the study attributes this search would write (see ``MUST_MATCH``).
        where: how to name the storage in messages.

    Raises:
        ConfigError: other objectives, or another space, table, budget, supernet or scorer.
    """
    name = study.study_name
    directions = [d.name.lower() for d in study.directions]
    metrics = study.metric_names
    ours = [d.name.lower() for d in DIRECTIONS]
    if directions != ours or (metrics is not None and list(metrics) != list(METRICS)):
        have = ", ".join(f"{m} ({d})" for m, d in zip(metrics or ["?"] * len(directions), directions))
        raise ConfigError(
            f"search.study_name: study {name!r} in {where} has objectives {have}; this search needs "
            f"val_loss (minimize), latency_ms (minimize); choose another search.study_name")
    stored = study.user_attrs
    if metrics is None and not stored and not study.get_trials(deepcopy=False):
        return  # created by a run that stopped before writing its attributes
    for key in MUST_MATCH:
        if key in stored and key in attrs and stored[key] != attrs[key]:
            raise ConfigError(
                f"search.study_name: study {name!r} in {where} was made with another {key} "
                f"({_short(stored[key])} vs now {_short(attrs.get(key))}); resume it with the same "
                "settings or choose another search.study_name")


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def open_study(storage: BaseStorage, name: str, sampler: optuna.samplers.BaseSampler,
               attrs: Mapping[str, Any], where: str) -> optuna.Study:
    """Create the study ``name`` or resume it after :func:`check_compatible`.

    A new study gets both objectives minimised, their metric names and ``attrs`` as
    user attributes (what the export and the plots read back from the storage alone).
    """
    study = find_study(storage, name, sampler)
    if study is not None:
        check_compatible(study, attrs, where)
    fast_sqlite(storage)
    if study is None:
        study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                    directions=[d.name.lower() for d in DIRECTIONS])
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(METRICS))
    stored = study.user_attrs
    for key, value in attrs.items():
        if key not in stored:
            study.set_user_attr(key, value)
    return study


def set_constraint(trial: optuna.Trial, key: str, value: float) -> None:
    """``trial.set_constraint(key, value)``, also written in the list form the dashboard reads.

    Optuna reads both forms, so ``trial.constraints`` holds the value twice (under ``key``
    and under ``"0"``): feasibility is the same, and NSGA-II's summed violation doubles for
    every trial alike, which keeps its order.
    """
    trial.set_constraint(key, value)
    # No public trial id: Trial keeps it private, and set_system_attr is gone in Optuna 5.
    trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS_ATTR, [value])


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_alive(worker: str) -> bool | None:
    """True/False for a process of this host; None when it runs elsewhere."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Our own pid cannot be running an earlier trial: it was reused after a crash.
    return int(pid) != os.getpid()


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process is gone (killed with kill -9, a crash).

    Each trial records its worker (``host:pid``) first thing; a trial whose worker on
    this host no longer runs, or that never recorded one within ``UNCLAIMED_GRACE_S``,
    cannot finish. Trials of live processes, or of other hosts, are left alone.

    Returns:
        The numbers of the trials marked FAIL.
    """
    now = datetime.datetime.now()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get(WORKER_ATTR)
        if worker is None:
            started = t.datetime_start or now
            dead = (now - started).total_seconds() > UNCLAIMED_GRACE_S
        else:
            dead = _worker_alive(worker) is False
        if dead:
            study.tell(t.number, state=TrialState.FAIL)
            failed.append(t.number)
    return failed


def count_complete(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: COMPLETE ones, feasible or over budget."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def enqueue_once(study: optuna.Study, params: Mapping[str, Any],
                 user_attrs: Mapping[str, Any] | None = None) -> bool:
    """Enqueue ``params`` unless a trial with them exists (done, running or waiting)."""
    # Unlike enqueue_trial(skip_if_exists=True), a trial that FAILed (its run was killed)
    # does not count: the reference is tried again.
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                      TrialState.WAITING)):
        have = t.system_attrs.get("fixed_params", t.params)
        if all(have.get(k) == v for k, v in params.items()):
            return False
    study.enqueue_trial(dict(params), user_attrs=dict(user_attrs or {}))
    return True
