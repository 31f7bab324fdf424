"""Which Optuna sampler proposes architectures (``conf/sampler/<name>.yaml``).

The sampler is always chosen explicitly: Optuna 5 changed its default, and a search
must mean the same thing whatever version runs it. Constraints are not passed here:
the objective records them on each trial (``nas.search.study.set_constraints``), and
NSGA-II and TPE read them from there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nas.errors import ConfigError

SAMPLERS = ("nsga2", "tpe", "random")
# The settings that change what each sampler proposes (recorded with a study, checked on resume).
_OPTIONS = {"nsga2": ("population_size", "crossover_prob", "swapping_prob", "mutation_prob", "no_repeat"),
            "tpe": ("n_startup_trials", "n_ei_candidates", "multivariate", "no_repeat"),
            "random": ()}


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
        no_repeat: redraw relative proposals that repeat a tried architecture
            (:class:`NoRepeatSampler`).
    """

    name: str = "nsga2"
    population_size: int = 24
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    mutation_prob: float | None = None
    n_startup_trials: int = 20
    n_ei_candidates: int = 24
    multivariate: bool = True
    no_repeat: bool = True

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

    def settings(self) -> dict[str, Any]:
        """The name and the options that apply to it: what a resumed study must keep."""
        return {"name": self.name, **{k: getattr(self, k) for k in _OPTIONS[self.name]}}


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


def build_sampler(cfg: SamplerConfig, seed: int,
                  arch_key: Callable[[Mapping[str, Any]], str | None]) -> optuna.samplers.BaseSampler:
    """The sampler of a search: ``cfg``'s, without repeats if asked, seeded per trial.

    Args:
        cfg: which sampler.
        seed: ``search.seed``.
        arch_key: complete genome -> architecture id (for :class:`NoRepeatSampler`).
    """

    def make(trial_seed: int) -> optuna.samplers.BaseSampler:
        sampler = make_sampler(cfg, trial_seed)
        if cfg.no_repeat and cfg.name != "random":
            sampler = NoRepeatSampler(sampler, arch_key, trial_seed)
        return sampler

    return TrialSeededSampler(make, seed)


class _Wrapper(optuna.samplers.BaseSampler):
    """A sampler that hands every call to ``self.base``; subclasses change what they need."""

    base: optuna.samplers.BaseSampler

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


class NoRepeatSampler(_Wrapper):
    """Wraps a sampler so that its relative proposals are architectures not yet tried.

    Evolution and density models re-propose what they have seen: in a 300-trial NSGA-II
    search of ``tiny`` about half the trials repeated an earlier architecture (many genes
    of a short network are inactive layers), and a repeat measures nothing new. A
    relative proposal (an NSGA-II child, a multivariate TPE draw) is completed with the
    genes the base sampler leaves to random mutation, then drawn again, up to
    ``max_tries`` times, while it decodes to an architecture the study already has. The
    first, random trials of a search and independent samplers pass through unchanged.

    Args:
        base: the sampler proposing.
        arch_key: complete genome -> architecture id (None when it cannot tell).
        seed: seeds the draws of the genes the base sampler leaves to mutation.
        max_tries: proposals per trial before a repeat is accepted (a small space may
            have no new architecture left).
    """

    def __init__(self, base: optuna.samplers.BaseSampler,
                 arch_key: Callable[[Mapping[str, Any]], str | None], seed: int | None = None,
                 max_tries: int = 20):
        self.base, self._key, self._max_tries = base, arch_key, max_tries
        self._fill = optuna.samplers.RandomSampler(seed=None if seed is None else seed + 1)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        seen = {t.user_attrs.get("arch_id") for t in study.get_trials(deepcopy=False)}
        full: dict[str, Any] = {}
        for _ in range(self._max_tries):
            params = self.base.sample_relative(study, trial, search_space)
            if not params:
                return params
            full = dict(params)
            for name, dist in search_space.items():
                if name not in full:  # left to mutation by the base sampler: a uniform draw
                    full[name] = self._fill.sample_independent(study, trial, name, dist)
            key = self._key(full)
            if key is None or key not in seen:
                return full
        return full

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._fill.reseed_rng()


class TrialSeededSampler(_Wrapper):
    """Draws each trial's proposal from a sampler seeded by (seed, trial number).

    A sampler seeded once per process replays the same draws on every run: a resumed
    study re-proposed its first run's architectures (11 of 12 on ``tiny``), and workers
    started together proposed the same first generation. Trial numbers are unique within
    a study and continue where it stands, so a sampler made afresh before each trial,
    seeded from its number, gives every trial, every resume and every worker its own
    draws, while a fresh single-worker search stays reproducible from ``search.seed``.
    Optuna's samplers keep nothing between trials but their random state (NSGA-II's
    generations and TPE's models are read from the study), so a fresh one proposes what
    the long-lived one would have, with its own draws.

    Args:
        make: ``make(seed) -> sampler``: the sampler proposing, seeded with ``seed``.
        seed: ``search.seed``.
    """

    def __init__(self, make: Callable[[int], optuna.samplers.BaseSampler], seed: int):
        self.make, self.seed = make, seed
        self.base = make(seed)

    def reseed_for(self, number: int) -> None:
        """Make the sampler of trial ``number``."""
        self.base = self.make(int(np.random.SeedSequence([self.seed, number]).generate_state(1)[0]))

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # Optuna calls this before the trial's first draw (relative or independent).
        self.reseed_for(trial.number)
        self.base.before_trial(study, trial)
