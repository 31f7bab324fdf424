"""Samplers: each config builds its Optuna sampler; NoRepeatSampler keeps proposals new."""
from __future__ import annotations

import optuna
import pytest
from optuna.storages import InMemoryStorage

from nas.errors import ConfigError
from nas.search.samplers import NoRepeatSampler, SamplerConfig, build_sampler, make_sampler
from nas.search.config import SearchConfig
from nas.search.run import run_study



@pytest.mark.parametrize("bad", [{"name": "cmaes"}, {"population_size": 1},
                                 {"mutation_prob": 1.5}, {"crossover_prob": -0.1}])
def test_bad_sampler_settings_name_the_key(bad):
    with pytest.raises(ConfigError, match="sampler"):
        SamplerConfig(**bad)


def _distinct(space, table, no_repeat: bool, sampler: str, seed: int = 3) -> tuple[int, int]:
    cfg = SearchConfig(n_trials=60, study_name="s", storage="memory", latency_budget_ms=None,
                       seed=seed, progress=False)
    res = run_study(space, table, lambda arch: float(arch.n_layer), cfg,
                    SamplerConfig(name=sampler, population_size=8, no_repeat=no_repeat,
                                  n_startup_trials=10),
                    device="cpu", study_attrs={}, storage=InMemoryStorage())
    ids = [t.user_attrs["arch_id"] for t in res.study.trials]
    return len(set(ids)), len(ids)


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_no_repeat_proposes_new_architectures(tiny_space, tiny_table, sampler):
    # A scorer that only sees depth makes evolution converge, and repeat, quickly.
    with_it, n = _distinct(tiny_space, tiny_table, True, sampler)
    without, _ = _distinct(tiny_space, tiny_table, False, sampler)
    assert with_it > without
    if sampler == "nsga2":
        # A child is redrawn until new: only a random first one, or a late one once the
        # population has converged (20 redraws all old), may repeat. Counted over ten seeds:
        # one seed's count is noise (0 to 5 of 60, with per-trial seeding as before it).
        repeats = sum(n - _distinct(tiny_space, tiny_table, True, sampler, seed)[0] for seed in range(10))
        assert repeats <= 20
    # (TPE proposes its best candidate of the draw; near convergence 20 draws may all be old.)


class _Scripted(optuna.samplers.RandomSampler):
    """Proposes the relative parameters it is given, in turn; records what it is told."""

    def __init__(self, proposals):
        super().__init__(seed=0)
        self.proposals, self.calls, self.told = list(proposals), 0, []

    def infer_relative_search_space(self, study, trial):
        return {"a": optuna.distributions.IntDistribution(0, 9),
                "b": optuna.distributions.IntDistribution(0, 9)}

    def sample_relative(self, study, trial, search_space):
        self.calls += 1
        return self.proposals.pop(0) if self.proposals else {}

    def after_trial(self, study, trial, state, values):
        self.told.append((trial.number, state, values))


def _study_with(sampler, tried):
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for a in tried:  # an earlier trial of architecture "a=<a>"
        study.add_trial(optuna.trial.create_trial(
            params={"a": a}, distributions={"a": optuna.distributions.IntDistribution(0, 9)},
            values=[1.0, 1.0], user_attrs={"arch_id": f"a={a}"}))
    return study


def test_no_repeat_redraws_a_repeat_and_passes_on_the_trial_result():
    base = _Scripted([{"a": 1}, {"a": 1}, {"a": 2}])  # "b" left to mutation, as NSGA-II does
    wrapped = NoRepeatSampler(base, lambda genome: f"a={genome['a']}", seed=0)
    study = _study_with(wrapped, tried=[1])
    trial = study.ask()
    assert trial.suggest_int("a", 0, 9) == 2 and 0 <= trial.suggest_int("b", 0, 9) <= 9
    assert base.calls == 3  # two repeats of a=1 redrawn
    study.tell(trial, [0.5, 0.5])
    assert [(n, s) for n, s, _ in base.told] == [(1, optuna.trial.TrialState.COMPLETE)]


def test_no_repeat_accepts_a_repeat_after_max_tries():
    base = _Scripted([{"a": 1}] * 5)
    wrapped = NoRepeatSampler(base, lambda genome: f"a={genome['a']}", seed=0, max_tries=3)
    trial = _study_with(wrapped, tried=[1]).ask()
    assert trial.suggest_int("a", 0, 9) == 1  # a full space: the repeat stays
    assert base.calls == 3


def _draws(sampler, first_number: int, n: int = 4) -> list[tuple[float, ...]]:
    """What ``sampler`` proposes for ``n`` trials numbered from ``first_number``."""
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for k in range(first_number):  # a study already holding trials 0..first_number-1
        study.add_trial(optuna.trial.create_trial(
            params={"x": 0.5}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
            values=[1.0, 1.0]))
    out = []
    for _ in range(n):
        t = study.ask()
        out.append((t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)))
        study.tell(t, [1.0, 1.0])
    return out


@pytest.mark.parametrize("name", ["nsga2", "tpe", "random"])
def test_draws_follow_seed_and_trial_number_not_the_process(name):
    cfg = SamplerConfig(name=name, no_repeat=name != "random")
    build = lambda seed: build_sampler(cfg, seed, lambda genome: None)  # noqa: E731
    assert _draws(build(0), 0) == _draws(build(0), 0)      # a fresh search is reproducible
    assert _draws(build(0), 0) != _draws(build(1), 0)      # and follows search.seed
    # A resume (or a second worker) does not replay the draws of trials 0..3.
    assert set(_draws(build(0), 4)).isdisjoint(_draws(build(0), 0))
