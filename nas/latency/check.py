"""Does a committed table hold on the machine at hand? (``python -m nas.latency check``)

A table measured elsewhere predicts this machine only if the hardware and everything
around it (host CPU, driver, libraries, clocks) behave alike; an eager GPU table at
batch 1 measures the host as much as the GPU. ``check`` measures about 20 random
architectures of the table's space here, end to end, exactly as the table's own
validation does (same timer, passes, clock, mode and phase), and says whether the
table's predictions hold: at least 95% of them within +-10%. It takes a minute or two.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import platform
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nas.latency import fingerprint
from nas.latency.floor import baseline_floor, floor_line
from nas.latency.measure import TimerSettings, set_cpu_threads, warm_gpu
from nas.latency.spec import Workload, sample_archs
from nas.latency.table import LatencyTable
from nas.latency.accuracy import metrics
from nas.latency.validate import GOAL_WITHIN_10
from nas.space import SearchSpace


def check(table: LatencyTable, space: SearchSpace, *, n: int = 20, seed: int = 3000,
          timer: TimerSettings, progress: bool = True, out: Path | None = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure ``n`` random architectures of ``space`` here and compare with ``table``.

    Args:
        table: the table to check (its space, precisions, workload and timer are used).
        space: the search space to draw from (the table must cover it).
        n: architectures in all, spread over the table's precisions.
        seed: their seed.
        timer: repeats, warm-up and window (the table's clock and passes are kept).
        progress: show a progress bar.
        out: when given, the summary is written there as JSON.
        log: where to say what happens.

    Returns:
        The summary: per precision and overall share within +-5% and +-10%, worst
        error, Spearman's rho, the machine, and ``holds``.
    """
    import torch

    from nas.errors import ConfigError

    if table.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{table.path}: a cuda table, but torch sees no GPU here; check it on "
                          "the machine it is meant for")
    table.check_covers(space, table.precisions)
    threads = set_cpu_threads(table.threads)
    here = fingerprint.collect(table.device, threads)
    other = fingerprint.mismatches(table.fingerprint, here)
    for w in other:
        log(f"check: other hardware than the table's ({w}); the table is not expected to hold")
    for note in fingerprint.version_notes(table.fingerprint, here):
        log(f"check: software differs from the table's: {note}")
    timer = dataclasses.replace(timer, cpu_clock=table.cpu_clock, passes=table.passes)
    workload = Workload(table.device, table.batch_size, table.seq_len, table.precisions,
                        table.mode, threads, table.phase, table.prompt_len)
    precs = table.precisions
    counts = {p: n // len(precs) + (i < n % len(precs)) for i, p in enumerate(precs)}
    archs = [a for p in precs if counts[p] for a in sample_archs(space, counts[p], seed,
                                                                 table.device, p)]
    if table.device == "cuda":
        warm_gpu(1.0)
    log(f"check: {len(archs)} random architectures of '{space.name}' against "
        f"{table.describe()}")
    runs = _time_archs(archs, workload, timer, progress)
    summary = _summary(table, space, workload, timer, seed, archs, runs, here, other)
    summary["baseline_floor"] = baseline_floor(space, workload, timer)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=2) + "\n")
    for line in report_lines(summary):
        log(line)
    return summary


def _time_archs(archs: list[Any], workload: Workload, timer: TimerSettings,
                progress: bool) -> dict[str, list[float]]:
    """Each architecture's median in every pass, by ``arch_id``."""
    from tqdm import tqdm

    from nas.latency.blocks import time_model

    runs: dict[str, list[float]] = {a.arch_id: [] for a in archs}
    with tqdm(total=len(archs) * timer.passes, desc="latency check", unit="model",
              disable=not progress, dynamic_ncols=True) as bar:
        for i in range(timer.passes):  # pass-major, as the table was built
            for a in archs:
                bar.set_postfix_str(f"pass {i + 1}/{timer.passes} {a.describe()}")
                runs[a.arch_id].append(time_model(a, workload, timer).median_ms)
                bar.update()
    return runs


def _summary(table: LatencyTable, space: SearchSpace, workload: Workload, timer: TimerSettings,
             seed: int, archs: list[Any], runs: dict[str, list[float]], here: dict[str, Any],
             other: list[str]) -> dict[str, Any]:
    """Predicted against measured (the fastest pass of each), overall and per precision."""
    precs = table.precisions
    pred = {a.arch_id: table.predict_ms(a) for a in archs}
    meas = {a.arch_id: min(runs[a.arch_id]) for a in archs}
    per = {}
    for p in precs:
        ids = [a.arch_id for a in archs if a.precision == p]
        if ids:
            per[p] = metrics([pred[i] for i in ids], [meas[i] for i in ids])
    overall = metrics([pred[a.arch_id] for a in archs], [meas[a.arch_id] for a in archs])
    worst = max(archs, key=lambda a: abs(pred[a.arch_id] / meas[a.arch_id] - 1))
    summary = {
        "table": table.path.name, "space": space.name, "workload": workload.to_dict(),
        "timer": timer.to_dict(), "seed": seed, "n": len(archs),
        "goal": {"within_10": GOAL_WITHIN_10},
        "overall": overall, "precisions": per,
        "worst": {"arch": worst.describe(),
                  "error_pct": 100 * (pred[worst.arch_id] / meas[worst.arch_id] - 1)},
        "holds": bool(overall["within_10"] >= GOAL_WITHIN_10),
        "same_hardware_as_table": not other,
        "machine": {"hostname": platform.node(), **{k: here.get(k) for k in (
            "gpu_name", "gpu_uuid", "driver", "cpu_model", "cpu_count", "torch")}},
        "table_machine": {k: table.fingerprint.get(k) for k in (
            "gpu_name", "gpu_uuid", "driver", "cpu_model", "cpu_count", "torch")},
        "archs": [{"arch": a.describe(), "predicted_ms": pred[a.arch_id],
                   "measured_ms": meas[a.arch_id],
                   "pass_range_pct": 100 * float(np.ptp(runs[a.arch_id]) / meas[a.arch_id])}
                  for a in archs],
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return summary


def report_lines(s: dict[str, Any]) -> list[str]:
    """The lines ``check`` prints."""
    lines = [f"{'precision':>9} {'n':>3} {'within 5%':>10} {'within 10%':>11} {'worst':>8} "
             f"{'rho':>6}"]
    rows = list(s["precisions"].items()) + [("all", s["overall"])]
    for p, m in rows:
        lines.append(f"{p:>9} {m['n']:>3} {100 * m['within_5']:>9.0f}% {100 * m['within_10']:>10.0f}% "
                     f"{m['max_abs_err_pct']:>7.1f}% {m['spearman']:>6.3f}")
    w = s["worst"]
    verdict = ("HOLDS here" if s["holds"] else
               f"does NOT hold here (needs >= {100 * s['goal']['within_10']:.0f}% within +-10%)")
    lines.append(f"worst: {w['arch']} ({w['error_pct']:+.1f}%)")
    lines.append(f"{s['table']}: {verdict}")
    if s.get("baseline_floor"):
        lines.append(floor_line(s["baseline_floor"]))
    return lines
