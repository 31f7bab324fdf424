"""The files of a latency table: their format, and reading and writing them.

``<name>.csv`` has one row per block, shape and precision (see :data:`COLUMNS`), read
and written with pandas; builds append rows to it as they are measured
(:class:`RowWriter`). ``<name>.json`` says what measured it and for what: the hardware
and software fingerprint, the workload (device, batch size, sequence length, mode,
threads), the search space, the timer settings, the command, and the per-precision
:class:`~nas.latency.calibrate.Calibration` the predictor applies. Reading checks both
and refuses, with a one-line :class:`ConfigError` naming the file, anything damaged.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from nas.errors import ConfigError, shown
from nas.latency.spec import KINDS, BlockKey
from nas.outputs import write_atomic
from nas.signals import held
from nas.space import PRECISIONS

FORMAT = 1
KEY_COLUMNS = ("kind", "d_model", "n_head", "d_ff", "precision", "n_kv_head")
INT_COLUMNS = ("d_model", "n_head", "d_ff", "batch_size", "seq_len", "repeats", "inner",
               "n_kv_head")
TIME_COLUMNS = ("median_ms", "p10_ms", "p90_ms")
# n_kv_head last: a table written before grouped-query attention has every other column
# in this order, and a build resuming it keeps appending in its own header's columns.
COLUMNS = KEY_COLUMNS[:-1] + ("batch_size", "seq_len") + TIME_COLUMNS + ("repeats", "inner",
                                                                          "n_kv_head")


def legacy(columns: Iterable[str]) -> list[str]:
    """The header of the same file as written before grouped-query attention."""
    return [c for c in columns if c != "n_kv_head"]


def json_path(path: str | Path) -> Path:
    """The fingerprint file of a table: ``x.csv`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def calibration_path(path: str | Path) -> Path:
    """The end-to-end measurements the calibration was fitted on: ``x.calib.csv``."""
    p = Path(path)
    return p.with_name(p.stem + ".calib.csv")


BLOCK_MS_MAX = 1e6  # one block for over 16 minutes
INT_MAX = 2 ** 31


def check_rows(df: pd.DataFrame, where: str | Path) -> pd.DataFrame:
    """Validate a table's rows; return them with proper dtypes.

    Raises:
        ConfigError: a missing column, an empty or non-numeric value, a negative or zero
            time, p10 > median > p90, an unknown kind or precision, a duplicate row.
    """
    # A table from before grouped-query attention has no n_kv_head: full attention.
    kv = df["n_kv_head"] if "n_kv_head" in df.columns else pd.Series(np.nan, index=df.index)
    full = np.where(df["kind"] == "attention", df["n_head"], 0) if "n_head" in df.columns else 0
    df = df.assign(n_kv_head=kv.where(kv.notna(), full))
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ConfigError(f"{where}: missing column(s) {missing}; a table has {list(COLUMNS)} "
                          "(truncated or hand-edited? rebuild it)")
    df = df[list(COLUMNS)].copy()
    if df.empty:
        raise ConfigError(f"{where}: no rows; rebuild the table")
    for c in ("kind", "precision"):
        bad = df[c].isna()
        if bad.any():
            raise ConfigError(f"{where}: line {_line(df, bad)}: empty '{c}' "
                              "(truncated or hand-edited?)")
        df[c] = df[c].astype(str).str.strip()
    for c in INT_COLUMNS + TIME_COLUMNS:
        num = pd.to_numeric(df[c], errors="coerce")
        bad = num.isna() | ~np.isfinite(num)
        if bad.any():
            raise ConfigError(f"{where}: line {_line(df, bad)}: column '{c}' is empty, NaN or not a "
                              "number (truncated or hand-edited?)")
        if c in INT_COLUMNS:
            if (num != num.round()).any():
                raise ConfigError(f"{where}: line {_line(df, num != num.round())}: column '{c}' "
                                  "must be an integer")
            num = num.astype(int)
        df[c] = num
    for c in TIME_COLUMNS:
        bad = df[c] <= 0
        if bad.any():
            raise ConfigError(f"{where}: line {_line(df, bad)}: column '{c}' is "
                              f"{df.loc[bad, c].iloc[0]}; times must be positive")
        # A block that takes minutes was not measured: such a row would make every
        # prediction absurd (1e308 ms sums to inf) while the search runs on.
        bad = df[c] > BLOCK_MS_MAX
        if bad.any():
            raise ConfigError(f"{where}: line {_line(df, bad)}: column '{c}' is "
                              f"{df.loc[bad, c].iloc[0]:.4g} ms, beyond the {BLOCK_MS_MAX:g} ms "
                              "a block can take (hand-edited?); rebuild the table")
    for c in INT_COLUMNS:
        bad = df[c].abs() > INT_MAX
        if bad.any():
            raise ConfigError(f"{where}: line {_line(df, bad)}: column '{c}' is "
                              f"{df.loc[bad, c].iloc[0]:.4g}, beyond any size a table measures")
    bad = (df["p10_ms"] > df["median_ms"] * (1 + 1e-9)) | (df["median_ms"] > df["p90_ms"] * (1 + 1e-9))
    if bad.any():
        raise ConfigError(f"{where}: line {_line(df, bad)}: p10_ms <= median_ms <= p90_ms does not "
                          "hold (hand-edited?)")
    for c in ("d_model", "batch_size", "seq_len", "repeats", "inner"):
        bad = df[c] < 1
        if bad.any():
            raise ConfigError(f"{where}: line {_line(df, bad)}: column '{c}' must be >= 1")
    bad = ~df["kind"].isin(KINDS)
    if bad.any():
        raise ConfigError(f"{where}: line {_line(df, bad)}: unknown kind "
                          f"{df.loc[bad, 'kind'].iloc[0]!r}; known: {list(KINDS)}")
    known = sorted(set(PRECISIONS["cpu"]) | set(PRECISIONS["cuda"]))
    bad = ~df["precision"].isin(known)
    if bad.any():
        raise ConfigError(f"{where}: line {_line(df, bad)}: unknown precision "
                          f"{df.loc[bad, 'precision'].iloc[0]!r}; known: {known}")
    dup = df.duplicated(list(KEY_COLUMNS))
    if dup.any():
        raise ConfigError(f"{where}: line {_line(df, dup)}: duplicate row for "
                          f"{row_key(df[dup].iloc[0]).describe()}")
    return df


def _line(df: pd.DataFrame, mask: pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2  # 1-based, after the header


def row_key(row: Mapping[str, Any]) -> BlockKey:
    """The block a table row times."""
    return BlockKey(str(row["kind"]), int(row["d_model"]), int(row["n_head"]), int(row["d_ff"]),
                    str(row["precision"]), int(row.get("n_kv_head", 0)))


def read_rows(path: str | Path) -> pd.DataFrame:
    """Read and validate a table CSV (raises ConfigError naming the file)."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # every row is written whole, with its line end
                    raise ConfigError(f"{p}: the last line has no line end (truncated?); rebuild "
                                      "the table, or re-run its build to resume")
        df = pd.read_csv(p, dtype={"kind": str, "precision": str})
    except FileNotFoundError:
        raise ConfigError(f"{p}: latency table not found") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{p}: not a readable CSV ({first}); rebuild the table") from None
    return check_rows(df, p)


# Fields of a table's JSON read as numbers or names: a value of another type is refused
# here, in one line, not as a TypeError when the table is used.
META_TYPES = [("workload", "device", (str,)), ("workload", "batch_size", (int,)),
              ("workload", "seq_len", (int,)), ("workload", "mode", (str,)),
              ("workload", "precisions", (list,)), ("workload", "threads", (int,)),
              ("workload", "phase", (str, type(None))), ("space", "name", (str,)),
              ("space", "head_dim", (int,)), ("space", "vocab_size", (int,)),
              ("space", "block_size", (int,)), ("fingerprint", "device", (str,))]


def read_meta(path: str | Path, advice: str = "rebuild the table") -> dict[str, Any]:
    """Read and check a table's JSON fingerprint.

    Args:
        path: the JSON file.
        advice: what the error message tells the user to do about a damaged file.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: fingerprint file not found next to the table; a table without "
                          "one cannot be trusted, rebuild it")
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid JSON ({e.__class__.__name__}); {advice}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{p}: expected a JSON object; {advice}")
    need = {"workload": ("device", "batch_size", "seq_len", "mode", "precisions", "threads"),
            "space": ("name", "head_dim", "vocab_size", "block_size"),
            "fingerprint": ("device",)}
    for section, keys in need.items():
        if not isinstance(meta.get(section), dict):
            raise ConfigError(f"{p}: missing section '{section}'; {advice}")
        for k in keys:
            if k not in meta[section]:
                raise ConfigError(f"{p}: missing '{section}.{k}'; {advice}")
    for section, key, types in META_TYPES:
        v = meta[section].get(key)
        if key in meta[section] and not (isinstance(v, types) and not isinstance(v, bool)
                                         and (not isinstance(v, int) or 0 < v <= INT_MAX)):
            raise ConfigError(f"{p}: '{section}.{key}' is {shown(v, 60)}, not "
                              f"{' or '.join(t.__name__ for t in types)} (hand-edited?); {advice}")
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{p}: format {meta.get('format')!r}; this code reads format {FORMAT}, "
                          f"{advice}")
    return meta


def write_meta(path: str | Path, meta: Mapping[str, Any]) -> None:
    """Write the JSON fingerprint atomically (a crash never leaves half a file)."""
    text = json.dumps(meta, indent=2, sort_keys=False) + "\n"
    write_atomic(path, lambda f: f.write(text.encode()))


def write_csv(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> None:
    """Write a whole CSV atomically."""
    text = pd.DataFrame(list(rows), columns=list(columns)).to_csv(index=False, float_format="%.6g")
    write_atomic(path, lambda f: f.write(text.encode()))


def memory_path(path: str | Path) -> Path:
    """A decode table's measured peaks of its calibration models: ``x.memory.csv``."""
    p = Path(path)
    return p.with_name(p.stem + ".memory.csv")


class RowWriter:
    """Append rows to a CSV as they are measured, so an interrupted build keeps them."""

    def __init__(self, path: str | Path, columns: Iterable[str]):
        self.path, self.columns = Path(path), list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            with held():
                pd.DataFrame(columns=self.columns).to_csv(self.path, index=False)
        else:  # resuming: keep the file's own header (an older one has no n_kv_head)
            with open(self.path, "rb") as f:
                first = f.readline().decode("utf-8", "replace").strip()
            if first == ",".join(legacy(self.columns)):
                self.columns = legacy(self.columns)

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row, flushed and synced to disk."""
        if ("n_kv_head" not in self.columns and row.get("kind") == "attention"
                and row.get("n_kv_head", row.get("n_head")) != row.get("n_head")):
            raise ConfigError(f"{self.path}: written before grouped-query attention; build "
                              "grouped blocks into a new table")
        line = pd.DataFrame([{c: row[c] for c in self.columns}]).to_csv(
            index=False, header=False, float_format="%.6g")
        with held(), open(self.path, "a") as f:  # a Ctrl-C waits for the whole line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
