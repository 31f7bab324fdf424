"""Validate what a decode table adds: peak memory, and whole requests composed with a
prefill table.

Both run on the held-out architectures of ``validate.py``. Memory is measured once per
architecture (it does not vary from run to run; ``memory_measure.py``). A request
(prompt ``P`` = the decode table's ``prompt_len``, ``N`` new tokens) is measured end to
end (``request.py``) and predicted as ``TTFT + (N - 1) * TPOT`` from the two tables
(``predict.py``); its time to first token is reported beside it, against the prefill
table alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from nas.latency.accuracy import metrics
from nas.latency.measure import TimerSettings
from nas.latency.memory import MB
from nas.latency.table import LatencyTable

GOAL_MEMORY_WITHIN_5 = 0.95
GOAL_REQUEST_WITHIN_10 = 0.95


def memory_report(table: LatencyTable, archs: Sequence[Any], out: Path,
                  tick: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure and predict the peak memory of ``archs``; write ``memory.csv``.

    Returns:
        Per precision: the metrics of ``accuracy.metrics`` and whether >= 95% are
        within +-5%.
    """
    from nas.latency.memory_measure import measure_peak

    mem = table.memory
    assert mem is not None
    rows = []
    for a in archs:
        tick(f"memory {a.describe()}")
        got = measure_peak(a, batch_size=mem.batch_size, prompt_len=mem.prompt_len,
                           context=mem.context, device=table.device,
                           fused=table.mode == "fused")
        pred = mem.peak_bytes(a)
        rows.append({"precision": a.precision, "arch_id": a.arch_id, "arch": a.describe(),
                     "predicted_mb": pred / MB, "measured_mb": got["peak_bytes"] / MB,
                     "measured_weights_mb": got["weights_bytes"] / MB,
                     "error_pct": 100 * (pred / got["peak_bytes"] - 1)})
    df = pd.DataFrame(rows)
    df.to_csv(out / "memory.csv", index=False, float_format="%.6g")
    return _per_precision(df, "predicted_mb", "measured_mb", 0.05, GOAL_MEMORY_WITHIN_5,
                          {"batch_size": mem.batch_size, "prompt_len": mem.prompt_len,
                           "context": mem.context})


def request_report(prefill: LatencyTable, decode: LatencyTable, archs: Sequence[Any],
                   new_tokens: int, timer: TimerSettings, out: Path,
                   tick: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure and predict whole requests of ``archs``; write ``requests.csv``.

    Args:
        prefill: the prefill table at the decode table's batch size and ``prompt_len``.
        decode: the decode table.
        archs: the architectures.
        new_tokens: ``N``, tokens each request generates.
        timer: repeats and warm-up of each request measurement.
        out: the report folder.
        tick: called with a label before each measurement.
    """
    from nas.latency.predict import CostModel
    from nas.latency.request import time_request

    costs = CostModel(prefill=prefill, decode=decode)
    P = prefill.seq_len
    rows = []
    for a in archs:
        tick(f"request {a.describe()}")
        req, ttft = time_request(a, batch_size=decode.batch_size, prompt_len=P,
                                 new_tokens=new_tokens, context=decode.seq_len,
                                 device=decode.device, mode=decode.mode, timer=timer)
        pred = costs.request_ms(a, P, new_tokens)
        pred_ttft = costs.ttft_ms(a, P)
        rows.append({"precision": a.precision, "arch_id": a.arch_id, "arch": a.describe(),
                     "predicted_ms": pred, "measured_ms": req.median_ms,
                     "measured_p10_ms": req.p10_ms, "measured_p90_ms": req.p90_ms,
                     "error_pct": 100 * (pred / req.median_ms - 1),
                     "predicted_ttft_ms": pred_ttft, "measured_ttft_ms": ttft.median_ms,
                     "ttft_error_pct": 100 * (pred_ttft / ttft.median_ms - 1)})
    df = pd.DataFrame(rows)
    df.to_csv(out / "requests.csv", index=False, float_format="%.6g")
    summary = _per_precision(df, "predicted_ms", "measured_ms", 0.10, GOAL_REQUEST_WITHIN_10,
                             {"prompt_len": P, "new_tokens": new_tokens,
                              "batch_size": decode.batch_size, "context": decode.seq_len,
                              "prefill_table": prefill.path.name})
    for p, d in df.groupby("precision"):
        t = metrics(d["predicted_ttft_ms"], d["measured_ttft_ms"])
        summary["precisions"][p]["ttft"] = {k: t[k] for k in ("within_5", "within_10",
                                                               "mean_err_pct", "max_abs_err_pct")}
    return summary


def _per_precision(df: pd.DataFrame, pred: str, meas: str, tol: float, goal: float,
                   workload: dict[str, Any]) -> dict[str, Any]:
    per = {}
    for p, d in df.groupby("precision"):
        m = metrics(d[pred], d[meas])
        share = m["within_5"] if tol == 0.05 else m["within_10"]
        m["goal_met"] = bool(share >= goal)
        m["misses"] = [{"arch": r["arch"], "error_pct": round(r["error_pct"], 2)}
                       for r in d.to_dict("records") if abs(r["error_pct"]) > 100 * tol]
        per[str(p)] = m
    return {"goal": {f"within_{round(100 * tol)}": goal}, "workload": workload,
            "precisions": per}


def markdown(s: dict[str, Any], what: str, unit: str) -> list[str]:
    """Lines of ``summary.md`` for a memory or request summary."""
    w = ", ".join(f"{k} {v}" for k, v in s["workload"].items())
    (key, goal), = s["goal"].items()
    lines = [f"## {what}", "", f"- workload: {w}; goal: >= {100 * goal:.0f}% within "
             f"+-{key.split('_')[1]}%", "",
             f"| precision | n | within 5% | within 10% | mean err % | max err % | RMSE {unit} | "
             "rho | goal |", "|---|---|---|---|---|---|---|---|---|"]
    for p, m in s["precisions"].items():
        lines.append(f"| {p} | {m['n']} | {100 * m['within_5']:.0f}% | "
                     f"{100 * m['within_10']:.0f}% | {m['mean_err_pct']:+.2f} | "
                     f"{m['max_abs_err_pct']:.2f} | {m['rmse_ms']:.4g} | {m['spearman']:.3f} | "
                     f"{'met' if m['goal_met'] else 'MISSED'} |")
    for p, m in s["precisions"].items():
        if "ttft" in m:
            t = m["ttft"]
            lines.append(f"\n{p}: time to first token against the prefill table alone: "
                         f"{100 * t['within_10']:.0f}% within 10%, mean error "
                         f"{t['mean_err_pct']:+.1f}%, worst {t['max_abs_err_pct']:.1f}% (the "
                         "prefill table times no KV-cache writes and no token choice).")
        if m["misses"]:
            lines.append(f"\n{p}: outside the tolerance: " + "; ".join(
                f"{x['arch']} ({x['error_pct']:+.1f}%)" for x in m["misses"]))
    return lines + [""]
