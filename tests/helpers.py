"""Helpers of the test suite (fixtures are in ``conftest.py``): the committed CPU table of
the ``tiny`` space, running the commands as a user would, the search without Hydra,
synthetic latency tables, and a real PostgreSQL server's binaries."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from nas.latency.files import COLUMNS, FORMAT, json_path, write_meta
from nas.latency.spec import space_blocks
from nas.space import SearchSpace

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
    # The committed table, which the fixtures' budgets come from, on any CPU (not this
    # machine's own, which hardware=cpu would measure on first use on another CPU).
    return [sys.executable, "-m", "nas.search", f"hardware.table={TABLE}", "hardware.local=false",
            *overrides]


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
    """``nas.search.run.run_study`` as the command calls it, without Hydra."""
    from nas.search.samplers import SamplerConfig
    from nas.search.config import SearchConfig
    from nas.search.run import run_study

    cfg = SearchConfig(n_trials=n_trials, study_name=name, storage=url, latency_budget_ms=budget_ms,
                       seed=seed, progress=False, objectives=objectives, budgets=budgets or {})
    attrs = {"space": space.to_dict(), "device": "cpu", "hardware": "cpu", "table": TABLE,
             "latency_budget_ms": budget_ms, "budgets": cfg.budget_map()}
    latency = table if serving is None else {"prefill": table, "serving": serving}
    return run_study(space, latency, scorer, cfg, SamplerConfig(name=sampler, population_size=6),
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


# --- latency tables ------------------------------------------------------------------

SPACE = {
    "name": "lat_micro", "vocab_size": 65, "block_size": 16, "head_dim": 32,
    "n_layer": {"min": 1, "max": 2}, "d_model": [32, 64], "n_head": [1, 2],
    "d_ff": [64, 128], "precision": {"cpu": ["fp32", "int8"], "cuda": ["fp32", "bf16"]},
}


def space() -> SearchSpace:
    return SearchSpace.from_dict(SPACE)


def block_ms(kind: str, d: int, h: int, f: int, precision: str) -> float:
    """A made-up but shape-dependent block time (ms)."""
    base = {"embedding": 0.01, "attention": 0.05, "ffn": 0.04, "head": 0.02, "layernorm": 0.005}
    return base[kind] * (1 + d / 64) * (1 + h / 2) * (1 + f / 128) * (1.5 if precision == "int8" else 1)


def fake_table(folder: Path, name: str = "fake.csv", device: str = "cpu",
               batch_size: int = 1, seq_len: int = 16,
               calibration: dict[str, Any] | None = None) -> Path:
    """Write a valid table (CSV + JSON) with synthetic times for :data:`SPACE`."""
    sp = space()
    precs = sp.precisions(device)
    rows = []
    for k in space_blocks(sp, precs):
        ms = block_ms(k.kind, k.d_model, k.n_head, k.d_ff, k.precision)
        rows.append({"kind": k.kind, "d_model": k.d_model, "n_head": k.n_head, "d_ff": k.d_ff,
                     "precision": k.precision, "batch_size": batch_size, "seq_len": seq_len,
                     "median_ms": ms, "p10_ms": 0.9 * ms, "p90_ms": 1.2 * ms, "repeats": 5,
                     "inner": 10})
    path = Path(folder) / name
    pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(path, index=False)
    if calibration is None:
        calibration = {p: {"a": 1.1, "b": 0.01, "c": 0.02, "n": 8, "seed": 1000, "rmse_pct": 1.0,
                           "max_abs_pct": 2.0, "raw_rmse_pct": 9.0} for p in precs}
    write_meta(json_path(path), {
        "format": FORMAT, "table": path.name, "complete": True,
        "workload": {"device": device, "batch_size": batch_size, "seq_len": seq_len,
                     "precisions": list(precs), "mode": "eager", "threads": 1},
        "space": sp.to_dict(),
        "timer": {"repeats": 5, "warmup": 1, "window_ms": 1.0, "cpu_clock": "thread"},
        "fingerprint": {"device": device, "cpu_model": "test", "cpu_count": 2, "threads": 1,
                        **({"gpu_name": "NVIDIA H100 80GB HBM3"} if device == "cuda" else {})},
        "command": "fake", "calibration": calibration})
    return path


# --- PostgreSQL (Debian's server binaries; .ci/run installs them when missing) --------

def server_bin() -> Path | None:
    """The newest installed server's bin folder (or the one on PATH), None if none is."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_as(user: str | None, args: list[str], **kw) -> subprocess.CompletedProcess:
    if user is not None:
        args = ["runuser", "-u", user, "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kw)


def has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False
