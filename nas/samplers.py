"""Which Optuna sampler proposes architectures (``conf/sampler/<name>.yaml``).

The sampler is always chosen explicitly: Optuna 5 changed its default, and a search
must mean the same thing whatever version runs it. Constraints are not passed here:
the objective sets them on each trial (``trial.set_constraint``), and NSGA-II and TPE
read them from there.
"""
from __future__ import annotations

from dataclasses import dataclass

import optuna

from nas.errors import ConfigError

SAMPLERS = ("nsga2", "tpe", "random")


@dataclass(frozen=True)
class SamplerConfig:
    """One sampler and its settings; keys that do not apply to ``name`` are ignored.

    Attributes:
        name: nsga2, tpe or random.
        population_size: NSGA-II individuals per generation.
        crossover_prob: NSGA-II probability that a child is a crossover of two parents.
        swapping_prob: NSGA-II probability of taking each gene from the second parent.
        mutation_prob: NSGA-II per-gene mutation probability (None: 1 / genome length).
        n_startup_trials: TPE random trials before its density models take over.
        n_ei_candidates: TPE candidates drawn per proposal.
        multivariate: TPE models the genome jointly rather than gene by gene.
    """

    name: str = "nsga2"
    population_size: int = 24
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    mutation_prob: float | None = 0.3
    n_startup_trials: int = 20
    n_ei_candidates: int = 24
    multivariate: bool = True

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ConfigError(f"sampler.name: {self.name!r} is unknown; allowed: {', '.join(SAMPLERS)}")
        if self.population_size < 2:
            raise ConfigError(f"sampler.population_size: {self.population_size} must be >= 2")
        for key in ("crossover_prob", "swapping_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"sampler.{key}: {getattr(self, key)} must be in [0, 1]")
        if self.mutation_prob is not None and not 0.0 <= self.mutation_prob <= 1.0:
            raise ConfigError(f"sampler.mutation_prob: {self.mutation_prob} must be in [0, 1] or null")
        if self.n_startup_trials < 0 or self.n_ei_candidates < 1:
            raise ConfigError("sampler: n_startup_trials must be >= 0 and n_ei_candidates >= 1")


def make_sampler(cfg: SamplerConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler for ``cfg``, seeded with ``seed``."""
    if cfg.name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=cfg.population_size, crossover_prob=cfg.crossover_prob,
            swapping_prob=cfg.swapping_prob, mutation_prob=cfg.mutation_prob, seed=seed)
    if cfg.name == "tpe":
        return optuna.samplers.TPESampler(
            n_startup_trials=cfg.n_startup_trials, n_ei_candidates=cfg.n_ei_candidates,
            multivariate=cfg.multivariate, seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)
