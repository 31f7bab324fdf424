"""One trial of the search: cheap objective first (HAT).

The latency table answers at once; a candidate over the latency budget is recorded as
infeasible and never reaches the accuracy scorer. Only candidates within budget (and
the reference architecture, which the plots place on the loss axis) are scored.

An infeasible trial is still COMPLETE, with its constraint ``latency_ms - budget > 0``
and a validation loss of ``+inf``. Optuna refuses NaN, and a PRUNED trial would be
invisible to NSGA-II, which ranks infeasible trials by how far over budget they are
(constrained domination) only when they are COMPLETE. ``+inf`` is the honest value:
the loss was never measured, and it is worse than any measured one. ``study.best_trials``,
the exports, the plots and the hypervolume all skip infeasible trials; the trial also
says ``scored: false``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import optuna

from nas.signals import interruptible, raise_pending
from nas.space import ArchConfig, SearchSpace, suggest
from nas.search.study import WORKER_ATTR, set_constraint, worker_id

CONSTRAINT = "latency_over_budget_ms"


class LatencyModel(Protocol):
    def predict_ms(self, arch: ArchConfig) -> float: ...


def n_params(arch: ArchConfig) -> int:
    """Parameters of ``build_model(arch)`` (``ArchConfig.n_params``)."""
    return arch.n_params


@dataclass
class Objective:
    """``objective(trial) -> (val_loss, latency_ms)`` for ``study.optimize``.

    Attributes:
        space: the search space.
        latency: anything with ``predict_ms(arch)`` (a ``nas.latency.LatencyTable``).
        scorer: ``scorer(arch) -> validation loss`` (a ``nas.supernet.score.AccuracyScorer``).
        device: the target device ('cpu' or 'cuda'): which precisions may be proposed.
        budget_ms: the latency budget; None for no constraint.
        reference: the baseline architecture, scored even when over budget.
        trial_attrs: user attributes written on every trial (the table fingerprint).
    """

    space: SearchSpace
    latency: LatencyModel
    scorer: Callable[[ArchConfig], float]
    device: str = "cpu"
    budget_ms: float | None = None
    reference: ArchConfig | None = None
    trial_attrs: Mapping[str, Any] = field(default_factory=dict)
    # Wall time spent in each stage, for the summary and the profile.
    seconds: dict[str, float] = field(default_factory=lambda: {"latency": 0.0, "score": 0.0})
    n_scored: int = 0

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        # A signal that came while Optuna stored the last trial ends the run here, before
        # anything of this one is written (this trial is then marked failed).
        raise_pending()
        # First, so a killed run's trial can be told from a live one (nas.search.study.fail_dead_trials).
        trial.set_user_attr(WORKER_ATTR, worker_id())
        arch = suggest(trial, self.space, device=self.device)
        t0 = time.perf_counter()
        latency_ms = float(self.latency.predict_ms(arch))
        self.seconds["latency"] += time.perf_counter() - t0
        over = latency_ms - self.budget_ms if self.budget_ms is not None else -math.inf
        if self.budget_ms is not None:
            set_constraint(trial, CONSTRAINT, over)
        # Compared here rather than read from the trial: each read is a storage query.
        scored = over <= 0 or arch == self.reference
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("arch_id", arch.arch_id)
        trial.set_user_attr("params", n_params(arch))
        trial.set_user_attr("scored", scored)
        for key, value in self.trial_attrs.items():
            trial.set_user_attr(key, value)
        if not scored:
            return math.inf, latency_ms
        t0 = time.perf_counter()
        with interruptible():  # scoring is the long part, and writes nothing: cut it at once
            loss = float(self.scorer(arch))
        self.seconds["score"] += time.perf_counter() - t0
        self.n_scored += 1
        return loss, latency_ms
