"""Where studies live: creating or resuming a study, safely (storages: ``nas.search.storage``).

A storage is an SQLAlchemy URL (the default ``sqlite:///outputs/nas.db`` is one file
holding every study, so one dashboard command shows them all) or the path of an
Optuna journal file (anything without ``://``). Everything that could refuse a
search is checked before the first write, so a bad command leaves the storage as it
was.
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from nas.errors import ConfigError, clip, shown
from nas.search import objectives as objs
from nas.search.resume import SETTINGS, refuse_changed_settings
from nas.search.storage import damaged_storage_is_refused, fast_sqlite, open_storage  # noqa: F401 (imported from here)
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


def check_compatible(study: optuna.Study, attrs: Mapping[str, Any], where: str,
                     objectives: Sequence[str]) -> None:
    """Refuse to resume ``study`` when it measures something other than this search.

    Args:
        study: an existing study.
        attrs: the study attributes this search would write (see ``MUST_MATCH``).
        where: how to name the storage in messages.
        objectives: this search's objectives.

    Raises:
        ConfigError: other objectives; trials or attributes but none of the settings a
            search records (a study made by other code, never written to); or another
            setting of ``nas.search.resume.SETTINGS``.
    """
    name = study.study_name
    theirs = objs.of_study(study)
    if theirs is None:
        directions = [d.name.lower() for d in study.directions]
        have = ", ".join(f"{m} ({d})" for m, d in zip(study.metric_names or ["?"] * len(directions),
                                                      directions))
        raise ConfigError(
            f"search.study_name: study {shown(name, 80)} in {shown(where, 100)} has objectives "
            f"{clip(have, 120)}; this search needs "
            f"{', '.join(f'{m} (minimize)' for m in objectives)}; choose another search.study_name")
    if list(theirs) != list(objectives):
        raise ConfigError(
            f"search.objectives: [{','.join(objectives)}] differs from [{','.join(theirs)}] of study "
            f"{name!r} in {where}; resume it with search.objectives=[{','.join(theirs)}] or choose "
            "another search.study_name")
    stored = study.user_attrs
    trials = study.get_trials(deepcopy=False)
    if not stored and not trials:
        return  # created by a run that stopped before writing its attributes: nothing to take over
    if not any(k in stored for k in SETTINGS):
        # Its objectives have our names, but a search records its settings before its
        # first trial: this one was made by other code (plain Optuna), and stays as it is.
        raise ConfigError(
            f"search.study_name: study {shown(name, 80)} in {shown(where, 100)} was not made by "
            f"nas.search (it records no search settings{f', and has {len(trials)} trials' if trials else ''}); "
            "choose another search.study_name")
    refuse_changed_settings(name, where, stored, attrs)


def open_study(storage: BaseStorage, name: str, sampler: optuna.samplers.BaseSampler,
               attrs: Mapping[str, Any], where: str,
               objectives: Sequence[str] = objs.DEFAULT) -> optuna.Study:
    """Create the study ``name`` or resume it after :func:`check_compatible`.

    A new study gets ``objectives`` minimised, as its metric names, and ``attrs`` as
    user attributes (what the export and the plots read back from the storage alone).
    Workers starting together may all find no study: one creates it, the others load it.
    """
    study = find_study(storage, name, sampler)
    if study is not None:
        check_compatible(study, attrs, where, objectives)
    fast_sqlite(storage)
    if study is None:
        try:
            study = optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                        directions=["minimize"] * len(objectives))
        except optuna.exceptions.DuplicatedStudyError:  # another worker made it just now
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
            check_compatible(study, attrs, where, objectives)
    if study.metric_names is None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(objectives))
    stored = study.user_attrs
    for key, value in attrs.items():
        if key not in stored:
            study.set_user_attr(key, value)
    # A worker with other settings may have written some of them at the same moment.
    check_compatible(study, attrs, where, objectives)
    return study


def set_constraints(trial: optuna.Trial, constraints: Mapping[str, float]) -> None:
    """``trial.set_constraint(key, value)`` for each, also written in the list form the
    dashboard reads.

    Optuna reads both forms, so ``trial.constraints`` holds each value twice (under its
    key and under its place, ``"0"``, ``"1"``...): feasibility is the same, and NSGA-II's
    summed violation doubles for every trial alike, which keeps its order.
    """
    for key, value in constraints.items():
        trial.set_constraint(key, value)
    # No public trial id: Trial keeps it private, and set_system_attr is gone in Optuna 5.
    trial.storage.set_trial_system_attr(trial._trial_id, DASHBOARD_CONSTRAINTS_ATTR,
                                        list(constraints.values()))


def count_complete(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: COMPLETE ones, feasible or over budget."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

