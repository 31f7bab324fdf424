"""Helpers for the search tests: the committed CPU table of the ``tiny`` space, running
the commands as a user would, and the search without Hydra."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE = "latency_tables/cpu-tiny.csv"
# Scoring on one batch of four windows: the numbers are rough, the code path is the real one.
FAST_SCORE = ["score.n_batches=1", "score.batch_size=4"]


def budget_between(table, space, frac: float = 0.35) -> float:
    """A budget some way between the fastest and the largest architecture of the space."""
    from nas.search.setup import fastest_arch

    lo = fastest_arch(space, table, "cpu")[1]
    hi = table.predict_ms(space.largest("fp32"))
    return round(lo + frac * (hi - lo), 4)


def search_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "nas.search", f"hardware.table={TABLE}", *overrides]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = str(ROOT)
    # One thread per process: several processes' OpenMP threads on a shared 2-core CPU spin
    # against each other and make every small op stall.
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a command of the package from ``cwd`` (outputs/ lands there, not in the repo)."""
    return subprocess.run(args, cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=timeout)


def search_in_process(space, table, scorer, url: str, name: str, n_trials: int,
                      budget_ms: float | None, sampler: str = "nsga2", seed: int = 0,
                      objectives: tuple[str, ...] = ("val_loss", "latency_ms"),
                      budgets: dict[str, float] | None = None, serving=None):
    """``nas.search.run_search`` as the command calls it, without Hydra."""
    from nas.search.samplers import SamplerConfig
    from nas.search.run import SearchConfig, run_search

    cfg = SearchConfig(n_trials=n_trials, study_name=name, storage=url, latency_budget_ms=budget_ms,
                       seed=seed, progress=False, objectives=objectives, budgets=budgets or {})
    attrs = {"space": space.to_dict(), "device": "cpu", "hardware": "cpu", "table": TABLE,
             "latency_budget_ms": budget_ms, "budgets": cfg.budget_map()}
    latency = table if serving is None else {"prefill": table, "serving": serving}
    return run_search(space, latency, scorer, cfg, SamplerConfig(name=sampler, population_size=6),
                      device="cpu", study_attrs=attrs,
                      trial_attrs={"table_fingerprint": dict(table.fingerprint)})


class FakeServing:
    """What the objectives call of ``nas.latency.predict.CostModel``, made up from the
    prefill table, so a search over decode latency and memory runs without their tables."""

    def __init__(self, table):
        self.table = table

    def decode_ms(self, arch) -> float:
        return self.table.predict_ms(arch) / 4

    def request_ms(self, arch) -> float:
        return self.table.predict_ms(arch) + 31 * self.decode_ms(arch)

    def peak_memory_mb(self, arch) -> float:
        return arch.n_params * {"fp32": 4, "bf16": 2, "int8": 1}[arch.precision] / 2**20 + 0.1
