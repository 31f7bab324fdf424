"""Latency tables: a CSV of block timings next to a JSON fingerprint, and the predictor.

``<name>.csv`` has one row per block, shape and precision (see :data:`COLUMNS`), read
and written with pandas. ``<name>.json`` says what measured it and for what: the
hardware and software fingerprint, the workload (device, batch size, sequence length,
mode, threads), the search space, the timer settings, the command, and the per-precision
:class:`~nas.latency.calibrate.Calibration` the predictor applies. Loading checks both
files and refuses, with a one-line :class:`ConfigError` naming the file, anything it
cannot vouch for: a predictor never returns a guessed number.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from nas.errors import ConfigError
from nas.latency.calibrate import Calibration
from nas.latency.spec import KINDS, BlockKey, arch_blocks, space_blocks
from nas.space import PRECISIONS, ROOT, ArchConfig, SearchSpace

FORMAT = 1
KEY_COLUMNS = ("kind", "d_model", "n_head", "d_ff", "precision")
INT_COLUMNS = ("d_model", "n_head", "d_ff", "batch_size", "seq_len", "repeats", "inner")
TIME_COLUMNS = ("median_ms", "p10_ms", "p90_ms")
COLUMNS = KEY_COLUMNS + ("batch_size", "seq_len") + TIME_COLUMNS + ("repeats", "inner")
PREDICTED_KINDS = ("embedding", "attention", "ffn", "head")


def json_path(path: str | Path) -> Path:
    """The fingerprint file of a table: ``x.csv`` -> ``x.json``."""
    return Path(path).with_suffix(".json")


def calibration_path(path: str | Path) -> Path:
    """The end-to-end measurements the calibration was fitted on: ``x.calib.csv``."""
    p = Path(path)
    return p.with_name(p.stem + ".calib.csv")


def resolve(path: str | Path) -> Path:
    """``path`` as given, or under the repository root when it is relative and only there."""
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (ROOT / p).exists():
        return ROOT / p
    return p


def build_command(path: str | Path, device: str | None = None, batch_size: int | None = None,
                  seq_len: int | None = None, space: str | None = None,
                  mode: str | None = None) -> str:
    """The command that builds a table for this workload (for error messages)."""
    parts = ["python -m nas.latency build"]
    if space:
        parts.append(f"search_space={space}")
    if device:
        parts.append(f"hardware.device={device}")
    parts.append(f"latency.table={path}")
    if batch_size:
        parts.append(f"latency.batch_size={batch_size}")
    if seq_len:
        parts.append(f"latency.seq_len={seq_len}")
    if mode and mode != "eager":
        parts.append(f"latency.mode={mode}")
    return " ".join(parts)


def _other_path(path: Path, device: str, batch_size: int, seq_len: int) -> Path:
    return path.with_name(f"{path.stem}-{device}-b{batch_size}-t{seq_len}.csv")


def check_rows(df: pd.DataFrame, where: str | Path) -> pd.DataFrame:
    """Validate a table's rows; return them with proper dtypes.

    Raises:
        ConfigError: a missing column, an empty or non-numeric value, a negative or zero
            time, p10 > median > p90, an unknown kind or precision, a duplicate row.
    """
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
                          f"{_key(df[dup].iloc[0]).describe()}")
    return df


def _line(df: pd.DataFrame, mask: pd.Series) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0]) + 2  # 1-based, after the header


def _key(row: Mapping[str, Any]) -> BlockKey:
    return BlockKey(str(row["kind"]), int(row["d_model"]), int(row["n_head"]), int(row["d_ff"]),
                    str(row["precision"]))


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


def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and check a table's JSON fingerprint (``path`` is the JSON file)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: fingerprint file not found next to the table; a table without "
                          "one cannot be trusted, rebuild it")
    try:
        meta = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid JSON ({e.__class__.__name__}); rebuild the table") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{p}: expected a JSON object; rebuild the table")
    need = {"workload": ("device", "batch_size", "seq_len", "mode", "precisions", "threads"),
            "space": ("name", "head_dim", "vocab_size", "block_size"),
            "fingerprint": ("device",)}
    for section, keys in need.items():
        if not isinstance(meta.get(section), dict):
            raise ConfigError(f"{p}: missing section '{section}'; rebuild the table")
        for k in keys:
            if k not in meta[section]:
                raise ConfigError(f"{p}: missing '{section}.{k}'; rebuild the table")
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{p}: format {meta.get('format')!r}; this code reads format {FORMAT}, "
                          "rebuild the table")
    return meta


def write_meta(path: str | Path, meta: Mapping[str, Any]) -> None:
    """Write the JSON fingerprint atomically (a crash never leaves half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(meta, f, indent=2, sort_keys=False)
        f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it private; a table is meant to be shared
    os.replace(tmp, p)


class LatencyTable:
    """Measured block latencies of one device and workload, and the predictor.

    Attributes:
        path: the CSV file.
        device: ``"cpu"`` or ``"cuda"``.
        batch_size, seq_len: the workload the blocks were measured on.
        mode: ``"eager"`` or ``"graph"``.
        precisions: the precisions the table has rows for.
        meta: the JSON fingerprint, as read.
        rows: the validated CSV, as a DataFrame.
    """

    def __init__(self, path: Path, rows: pd.DataFrame, meta: dict[str, Any]):
        self.path, self.rows, self.meta = path, rows, meta
        w = meta["workload"]
        self.device: str = w["device"]
        self.batch_size: int = int(w["batch_size"])
        self.seq_len: int = int(w["seq_len"])
        self.mode: str = w["mode"]
        self.threads: int = int(w["threads"])
        self.head_dim: int = int(meta["space"]["head_dim"])
        self.vocab_size: int = int(meta["space"]["vocab_size"])
        self.fingerprint: dict[str, Any] = meta["fingerprint"]
        # Which CPU clock timed it; validation must time models with the same one.
        self.cpu_clock: str = str((meta.get("timer") or {}).get("cpu_clock", "wall"))
        self.passes: int = int((meta.get("timer") or {}).get("passes", 1))
        self._ms: dict[BlockKey, float] = {
            _key(r): float(r["median_ms"]) for r in rows.to_dict("records")}
        self.precisions: tuple[str, ...] = tuple(sorted(set(rows["precision"])))
        cal = meta.get("calibration") or {}
        if not isinstance(cal, dict):
            raise ConfigError(f"{json_path(path)}: 'calibration' must be an object; rebuild the table")
        self.calibration: dict[str, Calibration] = {
            p: Calibration.from_dict(c, str(json_path(path))) for p, c in cal.items()}

    # --- loading -----------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, space: SearchSpace | None = None,
             device: str | None = None, batch_size: int | None = None,
             seq_len: int | None = None, mode: str | None = None,
             precisions: Iterable[str] | None = None, gpu_name: str | None = None,
             require_calibration: bool = True) -> "LatencyTable":
        """Load a table and check it is the one asked for.

        Args:
            path: the CSV (its JSON sits next to it). A relative path that does not exist
                from the working directory is looked up under the repository root.
            space: when given, the table must cover every block of this space in
                ``precisions`` (default: all the space allows on the table's device).
            device, batch_size, seq_len, mode: when given, must match the workload the
                table was measured for.
            precisions: the precisions that must be covered.
            gpu_name: when given, must occur in the GPU name of the fingerprint
                (e.g. ``"H100"``).
            require_calibration: every covered precision must have a fitted correction.

        Returns:
            The table.

        Raises:
            ConfigError: a missing or damaged file, another device or workload, or a
                space the table does not cover; the message says how to rebuild it.
        """
        p = resolve(path)
        if not p.is_file():
            hint = build_command(path, device, batch_size, seq_len, space.name if space else None,
                                 mode)
            raise ConfigError(f"{p}: latency table not found; build it with: {hint}")
        meta = read_meta(json_path(p))
        if not meta.get("complete", False):
            cmd = meta.get("command") or "python -m nas.latency build"
            raise ConfigError(f"{p}: the build that wrote this table did not finish; re-run its "
                              f"command to resume: {cmd}")
        rows = read_rows(p)
        if "n_rows" in meta and len(rows) != meta["n_rows"]:
            raise ConfigError(f"{p}: has {len(rows)} rows but its fingerprint says {meta['n_rows']} "
                              "(truncated or hand-edited?); rebuild the table")
        table = cls(p, rows, meta)
        table._check_workload(device, batch_size, seq_len, mode, gpu_name, space)
        if space is not None:
            table.check_covers(space, precisions, require_calibration)
        elif precisions is not None:
            table._check_precisions(tuple(precisions), require_calibration)
        return table

    def _check_workload(self, device: str | None, batch_size: int | None, seq_len: int | None,
                        mode: str | None, gpu_name: str | None, space: SearchSpace | None) -> None:
        asked = {"device": device, "batch_size": batch_size, "seq_len": seq_len, "mode": mode}
        have = {"device": self.device, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "mode": self.mode}
        wrong = [f"{k} {have[k]} (asked {v})" for k, v in asked.items()
                 if v is not None and v != have[k]]
        if gpu_name is not None:
            name = str(self.fingerprint.get("gpu_name") or "")
            if gpu_name.lower() not in name.lower():
                wrong.append(f"GPU {name or 'none'!r} (asked {gpu_name!r})")
        bad_rows = self.rows[(self.rows["batch_size"] != self.batch_size)
                             | (self.rows["seq_len"] != self.seq_len)]
        if not bad_rows.empty:
            raise ConfigError(f"{self.path}: line {int(bad_rows.index[0]) + 2}: batch_size/seq_len "
                              f"differ from the fingerprint's {self.batch_size}/{self.seq_len} "
                              "(hand-edited?); rebuild the table")
        if wrong:
            dev = device or self.device
            b, t = batch_size or self.batch_size, seq_len or self.seq_len
            new = _other_path(self.path, dev, b, t)
            cmd = build_command(new, dev, b, t, space.name if space else None, mode or self.mode)
            raise ConfigError(f"{self.path}: measured for {', '.join(wrong)}; build a table for "
                              f"this workload with: {cmd}")

    def _check_precisions(self, precisions: tuple[str, ...], require_calibration: bool) -> None:
        lacking = [p for p in precisions if p not in self.precisions]
        if lacking:
            raise ConfigError(f"{self.path}: no rows for precision(s) {lacking}; the table has "
                              f"{list(self.precisions)}; rebuild it with those precisions")
        if require_calibration:
            uncal = [p for p in precisions if p not in self.calibration]
            if uncal:
                raise ConfigError(f"{self.path}: no calibration for precision(s) {uncal} in "
                                  f"{json_path(self.path).name}; rebuild with calibration.n > 0")

    def missing(self, space: SearchSpace, precisions: Iterable[str] | None = None) -> list[BlockKey]:
        """Blocks of ``space`` (in ``precisions``) the table has no row for."""
        precs = tuple(precisions) if precisions is not None else space.precisions(self.device)
        return [k for k in space_blocks(space, precs, PREDICTED_KINDS) if k not in self._ms]

    def check_covers(self, space: SearchSpace, precisions: Iterable[str] | None = None,
                     require_calibration: bool = True) -> None:
        """Raise ConfigError unless every block of ``space`` has a row (and a calibration)."""
        precs = tuple(precisions) if precisions is not None else space.precisions(self.device)
        for key, have in (("head_dim", self.head_dim), ("vocab_size", self.vocab_size)):
            if getattr(space, key) != have:
                raise ConfigError(f"{self.path}: measured with {key} {have}; search space "
                                  f"'{space.name}' has {getattr(space, key)}; build a table for it")
        if self.seq_len > space.block_size:
            raise ConfigError(f"{self.path}: seq_len {self.seq_len} exceeds the context "
                              f"{space.block_size} of search space '{space.name}'")
        self._check_precisions(precs, require_calibration)
        gone = self.missing(space, precs)
        if gone:
            more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
            cmd = build_command(self.path, self.device, self.batch_size, self.seq_len, space.name,
                                self.mode)
            raise ConfigError(
                f"{self.path}: does not cover search space '{space.name}': no row for "
                f"{', '.join(k.describe() for k in gone[:3])}{more}; build it with: {cmd}")

    # --- prediction --------------------------------------------------------------
    def block_ms(self, key: BlockKey) -> float:
        """The measured median of one block (ConfigError when the table has no row)."""
        try:
            return self._ms[key]
        except KeyError:
            raise ConfigError(f"{self.path}: no row for {key.describe()}; {self._coverage()}") from None

    def _coverage(self) -> str:
        return (f"the table covers d_model {self._values('d_model')}, n_head "
                f"{self._values('n_head')}, d_ff {self._values('d_ff')}, precisions "
                f"{list(self.precisions)}")

    def _values(self, col: str) -> list[int]:
        return sorted(v for v in set(self.rows[col]) if v > 0)

    def raw_sum_ms(self, arch: ArchConfig) -> float:
        """The plain sum of the block medians of ``arch`` (no correction)."""
        for key, have in (("head_dim", self.head_dim), ("vocab_size", self.vocab_size)):
            if getattr(arch, key) != have:
                raise ConfigError(f"{self.path}: measured with {key} {have}; architecture "
                                  f"{arch.describe()} has {getattr(arch, key)}")
        if arch.block_size < self.seq_len:
            raise ConfigError(f"{self.path}: measured at seq_len {self.seq_len}, beyond the context "
                              f"{arch.block_size} of {arch.describe()}")
        if arch.precision not in self.precisions:
            raise ConfigError(f"{self.path}: no rows for precision {arch.precision!r} "
                              f"({arch.describe()}); the table has {list(self.precisions)}")
        keys = arch_blocks(arch)
        gone = [k for k in dict.fromkeys(keys) if k not in self._ms]
        if gone:
            raise ConfigError(f"{self.path}: {arch.describe()} is outside the table's coverage: no "
                              f"row for {', '.join(k.describe() for k in gone[:3])}; "
                              f"{self._coverage()}")
        return float(sum(self._ms[k] for k in keys))

    def predict_ms(self, arch: ArchConfig) -> float:
        """Predicted end-to-end forward latency of ``arch`` in milliseconds.

        The sum of its block medians, corrected by the precision's fitted
        :class:`~nas.latency.calibrate.Calibration` (the plain sum if the table was
        built without calibration).

        Raises:
            ConfigError: a block or precision of ``arch`` the table does not cover.
        """
        raw = self.raw_sum_ms(arch)
        cal = self.calibration.get(arch.precision)
        if cal is None:
            return raw
        ms = cal.apply(raw, arch.n_layer)
        if not ms > 0:
            raise ConfigError(f"{json_path(self.path)}: calibration of {arch.precision} gives "
                              f"{ms:.4g} ms for {arch.describe()}; rebuild the table")
        return float(ms)

    def describe(self) -> str:
        """One line: file, device, workload, precisions, GPU or CPU."""
        hw = self.fingerprint.get("gpu_name") or self.fingerprint.get("cpu_model") or "?"
        return (f"{self.path.name}: {self.device} ({hw}), batch {self.batch_size}, seq "
                f"{self.seq_len}, {self.mode}, {', '.join(self.precisions)}, {len(self._ms)} rows")


class RowWriter:
    """Append rows to a CSV as they are measured, so an interrupted build keeps them."""

    def __init__(self, path: str | Path, columns: Iterable[str]):
        self.path, self.columns = Path(path), list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            pd.DataFrame(columns=self.columns).to_csv(self.path, index=False)

    def append(self, row: Mapping[str, Any]) -> None:
        """Write one row, flushed and synced to disk."""
        line = pd.DataFrame([{c: row[c] for c in self.columns}]).to_csv(
            index=False, header=False, float_format="%.6g")
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
