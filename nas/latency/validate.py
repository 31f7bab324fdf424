"""Validate a latency table end to end: predicted vs measured on held-out architectures.

Draws random architectures from the space with a seed that fitted no correction (the
calibration set is excluded too), measures each one as a standalone model on the
device, and writes a report: ``report.csv`` (every architecture: predicted, plain sum,
measured, error), ``scatter.png`` and ``summary.json`` / ``summary.md`` (share within
+-5% and +-10%, RMSE, Spearman's rho, the goal and by how much it is missed, which
architectures miss, the command). It also re-measures a few models several times, so
the reader can tell predictor error from measurement noise.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from nas.errors import ConfigError
from nas.latency import fingerprint
from nas.latency.accuracy import metrics
from nas.latency.files import calibration_path
from nas.latency.floor import baseline_floor, floor_line
from nas.latency.measure import TimerSettings, set_cpu_threads, warm_gpu
from nas.latency.report import markdown, plot
from nas.latency.spec import Workload, sample_archs
from nas.latency.table import LatencyTable
from nas.space import SearchSpace

GOAL_WITHIN_10 = 0.95
GOAL_RHO = 0.98
GOAL_DECODE_WITHIN_5 = 0.80  # decode tables: time per output token (issue 8)


def _calibration_ids(table: LatencyTable) -> set[str]:
    p = calibration_path(table.path)
    if not p.exists():
        return set()
    return set(pd.read_csv(p, usecols=["arch_id"])["arch_id"].astype(str))


def validate(table: LatencyTable, space: SearchSpace, precisions: Sequence[str], *, n: int,
             seed: int, timer: TimerSettings, out_dir: str | Path, command: str = "",
             noise_models: int = 3, noise_repeats: int = 5, progress: bool = True,
             log: Callable[[str], None] = print, prefill: LatencyTable | None = None,
             requests: int = 0, new_tokens: int = 1) -> dict[str, Any]:
    """Measure ``n`` held-out architectures per precision and write the report.

    Args:
        table: the table under test (built on this machine).
        space: the search space to draw architectures from.
        precisions: the precisions to validate.
        n: architectures per precision.
        seed: their seed; must differ from every calibration seed of the table.
        timer: repeats, warm-up, window length of each end-to-end measurement.
        out_dir: where the report goes (created).
        command: the command line, recorded in the report.
        noise_models: models re-measured ``noise_repeats`` times per precision for the
            noise estimate (0: skip).
        noise_repeats: independent measurements of each of them.
        progress: show a progress bar.
        log: where to say what happens.
        prefill: a decode table's prefill table at its batch size and prompt length; with
            ``requests`` > 0 the first ``requests`` architectures of each precision are
            also timed as whole requests (``validate_serving.request_report``).
        requests: architectures per precision timed as whole requests.
        new_tokens: tokens each such request generates.

    A decode table with a memory model has the peak memory of every architecture
    measured and predicted too (``memory.csv``; the summary's ``memory``).

    Returns:
        The summary (also written as ``summary.json``).

    Raises:
        ConfigError: another machine than the table's, a seed that fitted a correction,
            or a precision or space the table does not cover.
    """
    from tqdm import tqdm

    _refuse(table, space, precisions, seed, log)
    threads = set_cpu_threads(table.threads)
    # Time the models the way the blocks were timed: same clock, same number of passes.
    timer = dataclasses.replace(timer, cpu_clock=table.cpu_clock, passes=table.passes)
    workload = Workload(table.device, table.batch_size, table.seq_len, tuple(precisions),
                        table.mode, threads, table.phase, table.prompt_len)
    if table.device == "cuda":
        warm_gpu(1.0)
    seen = _calibration_ids(table)
    archs = {p: sample_archs(space, n, seed, table.device, p, exclude=seen) for p in precisions}
    serving = table.phase == "decode" and table.memory is not None
    requests = min(requests, n) if prefill is not None else 0
    total = (n * timer.passes + noise_models * noise_repeats + n * serving + requests
             ) * len(precisions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log(f"validate: {n} architectures x {list(precisions)} (seed {seed}) against "
        f"{table.describe()}")

    load_start = fingerprint.load_average()
    order = [(p, a) for p in precisions for a in archs[p]]
    with tqdm(total=total, desc="latency validate", unit="model", disable=not progress,
              dynamic_ncols=True) as bar:
        rows = _time_archs(table, order, workload, timer, bar)
        noise = _noise(table, archs, workload, timer, noise_models, noise_repeats, bar)
        extra = _serving(table, prefill, [a for _, a in order], requests, new_tokens, timer, out,
                         bar) if serving or requests else {}
    df = pd.DataFrame(rows)
    df.to_csv(out / "report.csv", index=False, float_format="%.6g")
    summary = _summary(df, noise, table, space, precisions, n, seed, timer, command, workload)
    summary.update(extra)
    summary["baseline_floor"] = baseline_floor(space, workload, timer)
    summary["load_average"] = {"start": load_start, "end": fingerprint.load_average(),
                               "build_start": table.meta.get("load_average_start"),
                               "build_end": table.meta.get("load_average_end")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    what = "context" if table.phase == "decode" else "seq"
    plot(df, out / "scatter.png", title=f"{table.path.name}: {space.name}, {table.phase}, batch "
         f"{table.batch_size}, {what} {table.seq_len}, {table.mode}")
    _log_summary(summary, log)
    log(f"validate: report in {out}")
    return summary


def _refuse(table: LatencyTable, space: SearchSpace, precisions: Sequence[str], seed: int,
            log: Callable[[str], None]) -> None:
    """Refuse a table of another machine, a GPU table without a GPU, what the table does
    not cover, and a seed that fitted a correction."""
    import torch

    here = fingerprint.collect(table.device, table.threads)
    wrong = fingerprint.mismatches(table.fingerprint, here)
    if wrong:
        raise ConfigError(f"{table.path}: measured on another machine ({'; '.join(wrong)}); "
                          "validate where it was built, or build a table on this machine")
    for note in fingerprint.version_notes(table.fingerprint, here):
        log(f"{table.path}: note: software differs from the build: {note}")
    if table.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{table.path}: a cuda table, but torch sees no GPU here")
    table.check_covers(space, precisions)
    for p in precisions:
        if table.calibration[p].seed == seed:
            raise ConfigError(f"validate.seed: {seed} is the seed that fitted the {p} calibration "
                              f"of {table.path.name}; pick another one")


def _time_archs(table: LatencyTable, order: list[tuple[str, Any]], workload: Workload,
                timer: TimerSettings, bar: Any) -> list[dict[str, Any]]:
    """Every architecture timed in every pass; a report row each (predicted, measured)."""
    from nas.latency.blocks import time_model

    P = timer.passes
    # Pass-major, as the table was built: each model's passes are far apart in time.
    runs: dict[str, list[Any]] = {a.arch_id: [] for _, a in order}
    for i in range(P):
        for p, a in order:
            bar.set_postfix_str(f"pass {i + 1}/{P} {a.describe()}")
            runs[a.arch_id].append(time_model(a, workload, timer))
            bar.update()
    rows = []
    for p, a in order:
        ts = runs[a.arch_id]
        t = min(ts, key=lambda x: x.median_ms)  # the least disturbed pass, as in the build
        meds = np.array([x.median_ms for x in ts])
        pred, raw = table.predict_ms(a), table.raw_sum_ms(a)
        rows.append({"precision": p, "arch_id": a.arch_id, "arch": a.describe(),
                     "n_layer": a.n_layer, "d_model": a.d_model,
                     "predicted_ms": pred, "plain_sum_ms": raw,
                     "measured_ms": t.median_ms, "measured_p10_ms": t.p10_ms,
                     "measured_p90_ms": t.p90_ms, "measured_wall_ms": t.wall_median_ms,
                     "pass_medians_ms": ";".join(f"{x:.5g}" for x in meds),
                     "pass_range_pct": 100 * float(np.ptp(meds) / meds.min()),
                     "error_pct": 100 * (pred / t.median_ms - 1),
                     "plain_sum_error_pct": 100 * (raw / t.median_ms - 1)})
    return rows


def _noise(table: LatencyTable, archs: dict[str, list[Any]], workload: Workload,
           timer: TimerSettings, noise_models: int, noise_repeats: int,
           bar: Any) -> list[dict[str, Any]]:
    """The smallest, a middle and the largest model of each precision (by prediction),
    re-measured ``noise_repeats`` times: how far measurement noise alone goes."""
    from nas.latency.blocks import time_model

    noise = []
    for p, candidates in archs.items():
        by_pred = sorted(candidates, key=table.predict_ms)
        picks = [by_pred[i] for i in np.linspace(0, len(by_pred) - 1, noise_models).round()
                 .astype(int)] if noise_models > 0 else []
        for a in picks:
            ts = []
            for _ in range(noise_repeats):
                bar.set_postfix_str(f"noise {a.describe()}")
                ts.append(time_model(a, workload, timer))
                bar.update()
            med = np.array([x.median_ms for x in ts])
            noise.append({"precision": p, "arch_id": a.arch_id, "arch": a.describe(),
                          "medians_ms": [round(float(x), 5) for x in med],
                          "range_pct": float(100 * np.ptp(med) / np.median(med)),
                          "cv_pct": float(100 * med.std(ddof=1) / med.mean())
                          if med.size > 1 else 0.0,
                          "window_spread_pct": float(100 * np.median([x.spread for x in ts]))})
    return noise


def _log_summary(summary: dict[str, Any], log: Callable[[str], None]) -> None:
    """One line per precision (and per memory and request report): the goal met or missed."""
    for p, s in summary["precisions"].items():
        log(f"validate {p}: within 10% {100 * s['within_10']:.0f}%, within 5% "
            f"{100 * s['within_5']:.0f}%, RMSE {s['rmse_ms']:.4f} ms ({s['rmse_pct']:.1f}%), "
            f"rho {s['spearman']:.3f} -> goal {'met' if s['goal_met'] else 'MISSED'}")
    for what, tol in (("memory", 5), ("request", 10)):
        for p, s in summary.get(what, {}).get("precisions", {}).items():
            log(f"validate {p} {what}: within {tol}% {100 * s[f'within_{tol}']:.0f}%, worst "
                f"{s['max_abs_err_pct']:.1f}% -> goal {'met' if s['goal_met'] else 'MISSED'}")
    if summary["baseline_floor"]:
        log(f"validate: {floor_line(summary['baseline_floor'])}")


def _serving(table: LatencyTable, prefill: LatencyTable | None, archs: list[Any],
             requests: int, new_tokens: int, timer: TimerSettings, out: Path,
             bar: Any) -> dict[str, Any]:
    """The memory and request reports of a decode table (``validate_serving.py``)."""
    from nas.latency.validate_serving import memory_report, request_report

    def tick(label: str) -> None:
        bar.set_postfix_str(label)
        bar.update()

    got: dict[str, Any] = {}
    if table.memory is not None:
        got["memory"] = memory_report(table, archs, out, tick)
    if prefill is not None and requests:
        # A request lasts longer than a window: each window times one; a few suffice on a
        # GPU, whose requests vary by well under 1% (the noise figures of the report).
        rt = dataclasses.replace(timer, repeats=max(3, timer.repeats // 3), warmup=1, passes=1)
        first = [a for p in dict.fromkeys(a.precision for a in archs)
                 for a in [x for x in archs if x.precision == p][:requests]]
        got["request"] = request_report(prefill, table, first, new_tokens, rt, out, tick)
    return got


def _summary(df: pd.DataFrame, noise: list[dict[str, Any]], table: LatencyTable,
             space: SearchSpace, precisions: Sequence[str], n: int, seed: int,
             timer: TimerSettings, command: str, workload: Workload) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for p in precisions:
        d = df[df["precision"] == p]
        m = metrics(d["predicted_ms"], d["measured_ms"])
        plain = metrics(d["plain_sum_ms"], d["measured_ms"])
        misses = d[d["error_pct"].abs() > 10].sort_values("error_pct", key=abs, ascending=False)
        need5 = GOAL_DECODE_WITHIN_5 if workload.phase == "decode" else 0.0
        m["goal_met"] = bool(m["within_10"] >= GOAL_WITHIN_10 and m["spearman"] >= GOAL_RHO
                             and m["within_5"] >= need5)
        m["goal_shortfall"] = {
            "within_10_points": round(max(0.0, 100 * (GOAL_WITHIN_10 - m["within_10"])), 2),
            "within_5_points": round(max(0.0, 100 * (need5 - m["within_5"])), 2),
            "spearman": round(max(0.0, GOAL_RHO - m["spearman"]), 4)}
        m["misses_10pct"] = [{"arch_id": r["arch_id"], "arch": r["arch"],
                              "error_pct": round(r["error_pct"], 2)}
                             for r in misses.to_dict("records")]
        m["plain_sum"] = {k: plain[k] for k in ("within_5", "within_10", "rmse_pct",
                                                "mean_err_pct", "spearman")}
        if d["measured_wall_ms"].notna().all() and workload.device == "cpu":
            wall = metrics(d["predicted_ms"], d["measured_wall_ms"])
            m["vs_wall_clock"] = {k: wall[k] for k in ("within_5", "within_10", "rmse_pct",
                                                       "mean_err_pct", "spearman")}
        m["calibration"] = table.calibration[p].to_dict()
        m["measured_ms_range"] = [float(d["measured_ms"].min()), float(d["measured_ms"].max())]
        m["median_window_spread_pct"] = float(100 * np.median(
            (d["measured_p90_ms"] - d["measured_p10_ms"]) / d["measured_ms"]))
        if timer.passes > 1:
            m["pass_range_pct"] = {"median": float(d["pass_range_pct"].median()),
                                   "p90": float(d["pass_range_pct"].quantile(0.9)),
                                   "max": float(d["pass_range_pct"].max())}
        nz = [x for x in noise if x["precision"] == p]
        if nz:
            m["noise"] = {"models": nz,
                          "median_range_pct": float(np.median([x["range_pct"] for x in nz])),
                          "max_range_pct": float(max(x["range_pct"] for x in nz)),
                          "median_cv_pct": float(np.median([x["cv_pct"] for x in nz]))}
        per[p] = m
    return {
        "goal": {"within_10": GOAL_WITHIN_10, "spearman": GOAL_RHO,
                 **({"within_5": GOAL_DECODE_WITHIN_5} if workload.phase == "decode" else {})},
        "command": command,
        "table": str(table.path.name),
        "table_fingerprint": table.fingerprint,
        "table_command": table.meta.get("command"),
        "space": space.name,
        "workload": workload.to_dict(),
        "timer": timer.to_dict(),
        "validation_seed": seed,
        "calibration_seeds": {p: table.calibration[p].seed for p in precisions},
        "n_per_precision": n,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "precisions": per,
        "all_goals_met": all(v["goal_met"] for v in per.values()),
    }
