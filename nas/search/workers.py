"""Many workers on one study: who runs which trial, and what a dead worker leaves behind.

Any number of ``python -m nas.search`` processes may run one study (the same
``search.study_name`` and ``search.storage``), on one host or several. Each trial records
its worker (``host:pid``) first thing. A RUNNING trial whose worker is gone cannot finish:
:func:`fail_dead_trials` marks it FAIL, says why in its ``fail_reason`` attribute and
queues its architecture again (:func:`requeue`), so another worker measures it. A worker is
known to be gone when

- it ran on this host and its process no longer exists (kill -9, a crash): seen at once;
- on a database server (PostgreSQL, MySQL), it stopped sending heartbeats for
  ``search.grace_period`` seconds: seen from any host, by Optuna's
  ``optuna.storages.fail_stale_trials``, whose callback queues it again with the reason
  (``retry_reason``). SQLite and the journal file serve the workers of one host and beat
  none (:func:`open_worker_storage`).

The shared trial budget is :mod:`nas.search.budget`.
"""
from __future__ import annotations

import contextlib
import datetime
import warnings
import fcntl
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Mapping

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from nas.search.storage import Heartbeat, open_storage
from nas.search.study import SharedStudy

WORKER_ATTR = "worker"
REASON_ATTR = "fail_reason"
# On a trial queued again: why the trial it repeats did not finish.
RETRY_REASON_ATTR = "retry_reason"
# A RUNNING trial that has not said which process runs it is stale after this long. A
# live process claims its trial milliseconds after creating it (nas.search.trial); a
# trial left unclaimed comes from a process killed in between.
UNCLAIMED_GRACE_S = 30.0
# An architecture whose trial died this many times is not queued again: it may be what
# kills its worker (out of memory).
MAX_RETRIES = 2


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
    return int(pid) != os.getpid() and not _zombie(int(pid))


def _zombie(pid: int) -> bool:
    """A killed process that its parent has not reaped yet still answers os.kill."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _why_dead(t: FrozenTrial, now: datetime.datetime) -> str | None:
    worker = t.user_attrs.get(WORKER_ATTR)
    alive = None if worker is None else _worker_alive(worker)
    if alive is False:
        return f"its worker {worker} ended while running it (killed, crashed or stopped)"
    if worker is None and (now - (t.datetime_start or now)).total_seconds() > UNCLAIMED_GRACE_S:
        return "its worker ended before claiming it"
    return None


def fail_trial(study: SharedStudy, number: int, reason: str) -> bool:
    """Mark the RUNNING trial ``number`` FAIL with ``reason``; False when another process did first."""
    storage, trial_id = study.storage, study.trial_id(number)
    try:
        storage.set_trial_user_attr(trial_id, REASON_ATTR, reason)
        return storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def _beats(study: SharedStudy) -> bool:
    return isinstance(study.storage, RDBStorage) and study.storage.get_heartbeat_interval() is not None


def fail_dead_trials(study: SharedStudy, running: list[FrozenTrial] | None = None) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is gone, and queue them again.

    Several workers may look at once: a trial is failed, and queued, by one of them.

    Args:
        study: the study.
        running: its RUNNING trials, if just read (default: read them).

    Returns:
        The numbers of the trials this call marked FAIL.
    """
    if running is None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return []
    now = datetime.datetime.now()
    failed = []
    for t in running:
        why = _why_dead(t, now)
        if why is not None and fail_trial(study, t.number, why):
            failed.append(t.number)
            requeue(study, t, why)
    left = {t.number for t in running} - set(failed)
    if left and _beats(study):
        # Optuna fails the trials whose heartbeat stopped and calls the storage's stale
        # callback (requeue_stale) on each (Optuna's optimize would do it next anyway).
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        now_failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        failed += sorted(t.number for t in now_failed if t.number in left)
    return failed


def requeue(study: SharedStudy, trial: FrozenTrial, reason: str | None = None) -> None:
    """Queue the architecture of a trial that could not finish, for any worker to run.

    Args:
        study: the study.
        trial: the trial (FAIL, or about to be).
        reason: why it did not finish, written on the queued copy (``retry_reason``).
    """
    retries = int(trial.user_attrs.get("retries", 0))
    # What it was given (a queued trial: the whole genome) and what it had drawn so far.
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    if not params or retries >= MAX_RETRIES:
        return
    attrs: dict[str, Any] = {"retry_of": trial.number, "retries": retries + 1}
    if reason is not None:
        attrs[RETRY_REASON_ATTR] = reason
    if trial.user_attrs.get("baseline"):
        attrs["baseline"] = True
    enqueue_once(study, params, attrs, besides=trial.number)  # it may still be RUNNING


def requeue_stale(study: SharedStudy, trial: FrozenTrial) -> None:
    """The stale-trial callback of an RDB storage's heartbeat: queue the trial again."""
    worker = trial.user_attrs.get(WORKER_ATTR) or "(unknown)"
    requeue(study, trial, f"its worker {worker} stopped sending heartbeats")


def enqueue_once(study: SharedStudy, params: Mapping[str, Any],
                 user_attrs: Mapping[str, Any] | None = None, besides: int | None = None) -> bool:
    """Enqueue ``params`` unless a trial with them exists (done, running or waiting).

    Unlike ``enqueue_trial(skip_if_exists=True)``, a trial that FAILed (its run was killed)
    does not count: the reference is tried again. Workers may enqueue the same parameters
    at the same moment (two starting together, or one starting while another queues a
    dead worker's trial again): the later copy is then withdrawn (marked FAIL).

    Args:
        study: the study.
        params: the parameters to run.
        user_attrs: written on the queued trial.
        besides: the number of a trial not to count (the one being queued again).

    Returns:
        Whether this call's copy is the one that stays.
    """
    if _copies(study, params, besides):
        return False
    me = worker_id()
    study.enqueue_trial(dict(params), user_attrs={**(user_attrs or {}), "enqueued_by": me})
    found = _copies(study, params, besides)
    mine = [t.number for t in found
            if t.user_attrs.get("enqueued_by") == me and t.state == TrialState.WAITING]
    if not mine or found[0].number == mine[0]:
        return True
    # Claiming a WAITING trial is atomic (Optuna's pop): a copy already popped runs.
    if study.storage.set_trial_state_values(study.trial_id(mine[0]), TrialState.RUNNING):
        fail_trial(study, mine[0], f"withdrawn: trial {found[0].number} has these parameters")
    return False


def _copies(study: SharedStudy, params: Mapping[str, Any],
            besides: int | None) -> list[FrozenTrial]:
    """Trials done, running or waiting with exactly ``params`` (given or drawn), oldest first.

    Exactly: a dead trial that had drawn only some genes is queued again even though
    finished trials share those genes.
    """
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING,
                                                      TrialState.WAITING)):
        if t.number == besides:
            continue
        if t.system_attrs.get("fixed_params", t.params) == dict(params):
            out.append(t)
    return sorted(out, key=lambda t: t.number)


def open_worker_storage(search: Any) -> BaseStorage:
    """``search.storage`` opened to run trials: a database server's storage (PostgreSQL,
    MySQL) beats a heartbeat for each running trial, and a stale trial's architecture is
    queued again.

    An SQLite file, like the journal file, serves the workers of one host, whose deaths
    the process check sees at once; there a heartbeat would only add a write per trial
    that contends for SQLite's single write lock (it doubled the storage time of a
    30-trial search of ``tiny``).

    Args:
        search: a ``SearchConfig`` (storage, heartbeat_interval, grace_period).
    """
    server = "://" in search.storage and not search.storage.startswith("sqlite")
    beat = Heartbeat(search.heartbeat_interval, search.grace_period, on_stale=requeue_stale)
    return open_storage(search.storage, heartbeat=beat if server else None)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder`` (made if missing) for this process while it writes there.

    Workers of one study end together and export into the same folder, and workers
    started together would train the same cached supernet: one at a time, each finds
    the other's finished files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor is closed
        yield
    finally:
        os.close(fd)
