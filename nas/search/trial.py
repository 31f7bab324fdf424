"""One trial of the search: cheap objective first (HAT).

The predicted objectives (``nas.search.objectives``: latency, memory, parameters...)
answer at once; a candidate over any budget is recorded as infeasible and never reaches
the accuracy scorer. Only candidates within every budget (and the reference
architecture, which the plots place on the loss axis) are scored.

An infeasible trial is still COMPLETE, with a constraint ``value - budget > 0`` per
budget and a validation loss of ``+inf``. Optuna refuses NaN, and a PRUNED trial would be
invisible to NSGA-II, which ranks infeasible trials by how far over budget they are
(constrained domination) only when they are COMPLETE. ``+inf`` is the honest value:
the loss was never measured, and it is worse than any measured one. ``study.best_trials``,
the exports, the plots and the hypervolume all skip infeasible trials; the trial also
says ``scored: false``. The baseline over budget is scored but keeps ``+inf`` as its
value too (its loss is the user attribute ``reference_val_loss``): optuna-dashboard
draws its "best trials" without looking at constraints.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import optuna

from nas.signals import interruptible, raise_pending
from nas.space import ArchConfig, SearchSpace, suggest
from nas.search.objectives import DEFAULT, LOSS, REFERENCE_LOSS, REGISTRY
from nas.search.study import set_constraints
from nas.search.workers import WORKER_ATTR, worker_id


def n_params(arch: ArchConfig) -> int:
    """Parameters of ``build_model(arch)`` (``ArchConfig.n_params``)."""
    return arch.n_params


@dataclass
class TrialObjective:
    """``objective(trial) -> values of objectives`` for ``study.optimize``.

    Attributes:
        space: the search space.
        tables: the predictors by kind (``nas.search.objectives.load_tables``).
        scorer: ``scorer(arch) -> validation loss`` (a ``nas.supernet.score.AccuracyScorer``).
        device: the target device ('cpu' or 'cuda'): which precisions may be proposed.
        budgets: the budget of each constrained objective.
        reference: the baseline architecture, scored even when over budget.
        trial_attrs: user attributes written on every trial (the table fingerprint).
        objectives: what is minimised, in the study's order.
    """

    space: SearchSpace
    tables: Mapping[str, Any]
    scorer: Callable[[ArchConfig], float]
    device: str = "cpu"
    budgets: Mapping[str, float] = field(default_factory=dict)
    reference: ArchConfig | None = None
    trial_attrs: Mapping[str, Any] = field(default_factory=dict)
    objectives: Sequence[str] = DEFAULT
    # Wall time spent in each stage, for the summary and the profile.
    seconds: dict[str, float] = field(default_factory=lambda: {"latency": 0.0, "score": 0.0})
    n_scored: int = 0

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        # A signal that came while Optuna stored the last trial ends the run here, before
        # anything of this one is written (this trial is then marked failed).
        raise_pending()
        # First, so a killed run's trial can be told from a live one (nas.search.workers.fail_dead_trials).
        trial.set_user_attr(WORKER_ATTR, worker_id())
        arch = suggest(trial, self.space, device=self.device)
        t0 = time.perf_counter()
        values = {n: REGISTRY[n].predict(arch, self.tables) for n in self.objectives if n != LOSS}
        self.seconds["latency"] += time.perf_counter() - t0
        over = {REGISTRY[n].constraint: values[n] - b for n, b in self.budgets.items()}
        if over:
            set_constraints(trial, over)
        # Compared here rather than read from the trial: each read is a storage query.
        scored = all(v <= 0 for v in over.values()) or arch == self.reference
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_id", arch.arch_id)
        trial.set_user_attr("params", n_params(arch))
        trial.set_user_attr("scored", scored)
        for key, value in self.trial_attrs.items():
            trial.set_user_attr(key, value)
        values[LOSS] = math.inf
        if scored:
            t0 = time.perf_counter()
            with interruptible():  # scoring is the long part, and writes nothing: cut it at once
                loss = float(self.scorer(arch))
            self.seconds["score"] += time.perf_counter() - t0
            self.n_scored += 1
            if all(v <= 0 for v in over.values()):
                values[LOSS] = loss
            else:
                # The reference over budget: its loss is kept for the plots and the summary,
                # not as the trial's value, so that a tool blind to constraints (the
                # dashboard's "best trials") never ranks it above the feasible ones.
                trial.set_user_attr(REFERENCE_LOSS, loss)
        return tuple(values[n] for n in self.objectives)
