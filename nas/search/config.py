"""The typed settings of ``python -m nas.search``: one frozen dataclass per config group.

Each checks its own values and names the key of anything wrong. ``nas.hydra_cli``
derives the Hydra schema from them, ``nas.search.setup`` builds the search from them.
The sampler's settings live with the samplers (``nas.search.samplers.SamplerConfig``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from nas.errors import ConfigError
from nas.latency.target import WorkloadConfig
from nas.outputs import check_name
from nas.schema import from_mapping
from nas.search import objectives as objs


@dataclass(frozen=True)
class SearchConfig:
    """How hard to search, and where to keep the results (``search.*``).

    Attributes:
        n_trials: COMPLETE trials in total, whoever runs them: a resumed study runs only
            the remainder, and workers sharing a study share it (``nas.search.budget``).
        study_name: the study in the storage, and the folder ``outputs/<study_name>``.
        storage: an SQLAlchemy URL or the path of an Optuna journal file.
        objectives: what is minimised: ``val_loss`` and any predicted objectives of
            ``nas.search.objectives.REGISTRY``.
        latency_budget_ms: the budget on ``latency_ms`` (None: no constraint).
        budgets: a budget on any predicted objective, by name (None: no budget;
            ``latency_ms`` here overrides ``latency_budget_ms``).
        seed: seeds the sampler (with each trial's number: ``nas.search.samplers.TrialSeededSampler``).
        device: where the supernet scores accuracy ('auto': CUDA when available; 'cuda:K'
            the K-th GPU, one per worker).
        threads: CPU threads for scoring (None: torch's default).
        progress: show a progress bar.
        heartbeat_interval: seconds between a running trial's heartbeats (PostgreSQL, MySQL).
        grace_period: seconds without a heartbeat after which a trial's worker, on any
            host, is taken for dead: its trial is failed and its architecture queued again.
    """

    n_trials: int = 300
    study_name: str = "tiny-cpu"
    storage: str = "sqlite:///outputs/nas.db"
    objectives: tuple[str, ...] = objs.DEFAULT
    latency_budget_ms: float | None = None
    # Every objective that can have one, as None: in Hydra's schema, so that an override
    # such as search.budgets={params: 1e5} sets a key rather than adds one.
    budgets: dict[str, float | None] = field(
        default_factory=lambda: {n: None for n, o in objs.REGISTRY.items() if o.can_budget})
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    progress: bool = True
    heartbeat_interval: int = 10
    grace_period: int = 30

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"search.threads: {self.threads} must be >= 1, or null for torch's default")
        if self.n_trials < 1:
            raise ConfigError(f"search.n_trials: {self.n_trials} must be >= 1")
        check_name(self.study_name, "search.study_name")  # it names the folder outputs/<name>
        b = self.latency_budget_ms
        if b is not None and not (b > 0 and math.isfinite(b)):
            raise ConfigError(f"search.latency_budget_ms: {b} must be a positive number of "
                              "milliseconds, or null for no budget")
        object.__setattr__(self, "objectives", objs.check(self.objectives))
        object.__setattr__(self, "budgets", {k: v for k, v in self.budgets.items() if v is not None})
        objs.check_budgets(self.budgets, self.objectives)
        if self.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", self.device):
            raise ConfigError(f"search.device: {self.device!r} is not allowed; allowed: auto, cpu, "
                              "cuda, cuda:K (the K-th GPU)")
        if self.heartbeat_interval < 1:
            raise ConfigError(f"search.heartbeat_interval: {self.heartbeat_interval} must be >= 1 (seconds)")
        if self.grace_period <= self.heartbeat_interval:
            raise ConfigError(f"search.grace_period: {self.grace_period} must be more than "
                              f"search.heartbeat_interval ({self.heartbeat_interval}) seconds")
        if not 0 <= self.seed < 2**32:  # what numpy, and so every sampler, accepts
            raise ConfigError(f"search.seed: {self.seed} is not allowed; give an integer from 0 "
                              f"to {2**32 - 1}")

    def budget_map(self) -> dict[str, float]:
        """Every budget, by objective, in the order of ``objectives``.

        Raises:
            ConfigError: ``latency_budget_ms`` set while ``latency_ms`` is not searched.
        """
        b = dict(self.budgets)
        if self.latency_budget_ms is not None:
            if "latency_ms" not in self.objectives:
                raise ConfigError(
                    f"search.latency_budget_ms: {self.latency_budget_ms:g} is a budget on latency_ms, "
                    f"which is not in search.objectives ({', '.join(self.objectives)}); add it there "
                    "or set search.latency_budget_ms=null")
            b.setdefault("latency_ms", self.latency_budget_ms)
        return {n: float(b[n]) for n in self.objectives if n in b}

    def budget_key(self, name: str) -> str:
        """The key that set the budget on ``name``, for messages."""
        if name == "latency_ms" and name not in self.budgets:
            return "search.latency_budget_ms"
        return f"search.budgets.{name}"


@dataclass(frozen=True)
class HardwareConfig:
    """The target (``conf/hardware/<name>.yaml``).

    Attributes:
        device: 'cpu' or 'cuda': which precisions of the space may be proposed.
        table: the latency table (CSV with its JSON fingerprint next to it).
        latency_budget_ms: the default budget of a search on this target.
        local: the target is the machine at hand: a table measured on other hardware is
            replaced by this machine's (``nas.latency.local``).
        workload: what the target serves (``hardware.workload``): the batch, request and
            mode that name its decode and request tables (``nas.latency.target``).
    """

    device: str = "cpu"
    table: str = "latency_tables/cpu-tiny.csv"
    latency_budget_ms: float | None = None
    local: bool = False
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"hardware.device: {self.device!r} is not allowed; allowed: cpu, cuda")


@dataclass(frozen=True)
class SupernetConfig:
    """Which supernet scores accuracy (``supernet.*``).

    Attributes:
        checkpoint: a ``supernet.pt`` of ``nas-train``; None trains one with ``train.*``
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
