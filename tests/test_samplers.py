"""Samplers: each config builds its Optuna sampler; NoRepeatSampler keeps proposals new."""
from __future__ import annotations

import optuna
import pytest
from optuna.storages import InMemoryStorage

from nas.errors import ConfigError
from nas.samplers import NoRepeatSampler, SamplerConfig, make_sampler
from nas.search import SearchConfig, run_search

pytest_plugins = ["search_support"]  # its session fixtures: the tiny space and its table


@pytest.mark.parametrize("bad", [{"name": "cmaes"}, {"population_size": 1},
                                 {"mutation_prob": 1.5}, {"crossover_prob": -0.1}])
def test_bad_sampler_settings_name_the_key(bad):
    with pytest.raises(ConfigError, match="sampler"):
        SamplerConfig(**bad)


def _distinct(space, table, no_repeat: bool, sampler: str) -> tuple[int, int]:
    cfg = SearchConfig(n_trials=60, study_name="s", storage="memory", latency_budget_ms=None,
                       seed=3, progress=False)
    res = run_search(space, table, lambda arch: float(arch.n_layer), cfg,
                     SamplerConfig(name=sampler, population_size=8, no_repeat=no_repeat,
                                   n_startup_trials=10),
                     device="cpu", study_attrs={}, storage=InMemoryStorage())
    ids = [t.user_attrs["arch_id"] for t in res.study.trials]
    return len(set(ids)), len(ids)


@pytest.mark.parametrize("sampler", ["nsga2", "tpe"])
def test_no_repeat_proposes_new_architectures(tiny_space, tiny_table, sampler):
    # A scorer that only sees depth makes evolution converge, and repeat, quickly.
    with_it, n = _distinct(tiny_space, tiny_table, True, sampler)
    without, _ = _distinct(tiny_space, tiny_table, False, sampler)
    assert with_it > without
    if sampler == "nsga2":  # a child is redrawn until new; only the random first ones may repeat
        assert with_it >= n - 2
    # (TPE proposes its best candidate of the draw; near convergence 20 draws may all be old.)


def test_no_repeat_wraps_what_it_is_given():
    base = make_sampler(SamplerConfig(name="nsga2"), seed=0)
    wrapped = NoRepeatSampler(base, lambda genome: None, seed=0)
    assert wrapped.base is base
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=wrapped)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1.0), n_trials=3)
    assert len(study.trials) == 3
