"""The search from Python (a notebook): ``from nas import run_search``.

It runs what ``nas-search`` runs, from the same configs: Hydra composes them (its
compose API), ``nas.search.run.run_from_config`` checks, searches, exports and plots,
and the same summary is printed. What comes back is a :class:`SearchOutcome`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # heavy imports wait for the first search
    import optuna
    import pandas as pd

    from nas.space import ArchConfig


@dataclass
class SearchOutcome:
    """What :func:`run_search` found.

    Attributes:
        study: the Optuna study (every trial, every worker's).
        trials: one row per finished trial (``nas.search.results.trials_frame``).
        front: the Pareto front of the feasible trials, fastest first.
        winner: the lowest loss within every budget; None when nothing fits.
        out_dir: where the CSVs, YAML configs and the plot were written.
        summary: the report printed at the end (as ``nas-search`` prints it).
    """

    study: optuna.Study
    trials: pd.DataFrame
    front: pd.DataFrame
    winner: ArchConfig | None
    out_dir: Path
    summary: str


def run_search(search_space: str = "tiny", hardware: str = "cpu", *, n_trials: int | None = None,
               overrides: Sequence[str] = (), quiet: bool = False) -> SearchOutcome:
    """Run (or resume) a search as ``nas-search search_space=... hardware=... [overrides]`` does.

    Args:
        search_space: a ``conf/search_space`` option (``tiny``, ``shakespeare``).
        hardware: a ``conf/hardware`` option (``cpu``: this machine's CPU).
        n_trials: ``search.n_trials`` (default: the config's).
        overrides: any other ``key=value`` of ``nas-search --help``.
        quiet: do not print the summary.

    Returns:
        The study, its trials and front as DataFrames, and the winner.

    Raises:
        nas.errors.ConfigError: a bad value, named by its key, before anything runs.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from nas.errors import ConfigError
    from nas.hydra_cli import error_line, register_schema
    from nas.paths import CONF_DIR
    from nas.search.export import study_budgets
    from nas.search.results import choose_winner, pareto_frame, trials_frame
    from nas.search.run import run_from_config
    from nas.space import ArchConfig

    args = [f"search_space={search_space}", f"hardware={hardware}", *overrides]
    if n_trials is not None:
        args.append(f"search.n_trials={n_trials}")
    register_schema()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="search"):
            cfg = compose(config_name="config", overrides=args, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - a composition failure is a user mistake
        raise ConfigError(error_line(e)) from None
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...} (the default study name)
    out_dir = Path(str(cfg.hydra.run.dir))
    with open_dict(cfg):
        del cfg["hydra"]
    result = run_from_config(cfg, hardware, out_dir)
    if not quiet:
        print(result.summary)
    trials = trials_frame(result.study)
    front = pareto_frame(trials)
    best = choose_winner(front, study_budgets(result.study))
    winner = None if best is None else ArchConfig.from_dict(_arch_of(result.study, int(best["number"])))
    return SearchOutcome(study=result.study, trials=trials, front=front, winner=winner,
                         out_dir=out_dir, summary=result.summary)


def _arch_of(study: Any, number: int) -> dict[str, Any]:
    return dict(next(t for t in study.get_trials(deepcopy=False) if t.number == number).user_attrs["arch"])
