"""Build a latency table: time every block of a space, then fit the end-to-end correction.

Rows are appended to the CSV (flushed, synced) as they are measured, and so are the
end-to-end timings of the calibration architectures (``<name>.calib.csv``) and, when
everything is measured in several passes, each pass (``<name>.passes.csv``). A build that
stops halfway therefore keeps its work: run the same command again and it measures
only what is missing, after checking that the existing rows were measured on this
machine for this workload (it never mixes two measurements in one table).
"""
from __future__ import annotations

import datetime as _dt
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from nas.errors import ConfigError
from nas.latency import fingerprint
from nas.latency.calibrate import fit
from nas.latency.measure import TimerSettings, set_cpu_threads, warm_gpu
from nas.latency.spec import BlockKey, Workload, arch_blocks, sample_archs, space_blocks
from nas.latency.files import (COLUMNS, FORMAT, RowWriter, calibration_path, check_rows, json_path,
                               read_meta, write_meta)
from nas.latency.table import LatencyTable
from nas.space import ROOT, SearchSpace

CALIB_COLUMNS = ("arch_id", "arch", "precision", "n_layer", "pass", "raw_sum_ms", "median_ms",
                 "p10_ms", "p90_ms", "repeats", "inner")
PASS_COLUMNS = COLUMNS + ("pass",)


def passes_path(path: str | Path) -> Path:
    """Every pass of every block when ``passes > 1``: ``x.passes.csv``."""
    p = Path(path)
    return p.with_name(p.stem + ".passes.csv")


def git_revision() -> str | None:
    """The repository's commit (``+dirty`` when files changed), or None outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cut_partial_line(path: Path) -> bool:
    """Drop a last line that a crash left half-written; True when one was dropped."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
        return True
    return False


def _read_appended(path: Path, columns: tuple[str, ...], log: Callable[[str], None]) -> pd.DataFrame:
    """Rows an earlier (maybe interrupted) build appended to ``path``; empty if none."""
    if not path.exists():
        return pd.DataFrame(columns=list(columns))
    if _cut_partial_line(path):
        log(f"{path}: dropped a half-written last line (interrupted build)")
    df = pd.read_csv(path, dtype={"kind": str, "precision": str})
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {missing}; delete it to re-measure")
    return df


def _key(r: dict[str, Any]) -> BlockKey:
    return BlockKey(r["kind"], int(r["d_model"]), int(r["n_head"]), int(r["d_ff"]), r["precision"])


def _existing_rows(path: Path, log: Callable[[str], None]) -> dict[BlockKey, dict[str, Any]]:
    df = _read_appended(path, COLUMNS, log)
    if df.empty:
        return {}
    return {_key(r): r for r in check_rows(df, path).to_dict("records")}


def _existing_passes(path: Path, log: Callable[[str], None]) -> dict[tuple[BlockKey, int], dict]:
    df = _read_appended(path, PASS_COLUMNS, log)
    if df.empty:
        return {}
    out = {}
    for i, sub in df.groupby("pass"):
        for r in check_rows(sub.drop(columns=["pass"]), path).to_dict("records"):
            out[(_key(r), int(i))] = r
    return out


def _existing_calib(path: Path, log: Callable[[str], None]) -> dict[tuple[str, int], dict]:
    df = _read_appended(path, CALIB_COLUMNS, log).dropna()
    df = df[df["median_ms"] > 0]
    return {(str(r["arch_id"]), int(r["pass"])): r for r in df.to_dict("records")}


def best_pass(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pass with the lowest median: the one other processes disturbed least."""
    return min(rows, key=lambda r: float(r["median_ms"]))


def _check_resume(csv: Path, meta_old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """Refuse to add rows to a table measured elsewhere or for another workload."""
    if meta_old is None:
        raise ConfigError(f"{csv}: has rows but no {json_path(csv).name} saying what measured "
                          "them; delete it (or restore the JSON) and build again")
    wrong = [f"{k} {meta_old['workload'].get(k)!r} (now {new['workload'][k]!r})"
             for k in ("device", "batch_size", "seq_len", "mode", "threads")
             if meta_old["workload"].get(k) != new["workload"][k]]
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


def build_table(path: str | Path, space: SearchSpace, workload: Workload, timer: TimerSettings,
                *, calibration_n: int = 30, calibration_seed: int = 1000,
                command: str = "", graph_calls: int = 10, progress: bool = True,
                log: Callable[[str], None] = print) -> LatencyTable:
    """Measure (or finish measuring) a table and fit its correction.

    Args:
        path: the CSV to write; its JSON goes next to it.
        space: the search space whose blocks to measure.
        workload: device, batch size, sequence length, precisions, mode, threads.
        timer: repeats, warm-up and window length of every measurement.
        calibration_n: random architectures per precision measured end to end to fit
            the correction (0: none; the predictor is then the plain sum).
        calibration_seed: their seed; validation must use another one.
        command: the command line, recorded in the JSON.
        graph_calls: block calls per captured CUDA graph in graph mode.
        progress: show a progress bar with the time left.
        log: where to say what happens.

    Returns:
        The finished table, loaded and checked.

    Raises:
        ConfigError: CUDA asked but absent, or existing rows from another machine or workload.
    """
    import torch
    from tqdm import tqdm

    from nas.latency.blocks import time_block, time_model

    csv = Path(path)
    if workload.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda asked but torch sees no GPU here; use hardware=cpu "
                          "(or build on the GPU machine)")
    threads = set_cpu_threads(workload.threads)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "table": csv.name,
        "complete": False,
        "workload": workload.to_dict(),
        "space": space.to_dict(),
        "timer": {**timer.to_dict(), "graph_calls": graph_calls,
                  "method": "median over windows of back-to-back calls (CUDA events on cuda, "
                            "the cpu_clock on cpu); of several passes, the lowest median"},
        "fingerprint": fingerprint.collect(workload.device, threads),
        "command": command,
        "git_revision": git_revision(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": fingerprint.load_average(),
        "calibration": {},
    }
    P = timer.passes
    done = _existing_rows(csv, log)
    per_pass = _existing_passes(passes_path(csv), log) if P > 1 else {}
    calib_csv = calibration_path(csv)
    old = read_meta(json_path(csv)) if json_path(csv).exists() else None
    if done or per_pass or (old is not None and calib_csv.exists()):
        _check_resume(csv, old, meta)
        log(f"{csv}: resuming, {len(done)} rows and {len(per_pass)} passes already measured")
    for note in fingerprint.version_notes(old["fingerprint"], meta["fingerprint"]) if old else []:
        log(f"{csv}: note: {note}")
    write_meta(json_path(csv), meta)

    writer = RowWriter(csv, COLUMNS)
    pwriter = RowWriter(passes_path(csv), PASS_COLUMNS) if P > 1 else None

    def finish(key: BlockKey) -> None:
        """Write the table row of ``key`` once all its passes are in."""
        have = [per_pass[(key, i)] for i in range(P) if (key, i) in per_pass]
        if key not in done and len(have) == P:
            done[key] = best_pass(have)
            writer.append(done[key])

    keys = space_blocks(space, workload.precisions)
    for key in keys:  # passes complete but the row not written: a crash in between
        finish(key)
    # Pass-major order: every block once, then every block again, so that the passes of
    # one block are far apart in time.
    todo = [(i, k) for i in range(P) for k in keys if k not in done and (k, i) not in per_pass]
    calib = {p: sample_archs(space, calibration_n, calibration_seed, workload.device, p)
             for p in workload.precisions} if calibration_n > 0 else {}
    calib_done = _existing_calib(calib_csv, log) if calib else {}
    calib_todo = [(i, a) for i in range(P) for archs in calib.values() for a in archs
                  if (a.arch_id, i) not in calib_done]
    total = len(todo) + len(calib_todo)
    per = timer.repeats * timer.window_ms / 1e3 * 1.4
    log(f"{csv}: {len(todo)} block and {len(calib_todo)} calibration-model measurements "
        f"({P} pass(es)) on {workload.device} ({threads} CPU thread(s)), about "
        f"{total * per / 60:.1f} min")

    t0 = time.perf_counter()
    if workload.device == "cuda" and total:
        warm_gpu()
    with tqdm(total=total, desc="latency build", unit="meas", disable=not progress,
              dynamic_ncols=True) as bar:
        for i, key in todo:
            bar.set_postfix_str(f"pass {i + 1}/{P} {key.describe()}")
            t = time_block(key, space, workload, timer, graph_calls)
            row = {"kind": key.kind, "d_model": key.d_model, "n_head": key.n_head,
                   "d_ff": key.d_ff, "precision": key.precision,
                   "batch_size": workload.batch_size, "seq_len": workload.seq_len,
                   "median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                   "repeats": t.repeats, "inner": t.inner}
            if pwriter is None:
                writer.append(row)
                done[key] = row
            else:
                pwriter.append({**row, "pass": i})
                per_pass[(key, i)] = row
                finish(key)
            bar.update()
        if calib_todo:
            cwriter = RowWriter(calib_csv, CALIB_COLUMNS)
        ms = {k: float(r["median_ms"]) for k, r in done.items()}
        for i, arch in calib_todo:
            bar.set_postfix_str(f"pass {i + 1}/{P} {arch.describe()}")
            t = time_model(arch, workload, timer)
            row = {"arch_id": arch.arch_id, "arch": _arch_json(arch), "precision": arch.precision,
                   "n_layer": arch.n_layer, "pass": i,
                   "raw_sum_ms": sum(ms[k] for k in arch_blocks(arch)),
                   "median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                   "repeats": t.repeats, "inner": t.inner}
            cwriter.append(row)
            calib_done[(arch.arch_id, i)] = row
            bar.update()

    for p, archs in calib.items():
        rows = [best_pass([calib_done[(a.arch_id, i)] for i in range(P)]) for a in archs]
        # Re-sum from the table, in case rows were re-measured since these models were timed.
        raw = [sum(ms[k] for k in arch_blocks(a)) for a in archs]
        try:
            cal = fit(raw, [a.n_layer for a in archs], [r["median_ms"] for r in rows],
                      calibration_seed)
        except ValueError as e:
            raise ConfigError(f"{calib_csv}: {p}: {e}; measure more repeats or delete it to "
                              "re-measure") from None
        meta["calibration"][p] = cal.to_dict()
        log(f"{csv}: {p}: fitted {cal.a:.4f} * sum + {cal.b * 1e3:+.2f} us/layer "
            f"{cal.c * 1e3:+.2f} us on {cal.n} models (seed {cal.seed}): in-sample RMSE "
            f"{cal.rmse_pct:.2f}% (plain sum {cal.raw_rmse_pct:.2f}%)")
    meta["complete"] = True
    meta["n_rows"] = len(done)
    meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta["build_seconds_last_run"] = round(time.perf_counter() - t0, 1)
    meta["load_average_end"] = fingerprint.load_average()
    write_meta(json_path(csv), meta)
    return LatencyTable.load(csv, space=space, device=workload.device,
                             batch_size=workload.batch_size, seq_len=workload.seq_len,
                             mode=workload.mode, precisions=workload.precisions,
                             require_calibration=calibration_n > 0)


def _arch_json(arch: Any) -> str:
    import json
    return json.dumps(arch.to_dict(), sort_keys=True)
