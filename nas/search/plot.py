"""Pareto plots: ``python -m nas.search.plot --study A [--study B ...]``.

One study: every trial (feasible ones scored, over-budget ones on a strip above them,
since their loss was never measured), the Pareto front and its 2-D step line, the
budgets, the baseline and the chosen winner. With more than two objectives, a grid of
2-D panels, one per pair (the loss against each cost on the bottom row, costs against
each other above): the study's front in every panel, the step line of what each
projection keeps. Several studies (samplers, hardware targets): their fronts on one
figure. Figures are drawn on a bare ``matplotlib.figure.Figure``, so nothing touches
pyplot's global state or needs a display.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from nas.errors import ConfigError, OneLineParser, clip, disk_full, exit_on_user_error
from nas.outputs import check_folder, folder_name, no_link, write_atomic
from nas.search.objectives import LOSS, REGISTRY
from nas.search.results import choose_winner, front_2d, objectives_of, pareto_frame, trials_frame
from nas.search.storage import damaged_storage_is_refused

COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
MARKERS = ["o", "s", "^", "D", "v", "P"]
DASHES = ["-", "--", ":", "-."]
FORMATS = (".png", ".pdf", ".svg")


def _label(name: str, hardware: str | None) -> str:
    o = REGISTRY[name]
    return o.label + (f" on {hardware}" if hardware and o.unit else "")


def _step(ax, front: pd.DataFrame, x: str, y: str = LOSS, **kw) -> None:
    """A 2-D front as the boundary of what it dominates: flat until the next lower point."""
    line = front_2d(front, x, y)
    ax.step(line[x], line[y], where="post", **kw)


def _panel(ax, df: pd.DataFrame, x: str, y: str, budgets: Mapping[str, float],
           hardware: str | None) -> None:
    """One pair of objectives: the trials, the front, the budgets, baseline and winner."""
    done = df[df["state"] == "COMPLETE"]
    scored = done[done["scored"] & done["feasible"]]
    over = done[~done["feasible"] & ~done["scored"]]  # a scored baseline gets its own marker
    front = pareto_frame(df)
    ax.scatter(scored[x], scored[y], s=14, color="tab:blue", alpha=0.45,
               label=f"within budget, scored ({len(scored)})")
    if y == LOSS:  # the loss of an over-budget trial was never measured: a strip above
        measured = done.loc[done["scored"], LOSS].dropna()  # feasible ones and the baseline
        lo, hi = (measured.min(), measured.max()) if len(measured) else (0.0, 1.0)
        pad = max(hi - lo, 0.05) * 0.08
        over_y = [hi + 2 * pad] * len(over)
        ax.set_ylim(lo - pad, hi + 4 * pad)
        if len(over):
            ax.text(over[x].min(), hi + 2.4 * pad, "over budget: loss not measured",
                    va="bottom", fontsize=8, color="0.35")
    else:
        over_y = over[y]
    if len(over):
        ax.scatter(over[x], over_y, marker="x", s=16, color="0.55",
                   label=f"over budget, not scored ({len(over)})")
    if len(front):
        _step(ax, front, x, y, color="tab:red", lw=1.6)
        ax.scatter(front[x], front[y], s=34, color="tab:red", zorder=3,
                   label=f"Pareto front ({len(front)})")
    for name, b in budgets.items():
        unit = REGISTRY[name].unit
        if name == x:
            ax.axvline(b, color="0.3", ls="--", lw=1)
            ax.axvspan(b, max(done[x].max(), b) * 1.02, color="0.5", alpha=0.08, lw=0)
            ax.text(b, 1.0, f" budget {b:g} {unit}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=8, color="0.3")
        elif name == y:
            ax.axhline(b, color="0.3", ls="--", lw=1)
            ax.axhspan(b, max(done[y].max(), b) * 1.02, color="0.5", alpha=0.08, lw=0)
            ax.text(1.0, b, f"budget {b:g} {unit} ", transform=ax.get_yaxis_transform(),
                    ha="right", va="bottom", fontsize=8, color="0.3")
    base = done[done["baseline"] & done["scored"]]
    if len(base):
        b = base.iloc[0]
        ax.scatter([b[x]], [b[y]], marker="*", s=180, color="black", zorder=4,
                   label=f"baseline: {b['arch']}")
    win = choose_winner(front, budgets)
    if win is not None:
        values = ", ".join(f"{n} {win[n]:{REGISTRY[n].fmt}}" for n in objectives_of(df))
        ax.scatter([win[x]], [win[y]], s=150, facecolors="none", edgecolors="black",
                   linewidths=1.6, zorder=5, label=f"winner: {win['arch']}\n{values}")
    ax.set_xlabel(_label(x, hardware))
    ax.set_ylabel(_label(y, hardware))
    for name, axis in ((x, ax.xaxis), (y, ax.yaxis)):
        if name != LOSS and not REGISTRY[name].unit:  # a count: 250k, not 250000
            axis.set_major_formatter(EngFormatter())
    ax.grid(alpha=0.3)


def plot_pareto(df: pd.DataFrame, path: Path, title: str,
                budgets: Mapping[str, float] | None = None, hardware: str | None = None) -> Path:
    """One study's trials and front, saved as a PNG: one panel for two objectives, a
    lower-triangular grid of pairs for more.

    Args:
        df: ``nas.search.results.trials_frame`` of the study.
        path: the PNG to write.
        title: the figure title (the study name).
        budgets: drawn on their axes; they pick the marked winner.
        hardware: names the axes of predicted objectives.
    """
    budgets = dict(budgets or {})
    names = objectives_of(df)
    order = [n for n in names if n != LOSS] + [LOSS]  # the loss last: on the bottom row's y axis
    n = len(order) - 1
    fig = Figure(figsize=(8, 6) if n == 1 else (4.4 * n + 1, 3.8 * n + 0.6), dpi=120)
    for i in range(n):
        for j in range(i + 1):
            ax = fig.add_subplot(n, n, i * n + j + 1)
            _panel(ax, df, order[j], order[i + 1], budgets, hardware)
    done = int((df["state"] == "COMPLETE").sum())
    if n == 1:
        ax.set_title(f"{title}: {done} trials")
        # Below the axes: inside, it would hide the over-budget strip or the front.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2,
                  frameon=False)
    else:
        fig.suptitle(f"{title}: {done} trials, Pareto front over {', '.join(names)}")
        # The empty upper-right cells hold the legend of a bottom-row panel (all labels).
        fig.legend(*fig.axes[-1].get_legend_handles_labels(), loc="upper right",
                   bbox_to_anchor=(0.98, 0.93), fontsize=9, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_fronts(frames: Mapping[str, pd.DataFrame], path: Path, title: str = "Pareto fronts",
                log_x: bool | None = None, x: str = "latency_ms") -> Path:
    """The fronts of several studies on one figure, the loss against ``x``.

    Args:
        frames: label -> ``trials_frame`` of a study.
        path: the PNG to write.
        title: the figure title.
        log_x: a log ``x`` axis (None: when it spans more than 20x, e.g. a CPU and a GPU
            target).
        x: the objective on the x axis (every study has it).
    """
    fig = Figure(figsize=(8, 5.2), dpi=120)
    ax = fig.add_subplot()
    xs = []
    for i, (label, df) in enumerate(frames.items()):
        front = pareto_frame(df)
        if front.empty:
            continue
        c = COLORS[i % len(COLORS)]
        # Fronts often share points: hollow markers of shrinking size and distinct dashes
        # keep every one visible where they coincide.
        _step(ax, front, x, color=c, lw=1.5, ls=DASHES[i % len(DASHES)], alpha=0.9)
        ax.scatter(front[x], front[LOSS], s=max(70 - 18 * i, 14),
                   marker=MARKERS[i % len(MARKERS)], facecolors="none", edgecolors=c,
                   linewidths=1.4, zorder=3, label=f"{label} ({len(front)} on front)")
        xs += list(front[x])
    if xs and (log_x or (log_x is None and max(xs) > 20 * min(xs))):
        ax.set_xscale("log")
    ax.set_xlabel(REGISTRY[x].label)
    ax.set_ylabel(REGISTRY[LOSS].label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: Figure, path: Path) -> Path:
    """The figure, written whole (never through a link at ``path``: it is replaced)."""
    fmt = path.suffix.lstrip(".").lower() or "png"
    return write_atomic(path, lambda f: fig.savefig(f, format=fmt))


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
    from nas.search.export import DEFAULT_STORAGE, load_named_study, study_budgets

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
            frames = {s.study_name: trials_frame(s) for s in studies}
            if len(studies) == 1:
                s = studies[0]
                # A name read from the storage: one folder inside outputs/, whatever it holds.
                folder = no_link(Path("outputs") / folder_name(s.study_name), "--out")
                out = out or out_file(no_link(folder / "pareto.png", "--out"))
                plot_pareto(frames[s.study_name], out, clip(s.study_name, 80), study_budgets(s),
                            clip(str(s.user_attrs.get("hardware") or ""), 60) or None)
            else:
                x = next(n for n in objectives_of(frames[studies[0].study_name]) if n != LOSS)
                lacking = [k for k, df in frames.items() if x not in df]
                if lacking:
                    raise ConfigError(f"--study: {lacking[0]!r} has no objective {x} (that of "
                                      f"{studies[0].study_name!r}); give studies that share it")
                out = out or out_file(no_link(Path("outputs") / "fronts.png", "--out"))
                plot_fronts(frames, out, x=x)
        except OSError as e:  # a folder that turned out unwritable, a full disk
            if disk_full(e) is not None:
                raise
            raise ConfigError(f"--out: cannot write {out} ({e.strerror or e})") from None
    print(f"plot: {out}")
    return out


def cli() -> None:
    """``nas-plot``: :func:`main`, whose return value a console script would take for an
    exit status."""
    main()


if __name__ == "__main__":
    main()
