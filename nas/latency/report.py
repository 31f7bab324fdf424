"""The words and the figure of a validation report (``summary.md``, ``scatter.png``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas.latency.accuracy import metrics
from nas.latency.validate_serving import markdown as serving_lines


def markdown(s: dict[str, Any]) -> str:
    """``summary.md``: the latency table of ``validate``, then memory and requests if any."""
    lines: list[str] = []
    if "memory" in s:
        lines += ["", *serving_lines(s["memory"], "Peak memory of a request (MiB)", "MiB")]
    if "request" in s:
        lines += ["", *serving_lines(s["request"], "Whole requests: TTFT + (N - 1) x TPOT (ms)",
                                     "ms")]
    if s.get("baseline_floor"):
        from nas.latency.floor import floor_line
        lines += ["", "## The baseline against the memory-bandwidth floor", "",
                  floor_line(s["baseline_floor"])]
    return _latency(s) + "\n".join(lines)


def _latency(s: dict[str, Any]) -> str:
    w, fp = s["workload"], s["table_fingerprint"]
    hw = fp.get("gpu_name") or f"{fp.get('cpu_model')} ({fp.get('cpu_count')} cores)"
    lines = [f"# Latency predictor validation: {s['table']}", "",
             f"- command: `{s['command']}`",
             f"- table built by: `{s['table_command']}`",
             f"- hardware: {hw}; torch {fp.get('torch')}; {w['device']}, {w['threads']} CPU "
             f"thread(s), {w.get('phase', 'prefill')}, batch {w['batch_size']}, "
             f"{'context' if w.get('phase') == 'decode' else 'seq'} {w['seq_len']}, mode {w['mode']}"
             + (f", clock: {s['timer']['cpu_clock']}" if w["device"] == "cpu"
                else ", clock: CUDA events"),
             f"- timer: {s['timer']['repeats']} windows of ~{s['timer']['window_ms']} ms after "
             f"{s['timer']['warmup']} warm-up calls; the median window is one measurement; "
             f"{s['timer']['passes']} pass(es), the lowest median kept",
             f"- space `{s['space']}`; {s['n_per_precision']} held-out architectures per precision, "
             f"validation seed {s['validation_seed']}; calibration fitted on seed(s) "
             f"{sorted(set(s['calibration_seeds'].values()))} (those architectures excluded)",
             f"- goal: >= {100 * s['goal']['within_10']:.0f}% within +-10%"
             + (f", >= {100 * s['goal']['within_5']:.0f}% within +-5%" if "within_5" in s["goal"]
                else "") + " and Spearman's rho >= "
             f"{s['goal']['spearman']}",
             "- measured = the lowest of the per-pass medians, the same rule the table's blocks "
             "and calibration models were measured with; predicted = a * sum(blocks) + "
             "b * n_layer + c with the table's per-precision calibration",
             _load_line(s.get("load_average") or {}, fp.get("cpu_count")), "",
             "| precision | n | within 5% | within 10% | RMSE ms | RMSE % | mean err % | max err % "
             "| rho | plain sum within 10% | plain sum rho | repeat spread (median range) | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p, m in s["precisions"].items():
        nz = m.get("noise", {})
        lines.append(
            f"| {p} | {m['n']} | {100 * m['within_5']:.0f}% | {100 * m['within_10']:.0f}% | "
            f"{m['rmse_ms']:.4f} | {m['rmse_pct']:.1f} | {m['mean_err_pct']:+.1f} | "
            f"{m['max_abs_err_pct']:.1f} | {m['spearman']:.3f} | "
            f"{100 * m['plain_sum']['within_10']:.0f}% | {m['plain_sum']['spearman']:.3f} | "
            f"{nz.get('median_range_pct', float('nan')):.1f}% | "
            f"{'met' if m['goal_met'] else 'MISSED'} |")
    lines.append("")
    for p, m in s["precisions"].items():
        if not m["goal_met"]:
            sf = m["goal_shortfall"]
            lines.append(f"**{p}: goal missed** by {sf['within_10_points']} points of share "
                         f"within 10%, {sf.get('within_5_points', 0.0)} points of share within "
                         f"5% and {sf['spearman']} of rho.")
        if m["misses_10pct"]:
            lines.append(f"{p}: architectures outside +-10%: " + "; ".join(
                f"{x['arch']} ({x['error_pct']:+.1f}%)" for x in m["misses_10pct"]))
        vw = m.get("vs_wall_clock")
        if vw and s["timer"]["cpu_clock"] != "wall":
            lines.append(f"{p}: against wall-clock medians of the same windows (inflated by other "
                         f"processes on a shared machine): {100 * vw['within_10']:.0f}% within 10%, "
                         f"mean error {vw['mean_err_pct']:+.1f}%, rho {vw['spearman']:.3f}.")
        pr = m.get("pass_range_pct")
        if pr:
            lines.append(f"{p}: every model was measured in {s['timer']['passes']} passes far apart "
                         f"in time (the lowest kept): the passes differ by {pr['median']:.1f}% "
                         f"(median over models), {pr['p90']:.1f}% (p90), {pr['max']:.1f}% (max).")
        nz = m.get("noise")
        if nz:
            lines.append(f"{p}: noise: {len(nz['models'])} models each measured "
                         f"{len(nz['models'][0]['medians_ms'])} times: range of the medians "
                         f"{nz['median_range_pct']:.1f}% (median), {nz['max_range_pct']:.1f}% (max); "
                         f"CV {nz['median_cv_pct']:.1f}%; within one measurement the p10-p90 "
                         f"spread of the windows is {m['median_window_spread_pct']:.1f}% (median).")
        lines.append("")
    lines += ["Files: `report.csv` (every architecture), `scatter.png`, `summary.json`.", ""]
    return "\n".join(lines)


def _load_line(load: dict[str, Any], cores: Any) -> str:
    """How busy the machine was (1-minute load average) during the build and validation."""
    def one(x: Any) -> str:
        return f"{x[0]:g}" if x else "?"
    return (f"- machine load (1-min load average on {cores} cores): build "
            f"{one(load.get('build_start'))}"
            f" -> {one(load.get('build_end'))}, validation {one(load.get('start'))} -> "
            f"{one(load.get('end'))}")


def plot(df: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """Predicted vs measured scatter, one panel per precision, with the +-10% band."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    precs = list(dict.fromkeys(df["precision"]))
    fig, axes = plt.subplots(1, len(precs), figsize=(5 * len(precs), 4.8), squeeze=False)
    for ax, p in zip(axes[0], precs):
        d = df[df["precision"] == p]
        lo = 0.8 * min(d["measured_ms"].min(), d["predicted_ms"].min(), d["plain_sum_ms"].min())
        hi = 1.2 * max(d["measured_ms"].max(), d["predicted_ms"].max(), d["plain_sum_ms"].max())
        xs = np.geomspace(lo, hi, 50)
        ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.9", label="+-10%")
        ax.plot(xs, xs, color="0.4", lw=1)
        ax.scatter(d["measured_ms"], d["plain_sum_ms"], marker="x", s=18, color="0.6",
                   label="plain sum of blocks")
        sc = ax.scatter(d["measured_ms"], d["predicted_ms"], c=d["n_layer"], s=22, cmap="viridis",
                        label="predicted (corrected)")
        m = metrics(d["predicted_ms"], d["measured_ms"])
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
               xlabel="measured end-to-end (ms)", ylabel="predicted (ms)",
               title=f"{p}: {100 * m['within_10']:.0f}% within 10%, rho {m['spearman']:.3f}")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers at 1-2-5 steps, not 3x10^-1
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        ax.legend(loc="upper left", fontsize=8)
        fig.colorbar(sc, ax=ax, label="n_layer")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
