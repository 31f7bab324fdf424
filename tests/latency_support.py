"""Helpers for the latency tests: a small inline space and a synthetic table on disk."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nas.latency.spec import space_blocks
from nas.latency.files import COLUMNS, FORMAT, json_path, write_meta
from nas.space import SearchSpace

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
