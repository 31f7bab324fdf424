"""``search.n_trials`` shared by every worker of a study: exactly that many COMPLETE trials.

Each worker used to run ``n_trials`` minus what was done when it started, so three
workers of 30 ran 90. Here a worker asks before each trial (:meth:`TrialBudget.next_trial`):
it starts one while the COMPLETE trials and those running stay below ``n_trials``, waits
while the running ones could still fill it (one may fail, and its place is then taken),
and stops once it is full. Two workers may still pass that check at the same moment for
the last place; :meth:`TrialBudget.claim` settles it by the order of the trials' numbers
(unique and given in creation order in every storage: an RDB storage numbers a new trial
while holding its study's row lock): a finished trial counts only if fewer than
``n_trials`` trials created before it are done, running or waiting. The loser is marked
FAIL with the reason (a rare race: one scoring wasted, nothing counted twice).
"""
from __future__ import annotations

import signal
import time
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from nas.signals import interruptible, raise_pending
from nas.search.study import SharedStudy
from nas.search.workers import REASON_ATTR, fail_dead_trials, requeue, worker_id

_AHEAD = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


class Surplus(Exception):
    """A trial beyond ``search.n_trials``: trials created before it fill the budget."""


class TrialBudget:
    """The study's ``n_trials`` COMPLETE trials, shared by the workers that run it.

    Args:
        study: the study.
        n_trials: COMPLETE trials in total.
        poll_s: how often a waiting worker looks again.
    """

    def __init__(self, study: SharedStudy, n_trials: int, poll_s: float = 0.5):
        self.study, self.n_trials, self.poll_s = study, n_trials, poll_s
        self.complete = 0                  # COMPLETE trials when last looked
        self.failed_dead: list[int] = []   # trials of dead workers this worker marked FAIL

    def next_trial(self) -> bool:
        """Wait until this worker may start a trial (True) or the budget is full (False).

        Dead workers' trials are failed first, so their places are free again.
        """
        raise_pending()  # a Ctrl-C or SIGTERM that came during the last trial's end stops here
        while True:
            trials = self.study.get_trials(deepcopy=False,
                                           states=(TrialState.COMPLETE, TrialState.RUNNING))
            running = [t for t in trials if t.state == TrialState.RUNNING]
            dead = fail_dead_trials(self.study, running)
            self.failed_dead += dead
            self.complete = len(trials) - len(running)
            if self.complete >= self.n_trials:
                return False
            if self.complete + len(running) - len(dead) < self.n_trials:
                return True
            with interruptible():  # waiting writes nothing: a Ctrl-C stops it at once
                time.sleep(self.poll_s)

    def claim(self, trial: optuna.Trial) -> None:
        """Raise :class:`Surplus` (after recording why) if ``trial`` is beyond the budget."""
        mine = trial.number
        ahead = sum(t.number < mine for t in self.study.get_trials(deepcopy=False, states=_AHEAD))
        if ahead >= self.n_trials:
            reason = f"not run: search.n_trials={self.n_trials} filled by earlier trials"
            trial.set_user_attr(REASON_ATTR, reason)
            raise Surplus(reason)

    def guard(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        """``objective`` within the budget; a stopped trial records why and is queued again.

        ``study.optimize(..., catch=(Surplus,))`` then marks a surplus trial FAIL quietly.
        """

        def run(trial: optuna.Trial) -> Any:
            try:
                values = objective(trial)
            except KeyboardInterrupt as e:  # nas.signals.Stopped included: Ctrl-C, SIGTERM
                _stopped(self.study, trial, getattr(e, "signum", signal.SIGINT))
                raise
            # Claimed once done, not when started: every trial created before this one is
            # visible by now (PostgreSQL may show a transaction's trial only at its commit).
            self.claim(trial)
            return values

        return run


def _stopped(study: SharedStudy, trial: optuna.Trial, signum: int) -> None:
    """Say why the trial ends (Optuna marks it FAIL next) and queue its architecture."""
    from nas.signals import NAMES

    reason = f"stopped by {NAMES.get(signum, f'signal {signum}')} (worker {worker_id()})"
    trial.set_user_attr(REASON_ATTR, reason)
    requeue(study, study.storage.get_trial(study.trial_id(trial.number)), reason)
