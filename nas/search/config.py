"""The typed settings of ``python -m nas.search``: one frozen dataclass per config group.

Each checks its own values and names the key of anything wrong. ``nas.hydra_cli``
derives the Hydra schema from them, ``nas.search.setup`` builds the search from them.
The sampler's settings live with the samplers (``nas.search.samplers.SamplerConfig``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from nas.errors import ConfigError
from nas.schema import from_mapping


@dataclass(frozen=True)
class SearchConfig:
    """How hard to search, and where to keep the results (``search.*``).

    Attributes:
        n_trials: COMPLETE trials in total; a resumed study runs only the remainder.
        study_name: the study in the storage, and the folder ``outputs/<study_name>``.
        storage: an SQLAlchemy URL or the path of an Optuna journal file.
        latency_budget_ms: the latency constraint (None: no constraint).
        seed: seeds the sampler.
        device: where the supernet scores accuracy ('auto': CUDA when available).
        threads: CPU threads for scoring (None: torch's default).
        progress: show a progress bar.
    """

    n_trials: int = 300
    study_name: str = "tiny-cpu"
    storage: str = "sqlite:///outputs/nas.db"
    latency_budget_ms: float | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"search.threads: {self.threads} must be >= 1, or null for torch's default")
        if self.n_trials < 1:
            raise ConfigError(f"search.n_trials: {self.n_trials} must be >= 1")
        name = self.study_name
        if not name or not all(c.isalnum() or c in "._-" for c in name) or name.startswith("."):
            raise ConfigError(f"search.study_name: {name!r} is not allowed; it names a folder, "
                              "so use letters, digits, '.', '_' and '-'")
        b = self.latency_budget_ms
        if b is not None and not (b > 0 and math.isfinite(b)):
            raise ConfigError(f"search.latency_budget_ms: {b} must be a positive number of "
                              "milliseconds, or null for no budget")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"search.device: {self.device!r} is not allowed; allowed: auto, cpu, cuda")
        if not 0 <= self.seed < 2**32:  # what numpy, and so every sampler, accepts
            raise ConfigError(f"search.seed: {self.seed} is not allowed; give an integer from 0 "
                              f"to {2**32 - 1}")


@dataclass(frozen=True)
class HardwareConfig:
    """The target (``conf/hardware/<name>.yaml``).

    Attributes:
        device: 'cpu' or 'cuda': which precisions of the space may be proposed.
        table: the latency table (CSV with its JSON fingerprint next to it).
        latency_budget_ms: the default budget of a search on this target.
    """

    device: str = "cpu"
    table: str = "latency_tables/cpu-tiny.csv"
    latency_budget_ms: float | None = None

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"hardware.device: {self.device!r} is not allowed; allowed: cpu, cuda")


@dataclass(frozen=True)
class SupernetConfig:
    """Which supernet scores accuracy (``supernet.*``).

    Attributes:
        checkpoint: a ``supernet.pt`` of ``nas.train``; None trains one with ``train.*``
            and caches it under ``cache_dir``, keyed by the space and the recipe.
        cache_dir: where trained supernets are cached.
    """

    checkpoint: str | None = None
    cache_dir: str = "outputs/supernets"


@dataclass(frozen=True)
class ScoreConfig:
    """How accuracy is measured (``score.*``): the same fixed validation windows for all.

    Attributes:
        n_batches: validation batches per architecture.
        batch_size: windows per batch.
    """

    n_batches: int = 16
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.n_batches < 1 or self.batch_size < 1:
            raise ConfigError(f"score: n_batches ({self.n_batches}) and batch_size "
                              f"({self.batch_size}) must be >= 1")


def typed(cls: type, node: Any, key: str) -> Any:
    """A frozen dataclass from a config node, naming the key of anything wrong."""
    from omegaconf import DictConfig, OmegaConf

    d = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    return from_mapping(cls, d, f"{key}.")
