"""What an earlier build left next to a table, read without changing a byte.

A build appends to ``<name>.csv`` (the rows), ``<name>.passes.csv`` (every pass, when
there are several) and ``<name>.calib.csv`` (the end-to-end timings of the calibration
models), and rewrites ``<name>.json``. Before it writes anything it reads them all here,
and a file that is not one of these (another header, binary, unparsable) or a table
measured elsewhere is refused with one line and left as it was. The half-written last
line an interrupted build may leave is skipped here; the build cuts it
(:func:`cut_partial_line`) only once it knows the files are its own.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from nas.errors import ConfigError
from nas.latency import fingerprint
from nas.latency.files import (COLUMNS, calibration_path, check_rows, json_path, legacy,
                               read_meta, row_key)
from nas.latency.spec import BlockKey

CALIB_COLUMNS = ("arch_id", "arch", "precision", "n_layer", "pass", "raw_sum_ms", "median_ms",
                 "p10_ms", "p90_ms", "repeats", "inner")
PASS_COLUMNS = COLUMNS + ("pass",)
KEEP_OUT = "refusing to touch it: move it away or set latency.table to another file"


def passes_path(path: str | Path) -> Path:
    """Every pass of every block when ``passes > 1``: ``x.passes.csv``."""
    p = Path(path)
    return p.with_name(p.stem + ".passes.csv")


@dataclass
class Earlier:
    """What an earlier build left (all empty for a new table).

    Attributes:
        rows: the table's rows by block.
        passes: every pass by (block, pass).
        calib: the calibration models' timings by (arch_id, pass).
        meta: the JSON fingerprint, or None when there is none.
        partial: the files whose last line an interrupted build left half-written.
    """

    rows: dict[BlockKey, dict[str, Any]]
    passes: dict[tuple[BlockKey, int], dict[str, Any]]
    calib: dict[tuple[str, int], dict[str, Any]]
    meta: dict[str, Any] | None
    partial: list[Path]

    @property
    def complete(self) -> bool:
        """True when the build that wrote the JSON finished."""
        return self.meta is not None and self.meta.get("complete") is True


def _read_ours(path: Path, columns: tuple[str, ...]) -> tuple[pd.DataFrame, bool]:
    """The complete rows of a CSV a build appends to, and whether its last line is partial.

    Raises:
        ConfigError: the first line is not exactly the header a build writes (the file
            is someone else's), or the rows do not parse.
    """
    if not path.exists():
        return pd.DataFrame(columns=list(columns)), False
    if not path.is_file():
        raise ConfigError(f"{path}: not a file; set latency.table to a CSV file path")
    data = path.read_bytes()
    header = ",".join(columns)
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if data and first not in (header.encode(), ",".join(legacy(columns)).encode()):
        text = first[:60].decode("utf-8", errors="replace")
        shown = f"first line {text!r}" if text.isprintable() and "\ufffd" not in text else "binary"
        raise ConfigError(f"{path}: not a file a latency build wrote ({shown}; expected the "
                          f"header '{header}'); {KEEP_OUT}")
    partial = bool(data) and not data.endswith(b"\n")
    whole = data[: data.rfind(b"\n") + 1] if partial else data
    if b"\n" not in whole:  # nothing but the header (or part of it)
        return pd.DataFrame(columns=list(columns)), partial
    try:
        df = pd.read_csv(io.BytesIO(whole), dtype={"kind": str, "precision": str})
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        first_err = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: not a readable CSV ({first_err}); delete it to re-measure "
                          "what it held") from None
    return df, partial


def _rows(path: Path, df: pd.DataFrame) -> dict[BlockKey, dict[str, Any]]:
    if df.empty:
        return {}
    return {row_key(r): r for r in check_rows(df, path).to_dict("records")}


def _passes(path: Path, df: pd.DataFrame) -> dict[tuple[BlockKey, int], dict[str, Any]]:
    out: dict[tuple[BlockKey, int], dict[str, Any]] = {}
    if df.empty:
        return out
    passes = pd.to_numeric(df["pass"], errors="coerce")
    if passes.isna().any():
        raise ConfigError(f"{path}: column 'pass' is empty or not a number (hand-edited?); "
                          "delete it to re-measure what it held")
    for i, sub in df.groupby(passes.astype(int)):
        for r in check_rows(sub.drop(columns=["pass"]), path).to_dict("records"):
            out[(row_key(r), int(i))] = r
    return out


def _calib(df: pd.DataFrame) -> dict[tuple[str, int], dict[str, Any]]:
    df = df.dropna()
    for c in ("median_ms", "pass"):
        df = df.assign(**{c: pd.to_numeric(df[c], errors="coerce")}).dropna()
    df = df[df["median_ms"] > 0]
    return {(str(r["arch_id"]), int(r["pass"])): r for r in df.to_dict("records")}


def read_earlier(csv: Path, passes: bool, calibration: bool) -> Earlier:
    """Read what an earlier build left next to ``csv``; change nothing.

    Args:
        csv: the table's CSV.
        passes: read ``<name>.passes.csv`` too (the build measures several passes).
        calibration: read ``<name>.calib.csv`` too (the build fits a correction).

    Raises:
        ConfigError: a file that is not one a build writes, or damaged rows.
    """
    rows, cut = _read_ours(csv, COLUMNS)
    partial = [csv] if cut else []
    per_pass: pd.DataFrame = pd.DataFrame(columns=list(PASS_COLUMNS))
    if passes:
        per_pass, cut = _read_ours(passes_path(csv), PASS_COLUMNS)
        partial += [passes_path(csv)] if cut else []
    calib: pd.DataFrame = pd.DataFrame(columns=list(CALIB_COLUMNS))
    if calibration:
        calib, cut = _read_ours(calibration_path(csv), CALIB_COLUMNS)
        partial += [calibration_path(csv)] if cut else []
    meta = read_meta(json_path(csv), advice=KEEP_OUT) if json_path(csv).exists() else None
    return Earlier(_rows(csv, rows), _passes(passes_path(csv), per_pass), _calib(calib), meta,
                   partial)


def cut_partial_line(path: Path) -> None:
    """Drop the last line of ``path``, which a crash left half-written."""
    data = path.read_bytes()
    path.write_bytes(data[: data.rfind(b"\n") + 1])


def check_resume(csv: Path, meta_old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """Refuse to add rows to a table measured elsewhere or for another workload."""
    if meta_old is None:
        raise ConfigError(f"{csv}: has rows but no {json_path(csv).name} saying what measured "
                          "them; delete it (or restore the JSON) and build again")
    old = {"phase": "prefill", "prompt_len": None, **meta_old["workload"]}  # before decode
    now = {"prompt_len": None, **new["workload"]}
    wrong = [f"{k} {old.get(k)!r} (now {now[k]!r})"
             for k in ("phase", "device", "batch_size", "seq_len", "prompt_len", "mode", "threads")
             if old.get(k) != now[k]]
    wrong += [f"{k} {meta_old['space'].get(k)!r} (now {new['space'][k]!r})"
              for k in ("head_dim", "vocab_size") if meta_old["space"].get(k) != new["space"][k]]
    old_clock = meta_old.get("timer", {}).get("cpu_clock", "wall")
    if new["workload"]["device"] == "cpu" and old_clock != new["timer"]["cpu_clock"]:
        wrong.append(f"cpu_clock {old_clock!r} (now {new['timer']['cpu_clock']!r})")
    wrong += fingerprint.mismatches(meta_old["fingerprint"], new["fingerprint"])
    if wrong:
        raise ConfigError(f"{csv}: existing rows were measured with {'; '.join(wrong)}; refusing "
                          f"to mix measurements: delete {csv.name} and {json_path(csv).name}, or "
                          "set latency.table to another file")


TIMER_KEYS = ("repeats", "warmup", "window_ms", "max_inner", "passes")


def check_timer(csv: Path, meta_old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to add rows timed otherwise than the rows already in the table.

    The JSON records one set of timer settings for the whole table, so rows measured with
    other repeats, windows or passes could never be told apart from the first ones.
    """
    old, now = meta_old.get("timer"), new["timer"]
    if not isinstance(old, dict):
        return  # a table from before timer settings were recorded: nothing to compare
    keys = TIMER_KEYS + (("graph_calls",) if new["workload"]["mode"] in ("graph", "fused") else ())
    wrong = [f"{k} {old.get(k)!r} (now {now[k]!r})" for k in keys
             if k in old and old[k] != now[k]]
    if wrong:
        raise ConfigError(f"{csv}: the table was measured with other timer settings: "
                          f"{'; '.join(wrong)}; refusing to mix them in one table: repeat its "
                          f"command ({meta_old.get('command')}) or set latency.table to another file")


def differences(old: dict[str, Any], new: dict[str, Any], calibration_n: int,
                calibration_seed: int) -> list[str]:
    """What a build asks for that the finished table ``old`` was not built with.

    Only what would change the table counts: its precisions, the shapes of its space and
    its correction. Timer settings do not; the rows stand as they were measured.

    Args:
        old: the finished table's JSON.
        new: the JSON this build would write.
        calibration_n, calibration_seed: the correction this build asks for.

    Returns:
        ``"what (table: what it has)"`` per difference; empty when the table is as asked.
    """
    out = []
    have = list(old["workload"]["precisions"])
    extra = [p for p in new["workload"]["precisions"] if p not in have]
    if extra:
        out.append(f"precisions {extra} (table: {have})")
    for k in ("n_layer", "d_model", "n_head", "d_ff", "block_size"):
        if old["space"].get(k) != new["space"][k]:
            out.append(f"space {k} {new['space'][k]} (table: {old['space'].get(k)})")
    cal = old.get("calibration") or {}
    want = f"n={calibration_n} seed={calibration_seed}" if calibration_n > 0 else "none"
    wrong: dict[str, list[str]] = {}  # what the table has -> the precisions it has that for
    for p in new["workload"]["precisions"]:
        c = cal.get(p)
        got = f"n={c.get('n')} seed={c.get('seed')}" if isinstance(c, dict) else "none"
        if got != want:
            wrong.setdefault(got, []).append(p)
    out += [f"calibration {want} of {', '.join(ps)} (table: {got})" for got, ps in wrong.items()]
    return out
