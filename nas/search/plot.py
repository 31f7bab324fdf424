"""Pareto plots: ``python -m nas.search.plot --study A [--study B ...]``.

One study: every trial (feasible ones scored, over-budget ones on a strip above them,
since their loss was never measured), the Pareto front as a step line, the baseline
and the chosen winner. Several studies (samplers, hardware targets): their fronts on
one figure. Figures are drawn on a bare ``matplotlib.figure.Figure``, so nothing
touches pyplot's global state or needs a display.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure

from nas.errors import ConfigError, OneLineParser, exit_on_user_error
from nas.outputs import check_folder
from nas.search.results import choose_winner, pareto_frame, trials_frame
from nas.search.study import damaged_storage_is_refused

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
MARKERS = ["o", "s", "^", "D", "v", "P"]
DASHES = ["-", "--", ":", "-."]
FORMATS = (".png", ".pdf", ".svg")


def _step(ax, front: pd.DataFrame, **kw) -> None:
    """The front as the boundary of what it dominates: flat until the next faster point."""
    ax.step(front["latency_ms"], front["val_loss"], where="post", **kw)


def plot_pareto(df: pd.DataFrame, path: Path, title: str, budget_ms: float | None = None,
                hardware: str | None = None) -> Path:
    """One study's trials and front, saved as a PNG.

    Args:
        df: ``nas.search.results.trials_frame`` of the study.
        path: the PNG to write.
        title: the figure title (the study name).
        budget_ms: draws the budget and picks the annotated winner.
        hardware: names the latency axis.
    """
    fig = Figure(figsize=(8, 6), dpi=120)
    ax = fig.add_subplot()
    done = df[df["state"] == "COMPLETE"]
    scored = done[done["scored"] & done["feasible"]]
    over = done[~done["feasible"] & ~done["scored"]]  # a scored baseline gets its own marker
    front = pareto_frame(df)
    ax.scatter(scored["latency_ms"], scored["val_loss"], s=14, color="tab:blue", alpha=0.45,
               label=f"within budget, scored ({len(scored)})")
    measured = done.loc[done["scored"], "val_loss"].dropna()  # feasible ones and the baseline
    lo, hi = (measured.min(), measured.max()) if len(measured) else (0.0, 1.0)
    pad = max(hi - lo, 0.05) * 0.08
    strip = hi + 2 * pad
    if len(over):
        ax.scatter(over["latency_ms"], [strip] * len(over), marker="x", s=16, color="0.55",
                   label=f"over budget, not scored ({len(over)})")
        ax.text(over["latency_ms"].min(), strip + pad * 0.4, "over budget: loss not measured",
                va="bottom", fontsize=8, color="0.35")
    if len(front):
        _step(ax, front, color="tab:red", lw=1.6)
        ax.scatter(front["latency_ms"], front["val_loss"], s=34, color="tab:red", zorder=3,
                   label=f"Pareto front ({len(front)})")
    if budget_ms is not None:
        ax.axvline(budget_ms, color="0.3", ls="--", lw=1)
        ax.axvspan(budget_ms, max(done["latency_ms"].max(), budget_ms) * 1.02, color="0.5",
                   alpha=0.08, lw=0)
        ax.text(budget_ms, 1.0, f" budget {budget_ms:g} ms", transform=ax.get_xaxis_transform(),
                va="top", fontsize=8, color="0.3")
    base = done[done["baseline"] & done["scored"]]
    if len(base):
        b = base.iloc[0]
        ax.scatter([b["latency_ms"]], [b["val_loss"]], marker="*", s=180, color="black", zorder=4,
                   label=f"baseline: {b['arch']}")
    win = choose_winner(front, budget_ms)
    if win is not None:
        ax.annotate(f"winner: {win['arch']}\n{win['latency_ms']:.3g} ms, loss {win['val_loss']:.3f}",
                    (win["latency_ms"], win["val_loss"]), xytext=(25, 30), textcoords="offset points",
                    fontsize=8, arrowprops={"arrowstyle": "->", "color": "0.2"},
                    bbox={"boxstyle": "round", "fc": "white", "ec": "0.6"})
    ax.set_ylim(lo - pad, strip + 2 * pad)
    ax.set_xlabel(f"predicted latency (ms){' on ' + hardware if hardware else ''}")
    ax.set_ylabel("validation loss (supernet weights)")
    ax.set_title(f"{title}: {len(done)} trials")
    ax.grid(alpha=0.3)
    # Below the axes: inside, it would hide the over-budget strip or the front.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_fronts(frames: Mapping[str, pd.DataFrame], path: Path, title: str = "Pareto fronts",
                log_x: bool | None = None) -> Path:
    """The fronts of several studies on one figure.

    Args:
        frames: label -> ``trials_frame`` of a study.
        path: the PNG to write.
        title: the figure title.
        log_x: a log latency axis (None: when the latencies span more than 20x,
            e.g. a CPU and a GPU target).
    """
    fig = Figure(figsize=(8, 5.2), dpi=120)
    ax = fig.add_subplot()
    lats = []
    for i, (label, df) in enumerate(frames.items()):
        front = pareto_frame(df)
        if front.empty:
            continue
        c = COLORS[i % len(COLORS)]
        # Fronts often share points: hollow markers of shrinking size and distinct dashes
        # keep every one visible where they coincide.
        _step(ax, front, color=c, lw=1.5, ls=DASHES[i % len(DASHES)], alpha=0.9)
        ax.scatter(front["latency_ms"], front["val_loss"], s=max(70 - 18 * i, 14),
                   marker=MARKERS[i % len(MARKERS)], facecolors="none", edgecolors=c,
                   linewidths=1.4, zorder=3, label=f"{label} ({len(front)} on front)")
        lats += list(front["latency_ms"])
    if lats and (log_x or (log_x is None and max(lats) > 20 * min(lats))):
        ax.set_xscale("log")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation loss (supernet weights)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def out_file(path: Path, key: str = "--out") -> Path:
    """The figure file for ``path``: ``.png`` added when it has no extension.

    Raises:
        ConfigError: an extension other than :data:`FORMATS`, a folder, or a place that
            cannot be written.
    """
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a folder; give a file ending in {', '.join(FORMATS)}")
    if not path.suffix:
        path = path.with_name(path.name + ".png")
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"{key}: {path.name!r} has the extension {path.suffix!r}; "
                          f"allowed: {', '.join(FORMATS)}")
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a folder; give a file ending in {', '.join(FORMATS)}")
    check_folder(path.parent, key)
    return path


@exit_on_user_error
def main(argv: list[str] | None = None) -> Path:
    from nas.search.export import DEFAULT_STORAGE, load_named_study

    ap = OneLineParser(
        prog="nas-plot", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Plot a search study's trials and Pareto front, or the fronts of several\n"
                    "studies on one figure, from the storage.",
        epilog="example:\n  nas-plot --study tiny-cpu\n"
               "  nas-plot --study tiny-cpu --study tiny-h100 --out fronts.pdf")
    ap.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL or journal file")
    ap.add_argument("--study", action="append", default=None,
                    help="a study name; repeat it to put several fronts on one figure")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"the figure, {', '.join(FORMATS)} (default: outputs/<study>/pareto.png, "
                         "or outputs/fronts.png)")
    args = ap.parse_args(argv)
    out = out_file(args.out) if args.out is not None else None
    names = args.study or [None]
    if len(set(names)) != len(names):
        raise ConfigError("--study: a study is named twice")
    with damaged_storage_is_refused(args.storage, "--storage"):
        studies = [load_named_study(args.storage, n) for n in names]
        try:
            if len(studies) == 1:
                s = studies[0]
                out = out or out_file(Path("outputs") / s.study_name / "pareto.png")
                plot_pareto(trials_frame(s), out, s.study_name, s.user_attrs.get("latency_budget_ms"),
                            s.user_attrs.get("hardware"))
            else:
                out = out or out_file(Path("outputs") / "fronts.png")
                plot_fronts({s.study_name: trials_frame(s) for s in studies}, out)
        except OSError as e:  # a folder that turned out unwritable, a full disk
            raise ConfigError(f"--out: cannot write {out} ({e.strerror or e})") from None
    print(f"plot: {out}")
    return out


def cli() -> None:
    """``nas-plot``: :func:`main`, whose return value a console script would take for an
    exit status."""
    main()


if __name__ == "__main__":
    main()
