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
from optuna.trial import FrozenTrial, TrialState

from nas.errors import ConfigError, clip, shown
from nas.search import objectives as objs
from nas.search.storage import fast_sqlite
from nas.search.study_settings import SETTINGS, refuse_changed_settings
# The system attribute a sampler's ``constraints_func`` writes (a list, one value per
# constraint): Optuna's samplers and optuna-dashboard 0.21 both read it. Optuna 5's
# ``set_constraint`` writes "constraints:<key>", which the dashboard does not read.
CONSTRAINTS_ATTR = "constraints"


class SharedStudy(optuna.Study):
    """An Optuna study that keeps the storage it was opened on, for the workers sharing it.

    The workers write to trials other than their own (a dead worker's, a duplicate in
    the queue), which Optuna's storage API does by trial id; ``optuna.Study`` keeps its
    storage and ids to itself, so this study holds the storage it was given.

    Args:
        study_name: an existing study of ``storage``.
        storage: the storage opened by ``nas.search.storage.open_storage``.
        sampler: the sampler proposing its trials.
    """

    def __init__(self, study_name: str, storage: BaseStorage,
                 sampler: optuna.samplers.BaseSampler | None = None):
        super().__init__(study_name=study_name, storage=storage, sampler=sampler)
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study_name)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (numbers, like ids, grow in creation order)."""
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)


def study_names(storage: BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def find_study(storage: BaseStorage, name: str,
               sampler: optuna.samplers.BaseSampler | None = None) -> SharedStudy | None:
    """The study called ``name``, or None when there is none."""
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return SharedStudy(name, storage, sampler)


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
            setting of ``nas.search.study_settings.SETTINGS``.
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
               objectives: Sequence[str] = objs.DEFAULT) -> SharedStudy:
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
            optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                directions=["minimize"] * len(objectives))
            study = SharedStudy(name, storage, sampler)
        except optuna.exceptions.DuplicatedStudyError:  # another worker made it just now
            study = SharedStudy(name, storage, sampler)
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
    """Record the trial's constraints once, as the list a sampler's ``constraints_func``
    writes (``constraints``): Optuna's samplers and ``trial.constraints`` read it as
    ``{"0": ..., "1": ...}`` (the order of ``constraints``), and so does optuna-dashboard.

    Written by the objective rather than by a ``constraints_func``: the random sampler
    takes none, and the objective has the values at hand before the trial is scored.
    """
    number = trial.number
    storage = trial.storage
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(trial.study.study_name), number)
    storage.set_trial_system_attr(trial_id, CONSTRAINTS_ATTR, [float(v) for v in constraints.values()])


def named_constraints(study_attrs: Mapping[str, Any], trial: FrozenTrial) -> dict[str, float]:
    """A trial's constraints by name (``latency_over_budget_ms``...), from the list
    :func:`set_constraints` wrote, in the order of the study's ``budgets`` attribute."""
    names = [objs.REGISTRY[n].constraint for n in study_attrs.get("budgets", {})]
    return dict(zip(names, trial.constraints.values()))


def count_complete(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: COMPLETE ones, feasible or over budget."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

