"""The search: ``python -m nas.search [search_space=tiny] [hardware=cpu] [sampler=nsga2] ...``.

Optuna proposes architectures of the search space; the latency table of the target
hardware predicts their latency at once; those within the budget are scored by the
supernet (validation loss with inherited weights). Every objective of
``search.objectives`` is minimised (``nas.search.objectives``).
At the end the Pareto front is exported (CSV, YAML configs, the winner for the
budget) and plotted, into ``outputs/<study_name>/``.

Hydra stays at the edge: it composes the config once (``nas.hydra_cli.launch``);
``check_first`` checks it (``nas.search.setup.check``, the typed objects of
``nas.search.config``) before Hydra makes the run folder, and nothing under
``run_study`` sees a raw ``cfg``. ``nas.search.summary`` prints the
summary at the end.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from nas.search.budget import Surplus, TrialBudget
from nas.errors import ConfigError, exit_on_user_error
from nas.signals import held, stop_cleanly
from nas.search.trial import TrialObjective
from nas.search.objectives import LOSS, Tables
from nas.search.study_settings import search_settings
from nas.search.samplers import SamplerConfig, build_sampler
from nas.search.config import SearchConfig
from nas.search.summary import SearchResult, summary
from nas.search.setup import Checked, build, check
from nas.search.config import typed
from nas.space import ArchConfig, SearchSpace, genome_of
from nas.search.storage import damaged_storage_is_refused
from nas.search.study import count_complete, open_study
from nas.search.workers import enqueue_once, fail_dead_trials, folder_lock, open_worker_storage
from nas.outputs import check_folder, write_atomic

log = logging.getLogger(__name__)


class _Progress:
    """tqdm bar over the study's COMPLETE trials (every worker's), with the feasible count
    and the best loss of this worker's trials."""

    def __init__(self, study: optuna.Study, total: int, done: int, enabled: bool):
        self.bar = tqdm(total=total, initial=done, disable=not enabled, unit="trial",
                        desc=f"search {study.study_name}", dynamic_ncols=True)
        self.feasible = self.best = None
        self.ran = 0  # COMPLETE trials of this worker
        self.loss_at = study.metric_names.index(LOSS)

    def show(self, complete: int) -> None:
        self.bar.update(complete - self.bar.n)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.debug("trial %d %s: values %s, constraints %s, %s", trial.number, trial.state.name,
                  trial.values, trial.constraints, trial.user_attrs.get("arch_id"))
        if trial.state != TrialState.COMPLETE:
            return
        self.ran += 1
        ok = all(v <= 0 for v in trial.constraints.values())
        self.feasible = (self.feasible or 0) + ok
        loss = trial.values[self.loss_at]
        if ok and math.isfinite(loss):
            self.best = loss if self.best is None else min(self.best, loss)
        self.bar.set_postfix(within_budget=self.feasible,
                             best_loss=f"{self.best:.3f}" if self.best is not None else "-",
                             refresh=False)

    def close(self) -> None:
        self.bar.close()


def _arch_id(space: SearchSpace, genome: Mapping[str, Any]) -> str | None:
    try:
        return space.decode(genome).arch_id
    except (KeyError, ValueError, TypeError):  # not a whole genome
        return None


def run_study(space: SearchSpace, latency: Tables, scorer: Callable[[ArchConfig], float],
              cfg: SearchConfig, sampler: SamplerConfig, *, device: str,
              study_attrs: Mapping[str, Any], trial_attrs: Mapping[str, Any] | None = None,
              storage: Any = None) -> SearchResult:
    """Create, resume or join the study and run it up to ``cfg.n_trials`` COMPLETE trials.

    Any number of processes may run this on one study: together they run ``cfg.n_trials``
    (``nas.search.budget``), and a dead one's trial is failed and run again
    (``nas.search.workers``).

    Args:
        space: the search space.
        latency: the prefill latency table, or the tables of every objective by kind
            (``nas.search.objectives.load_tables``).
        scorer: ``scorer(arch) -> validation loss``.
        cfg: trials, study, storage, objectives, budgets, seed.
        sampler: which Optuna sampler.
        device: the target device ('cpu' or 'cuda'): the precisions proposed.
        study_attrs: written once on a new study; on resume they must match
            (``nas.search.study_settings.SETTINGS``; the sampler, seed and objectives are added here).
        trial_attrs: written on every trial (the table fingerprint).
        storage: an opened storage (default: open ``cfg.storage``, with a heartbeat).

    Returns:
        The study and the timing of this run.
    """
    storage = storage if storage is not None else open_worker_storage(cfg)
    attrs = {**study_attrs, **search_settings(sampler, cfg.seed, cfg.objectives)}
    proposer = build_sampler(sampler, cfg.seed, lambda genome: _arch_id(space, genome))
    study = open_study(storage, cfg.study_name, proposer, attrs, cfg.storage, cfg.objectives)
    budget = TrialBudget(study, cfg.n_trials)
    stale = fail_dead_trials(study)
    base = space.baseline_arch("fp32" if "fp32" in space.precisions(device)
                               else space.precisions(device)[0])
    if base is not None:
        enqueue_once(study, genome_of(base, space), {"baseline": True})
    tables = latency if isinstance(latency, Mapping) else {"prefill": latency}
    scoring = TrialObjective(space, tables, scorer, device, cfg.budget_map(), base,
                             dict(trial_attrs or {}), cfg.objectives)
    objective = budget.guard(scoring)
    bar = _Progress(study, cfg.n_trials, count_complete(study), cfg.progress)
    t0 = time.perf_counter()
    try:
        with held():  # a signal waits for the next objective call, not for Optuna's tell
            # One trial at a time: the budget is looked at before each (other workers run too).
            while budget.next_trial():
                bar.show(budget.complete)
                study.optimize(objective, n_trials=1, callbacks=[bar], catch=(Surplus,),
                               gc_after_trial=False)
            bar.show(budget.complete)
    except KeyboardInterrupt:
        # Interrupted while the trial was being stored: it is ours and cannot finish.
        fail_dead_trials(study)
        raise
    finally:
        bar.close()
    # A run killed between creating a trial and claiming it leaves an unclaimed one, failed
    # once it is older than the grace period: perhaps only now.
    stale += budget.failed_dead + fail_dead_trials(study)
    seconds = time.perf_counter() - t0
    stages = dict(scoring.seconds)
    stages["optuna_and_storage"] = max(0.0, seconds - sum(stages.values()))
    return SearchResult(study, bar.ran, seconds, stages, stale)


# --- the command ----------------------------------------------------------------------

def run_from_config(cfg: Any, hardware_name: str, out_dir: Path,
                    checked: Checked | None = None) -> SearchResult:
    """The whole command: check and build (``nas.search.setup``), search, then export,
    plot and report into ``out_dir``.

    Args:
        cfg: the composed config.
        hardware_name: the ``hardware`` group's choice.
        out_dir: where the results go.
        checked: ``check(cfg, hardware_name)``, when it ran already (``nas.hydra_cli.CheckFirst``).
    """
    from omegaconf import OmegaConf

    from nas.search.export import export_study
    from nas.search.plot import plot_pareto
    from nas.search.results import trials_frame

    with damaged_storage_is_refused(str(cfg.search.storage), "search.storage"):
        p = build(checked or check(cfg, hardware_name))
        budgets = p.search.budget_map()
        result = run_study(p.space, p.tables, p.scorer, p.search, p.sampler,
                           device=p.hardware.device, study_attrs=p.study_attrs,
                           trial_attrs=p.trial_attrs, storage=p.storage)
        try:
            with folder_lock(out_dir):  # the study's other workers export here too
                text = OmegaConf.to_yaml(cfg, resolve=True).encode()
                write_atomic(out_dir / "config.yaml", lambda f: f.write(text))
                exp = export_study(result.study, out_dir, budgets)
                plot = plot_pareto(trials_frame(result.study), out_dir / "pareto.png",
                                   p.search.study_name, budgets, hardware_name)
        except OSError as e:  # the trials are stored: only the files are missing
            raise ConfigError(f"hydra.run.dir: cannot write into {out_dir} ({e.strerror or e}); "
                              "the trials are stored: export them with python -m nas.search.export") from None
        result.summary = summary(result, budgets, hardware_name,
                                 {"pareto_csv": exp.pareto_csv, "plot": plot, "winner": exp.winner},
                                 p.search.storage)
        log.info(result.summary)
    return result


def check_first(config: Any) -> Checked:
    """Every check of a search (``nas.hydra_cli.CheckFirst`` runs it before Hydra makes the
    run folder and writes its record there: a refused command leaves every file as it was)."""
    hardware = config.hydra.runtime.choices.get("hardware", "?")
    with damaged_storage_is_refused(str(config.search.storage), "search.storage"):
        checked = check(config, hardware)  # the study's name first: it names the folder
    check_folder(Path(str(config.hydra.run.dir)), "hydra.run.dir")
    return checked


def check_sweep_job(config: Any) -> None:
    """What a sweep's job is checked for before the first job starts: its settings and folder."""
    typed(SearchConfig, config.search, "search")
    check_folder(Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir), "hydra.sweep.dir")


def _task(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    from nas.hydra_cli import CheckFirst

    # Optuna logs a failed trial (Ctrl-C, a bad table) with its traceback; we report it in one line.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    hc = HydraConfig.get()
    checked = CheckFirst.take()  # None in a sweep's job
    with stop_cleanly("completed trials are saved; re-run the same command to resume"):
        exit_on_user_error(run_from_config)(cfg, hc.runtime.choices.get("hardware", "?"),
                                            Path(hc.runtime.output_dir), checked)


def main() -> None:
    """``python -m nas.search``: Hydra composes the config; one-line errors."""
    from nas.hydra_cli import launch

    launch("nas-search", "config", _task)


if __name__ == "__main__":
    main()
