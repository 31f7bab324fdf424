"""Build a latency table: time every block of a space, then fit the end-to-end correction.

Rows are appended to the CSV (flushed, synced) as they are measured, and so are the
end-to-end timings of the calibration architectures (``<name>.calib.csv``) and, when
everything is measured in several passes, each pass (``<name>.passes.csv``). A build that
stops halfway therefore keeps its work: run the same command again and it measures
only what is missing, after checking that the existing rows were measured on this
machine for this workload (it never mixes two measurements in one table). On a
finished table with nothing left to measure it writes nothing at all, so the studies
that recorded the table's hash can still resume. It reads
every file it would append to before it changes any (``resume.py``), so a file that is
not a table's is refused untouched.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from nas.errors import ConfigError
from nas.latency import fingerprint
from nas.latency.calibrate import fit
from nas.latency.files import (COLUMNS, FORMAT, RowWriter, calibration_path, json_path,
                               memory_path, write_csv, write_meta)
from nas.latency.memory import MemoryModel
from nas.latency.measure import TimerSettings, set_cpu_threads, warm_gpu
from nas.latency.resume import (CALIB_COLUMNS, PASS_COLUMNS, check_resume, check_timer,
                                cut_partial_line, differences, passes_path, read_earlier)
from nas.latency.spec import BlockKey, Workload, arch_blocks, sample_archs, space_blocks
from nas.latency.table import LatencyTable
from nas.environment import git_revision
from nas.space import SearchSpace

if TYPE_CHECKING:
    from nas.space import ArchConfig


def best_pass(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The pass with the lowest median: the one other processes disturbed least."""
    return min(rows, key=lambda r: float(r["median_ms"]))


@dataclass
class _Plan:
    """What a build has (read from its files, checked) and what it still measures."""

    done: dict[BlockKey, dict[str, Any]]                 # table rows by block
    per_pass: dict[tuple[BlockKey, int], dict[str, Any]]
    calib_done: dict[tuple[str, int], dict[str, Any]]    # calibration timings by (arch, pass)
    todo: list[tuple[int, BlockKey]]                     # (pass, block), pass-major
    ready: list[BlockKey]                                # every pass in, the row not written
    calib: dict[str, list[Any]]                          # calibration models by precision
    calib_todo: list[tuple[int, Any]]                    # (pass, model)


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
        ConfigError: CUDA asked but absent, a file at the table's paths that a build did
            not write, or existing rows from another machine or workload; in every case
            before any file is changed.
    """
    csv = Path(path)
    meta, threads = _start(csv, space, workload, timer, graph_calls, command)
    plan = _plan(csv, space, workload, timer.passes, calibration_n, calibration_seed, meta, log)
    if plan is None:
        return _load(csv, space, workload, calibration_n)
    total = len(plan.todo) + len(plan.calib_todo)
    per = timer.repeats * timer.window_ms / 1e3 * 1.4
    log(f"{csv}: {len(plan.todo)} block and {len(plan.calib_todo)} calibration-model measurements "
        f"({timer.passes} pass(es)) on {workload.device} ({threads} CPU thread(s)), about "
        f"{total * per / 60:.1f} min")
    t0 = time.perf_counter()
    ms = _measure(csv, space, workload, timer, graph_calls, plan, progress)
    _fit_corrections(csv, space, workload, timer.passes, plan, ms, calibration_seed, meta,
                     progress, log)
    meta["complete"] = True
    meta["n_rows"] = len(plan.done)
    meta["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    meta["build_seconds_last_run"] = round(time.perf_counter() - t0, 1)
    meta["load_average_end"] = fingerprint.load_average()
    write_meta(json_path(csv), meta)
    return _load(csv, space, workload, calibration_n)


def check_build(path: str | Path, space: SearchSpace, workload: Workload, timer: TimerSettings,
                *, calibration_n: int = 30, calibration_seed: int = 1000,
                graph_calls: int = 10) -> None:
    """Refuse what :func:`build_table` would refuse before measuring (no GPU, a file there
    that a build did not write, rows of another machine, workload or timer, a finished
    table asked for other settings), writing nothing: a command checks it first."""
    csv = Path(path)
    meta, _ = _start(csv, space, workload, timer, graph_calls, "")
    _plan(csv, space, workload, timer.passes, calibration_n, calibration_seed, meta,
          lambda line: None, dry=True)


def _start(csv: Path, space: SearchSpace, workload: Workload, timer: TimerSettings,
           graph_calls: int, command: str) -> tuple[dict[str, Any], int]:
    """The JSON of a build starting now (with this machine's fingerprint), and its threads."""
    import torch

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
    return meta, threads


def _plan(csv: Path, space: SearchSpace, workload: Workload, P: int, calibration_n: int,
          calibration_seed: int, meta: dict[str, Any], log: Callable[[str], None],
          dry: bool = False) -> _Plan | None:
    """Read and check what earlier runs measured, then (unless ``dry``) mark the table
    unfinished while it grows; None when a finished table has nothing to add (its files
    are left alone)."""
    calib_csv = calibration_path(csv)
    # Everything is read and checked before anything is written: a refusal leaves the
    # files as they were.
    old = read_earlier(csv, passes=P > 1, calibration=calibration_n > 0)
    done, per_pass, calib_done = old.rows, old.passes, old.calib
    if done or per_pass or (old.meta is not None and calib_csv.exists()):
        check_resume(csv, old.meta, meta)

    keys = space_blocks(space, workload.precisions)
    # Pass-major order: every block once, then every block again, so that the passes of
    # one block are far apart in time.
    todo = [(i, k) for i in range(P) for k in keys if k not in done and (k, i) not in per_pass]
    # Passes complete but the row not written: a crash in between.
    ready = [k for k in keys if k not in done and all((k, i) in per_pass for i in range(P))]
    calib = {p: sample_archs(space, calibration_n, calibration_seed, workload.device, p)
             for p in workload.precisions} if calibration_n > 0 else {}
    calib_todo = [(i, a) for i in range(P) for archs in calib.values() for a in archs
                  if (a.arch_id, i) not in calib_done]
    appends = bool(todo or calib_todo or ready or old.partial)
    if not appends and old.complete:
        # Studies record the table's hash: a build with nothing to add must not refit
        # the correction from the rounded CSV values or restamp the JSON.
        wanted = differences(old.meta, meta, calibration_n, calibration_seed)
        if wanted:
            raise ConfigError(
                f"{csv}: finished, and this build has nothing to measure, but it asks for "
                f"{'; '.join(wanted)}; refusing to rewrite a finished table (studies made with "
                f"it would no longer resume): repeat its command ({old.meta.get('command')}) or "
                "set latency.table to another file")
        log(f"{csv}: complete, nothing to measure; its files are left as they were")
        return None
    if old.meta is not None and (done or per_pass or calib_done):
        check_timer(csv, old.meta, meta)  # only here: a build that adds nothing may differ
    if dry:
        return None
    if done or per_pass:
        log(f"{csv}: resuming, {len(done)} rows and {len(per_pass)} passes already measured")
    for note in (fingerprint.version_notes(old.meta["fingerprint"], meta["fingerprint"])
                 if old.meta else []):
        log(f"{csv}: note: {note}")
    for f in old.partial:
        cut_partial_line(f)
        log(f"{f}: dropped a half-written last line (interrupted build)")
    if appends:  # marked unfinished while its files grow
        write_meta(json_path(csv), meta)
    return _Plan(done, per_pass, calib_done, todo, ready, calib, calib_todo)


def _measure(csv: Path, space: SearchSpace, workload: Workload, timer: TimerSettings,
             graph_calls: int, plan: _Plan, progress: bool) -> dict[BlockKey, float]:
    """Time what the plan has left, appending every row as it comes; the blocks' medians."""
    from tqdm import tqdm

    from nas.latency.blocks import time_block, time_model

    P, done, per_pass = timer.passes, plan.done, plan.per_pass
    writer = RowWriter(csv, COLUMNS)
    pwriter = RowWriter(passes_path(csv), PASS_COLUMNS) if P > 1 and plan.todo else None

    def finish(key: BlockKey) -> None:
        """Write the table row of ``key`` once all its passes are in."""
        have = [per_pass[(key, i)] for i in range(P) if (key, i) in per_pass]
        if key not in done and len(have) == P:
            done[key] = best_pass(have)
            writer.append(done[key])

    for key in plan.ready:
        finish(key)
    if workload.device == "cuda" and (plan.todo or plan.calib_todo):
        warm_gpu()
    with tqdm(total=len(plan.todo) + len(plan.calib_todo), desc="latency build", unit="meas",
              disable=not progress, dynamic_ncols=True) as bar:
        for i, key in plan.todo:
            bar.set_postfix_str(f"pass {i + 1}/{P} {key.describe()}")
            t = time_block(key, space, workload, timer, graph_calls)
            row = {"kind": key.kind, "d_model": key.d_model, "n_head": key.n_head,
                   "d_ff": key.d_ff, "precision": key.precision, "n_kv_head": key.n_kv_head,
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
        ms = {k: float(r["median_ms"]) for k, r in done.items()}
        cwriter = RowWriter(calibration_path(csv), CALIB_COLUMNS) if plan.calib_todo else None
        for i, arch in plan.calib_todo:
            bar.set_postfix_str(f"pass {i + 1}/{P} {arch.describe()}")
            t = time_model(arch, workload, timer)
            row = {"arch_id": arch.arch_id, "arch": _arch_json(arch), "precision": arch.precision,
                   "n_layer": arch.n_layer, "pass": i,
                   "raw_sum_ms": sum(ms[k] for k in arch_blocks(arch)),
                   "median_ms": t.median_ms, "p10_ms": t.p10_ms, "p90_ms": t.p90_ms,
                   "repeats": t.repeats, "inner": t.inner}
            cwriter.append(row)
            plan.calib_done[(arch.arch_id, i)] = row
            bar.update()
    return ms


def _fit_corrections(csv: Path, space: SearchSpace, workload: Workload, P: int, plan: _Plan,
                     ms: dict[BlockKey, float], seed: int, meta: dict[str, Any],
                     progress: bool, log: Callable[[str], None]) -> None:
    """Fit each precision's correction (and, for decode, the memory model and the L2
    working-set term) into ``meta``."""
    def fit_all(extra: Callable[[list[Any]], dict[str, Any]] = lambda archs: {}) -> dict[str, Any]:
        fits = {}
        for p, archs in plan.calib.items():
            rows = [best_pass([plan.calib_done[(a.arch_id, i)] for i in range(P)]) for a in archs]
            # Re-summed from the table, in case rows were re-measured since these models were timed.
            raw = [sum(ms[k] for k in arch_blocks(a)) for a in archs]
            try:
                fits[p] = fit(raw, [a.n_layer for a in archs], [r["median_ms"] for r in rows],
                              seed, **extra(archs))
            except ValueError as e:
                raise ConfigError(f"{calibration_path(csv)}: {p}: {e}; measure more repeats or "
                                  "delete it to re-measure") from None
            meta["calibration"][p] = fits[p].to_dict()
        return fits

    for p, cal in fit_all().items():
        log(f"{csv}: {p}: fitted {cal.a:.4f} * sum + {cal.b * 1e3:+.2f} us/layer "
            f"{cal.c * 1e3:+.2f} us on {cal.n} models (seed {cal.seed}): in-sample RMSE "
            f"{cal.rmse_pct:.2f}% (plain sum {cal.raw_rmse_pct:.2f}%)")
    if workload.phase != "decode" or not plan.calib:
        return
    meta["memory"] = _fit_memory(csv, space, workload, plan.calib, seed, progress, log)
    l2 = meta["fingerprint"].get("l2_cache_bytes")
    if l2:
        memory = MemoryModel.from_meta(meta["memory"], str(json_path(csv)))
        working_set = lambda archs: {"working_set_bytes": [memory.fixed_bytes(a) for a in archs],  # noqa: E731
                                     "l2_bytes": l2}
        for p, cal in fit_all(working_set).items():
            log(f"{csv}: {p}: with the L2 working-set term: d={cal.d:.4f}, leave-one-out "
                f"RMSE {cal.loo_rmse_pct:.2f}% (plain {cal.plain_loo_rmse_pct:.2f}%)")


def _fit_memory(csv: Path, space: SearchSpace, workload: Workload, calib: dict[str, list[Any]],
                seed: int, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Measure block weights and the calibration models' peak memory; the JSON section."""
    from tqdm import tqdm

    from nas.latency.memory_measure import MEMORY_COLUMNS, WEIGHT_KINDS, calibrate_memory

    n = (len(space_blocks(space, workload.precisions, WEIGHT_KINDS))
         + sum(len(a) for a in calib.values()))
    with tqdm(total=n, desc="peak memory", unit="meas", disable=not progress,
              dynamic_ncols=True) as bar:
        def tick(label: str) -> None:
            bar.set_postfix_str(label)
            bar.update()

        model, rows = calibrate_memory(space, workload, calib, seed, progress=tick)
    write_csv(memory_path(csv), rows, MEMORY_COLUMNS)
    for p, f in model.fits.items():
        log(f"{csv}: {p}: peak memory = weights + cache + {f.a:.3f} * activations "
            f"{f.b / 2**10:+.1f} KiB/layer {f.c / 2**10:+.1f} KiB on {f.n} models: in-sample "
            f"RMSE {f.rmse_pct:.2f}% (uncorrected {f.raw_rmse_pct:.2f}%)")
    return {**model.to_meta(), "method": "weights measured per block; peak of one request "
            "(prefill of prompt_len tokens, two decode steps) above the model, after a first "
            "request; cuda: torch.cuda.max_memory_allocated, cpu: glibc mallinfo2 bytes in use "
            "read after every op"}


def _load(csv: Path, space: SearchSpace, workload: Workload, calibration_n: int) -> LatencyTable:
    """The finished table, checked against what the build was asked for."""
    return LatencyTable.load(csv, space=space, device=workload.device,
                             batch_size=workload.batch_size, seq_len=workload.seq_len,
                             mode=workload.mode, precisions=workload.precisions,
                             require_calibration=calibration_n > 0, phase=workload.phase)


def _arch_json(arch: ArchConfig) -> str:
    import json
    return json.dumps(arch.to_dict(), sort_keys=True)


def refit_calibration(path: str | Path, space: SearchSpace, l2_bytes: int,
                      log: Callable[[str], None] = print) -> LatencyTable:
    """Refit a decode table's correction with the L2 working-set term, measuring nothing.

    The calibration models' timings (``<name>.calib.csv``, fastest pass of each) and the
    memory model's weight bytes are already in the table's files; only the JSON's
    ``calibration`` section is rewritten (see :mod:`nas.latency.calibrate`).

    Args:
        path: the decode table's CSV.
        space: the space it was built for.
        l2_bytes: the L2 cache size of the card it was measured on.

    Raises:
        ConfigError: no memory model or no calibration file.
    """
    import json

    import pandas as pd

    from nas.latency.files import read_meta
    from nas.space import ArchConfig

    csv = Path(path)
    meta = read_meta(json_path(csv))
    table = LatencyTable.load(csv, space=space, precisions=tuple(meta["calibration"]))
    calib_csv = calibration_path(csv)
    if table.memory is None or not calib_csv.exists():
        raise ConfigError(f"{csv}: a working-set refit needs the table's memory model and "
                          f"{calib_csv.name}; rebuild the table")
    rows = pd.read_csv(calib_csv)
    for p, old in table.calibration.items():
        best = rows[rows.precision == p].sort_values("median_ms").drop_duplicates("arch_id")
        archs = [ArchConfig.from_dict(json.loads(a)) for a in best.arch]
        cal = fit([table.raw_sum_ms(a) for a in archs], [a.n_layer for a in archs],
                  best.median_ms.tolist(), old.seed,
                  [table.memory.fixed_bytes(a) for a in archs], l2_bytes)
        meta["calibration"][p] = cal.to_dict()
        log(f"{csv.name}: {p}: a={cal.a:.4f} b={cal.b * 1e3:+.2f} us/layer "
            f"c={cal.c * 1e3:+.2f} us d={cal.d:.4f}; leave-one-out RMSE "
            f"{cal.loo_rmse_pct:.2f}% (plain {cal.plain_loo_rmse_pct:.2f}%), in-sample "
            f"{cal.rmse_pct:.2f}% (max {cal.max_abs_pct:.1f}%)")
    meta["calibration_refit"] = {"l2_bytes": int(l2_bytes), "from": calib_csv.name}
    write_meta(json_path(csv), meta)
    return LatencyTable.load(csv, space=space, precisions=tuple(meta["calibration"]))
