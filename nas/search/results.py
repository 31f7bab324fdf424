"""A study read back as tables: every trial, the Pareto front, the winner, the hypervolume.

Everything here works from the storage alone (``nas.search.study.open_storage``), so a
finished search can be exported or plotted without its supernet or latency table.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from nas.errors import ConfigError, clip, shown
from nas.space import ArchConfig
from nas.search.objectives import DEFAULT, LOSS, REFERENCE_LOSS, REGISTRY, of_study

# After "number", "state" and the study's objectives.
COLUMNS = ["feasible", "scored", "pareto", "baseline", "arch_id", "arch", "params", "n_layer",
           "d_model", "precision", "duration_s"]


def check_search_study(study: optuna.Study, key: str = "--study") -> None:
    """Refuse a study these tables cannot be read from: not made by ``nas.search``, or empty.

    Raises:
        ConfigError: other objectives, no finished trial, or trials without architectures.
    """
    name = clip(study.study_name, 80)
    if of_study(study) is None:
        directions = [d.name.lower() for d in study.directions]
        have = ", ".join(f"{m} ({d})" for m, d in zip(study.metric_names or ["?"] * len(directions),
                                                      directions))
        raise ConfigError(f"{key}: {name!r} has objectives {have}; only a study of nas.search "
                          f"({', '.join(DEFAULT)} or another search.objectives list, all minimised) "
                          "can be read")
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ConfigError(f"{key}: {name!r} has no finished trial yet; run python -m nas.search "
                          "to fill it")
    if not all("arch" in t.user_attrs for t in done):
        raise ConfigError(f"{key}: {name!r} has trials without an architecture; only a study of "
                          "nas.search can be read")
    for t in done:  # a storage edited by hand: one line, not a traceback further on
        a, arch_id, params = (t.user_attrs.get(k) for k in ("arch", "arch_id", "params"))
        where = f"{key}: {name!r}, trial {t.number}"
        if not isinstance(a, Mapping):
            raise ConfigError(f"{where}: its architecture is {shown(a, 60)}, not a mapping (an "
                              "edited storage?); only a study of nas.search can be read")
        try:
            ArchConfig.from_dict(a)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if not isinstance(arch_id, str) or not (params is None or (
                isinstance(params, int) and not isinstance(params, bool) and params >= 0)):
            raise ConfigError(f"{where}: arch_id {shown(arch_id, 40)} or params {shown(params, 40)} "
                              "is not what a search records (an edited storage?)")


def objectives_of(df: pd.DataFrame) -> list[str]:
    """The objectives of a :func:`trials_frame`: its columns between ``state`` and ``feasible``."""
    cols = list(df.columns)
    return cols[cols.index("state") + 1:cols.index("feasible")]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial (COMPLETE or FAIL), with the Pareto flag.

    Columns: ``number``, ``state``, one per objective (in the study's order), then
    :data:`COLUMNS`. ``val_loss`` is NaN for trials that were never scored (over budget);
    ``pareto`` is Optuna's ``study.best_trials``: feasible, non-dominated, first of any
    duplicates.
    """
    names = list(of_study(study) or ())
    front = {t.number for t in study.best_trials}
    rows: list[dict[str, Any]] = []
    seen_on_front: set[str] = set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        arch = t.user_attrs.get("arch")
        arch = arch if isinstance(arch, Mapping) else None  # a failed trial may lack one
        arch_id = str(t.user_attrs.get("arch_id", ""))
        values = dict(zip(names, t.values or [math.nan] * len(names)))
        scored = bool(t.user_attrs.get("scored", t.state == TrialState.COMPLETE))
        if scored and REFERENCE_LOSS in t.user_attrs:  # the baseline over budget
            values[LOSS] = float(t.user_attrs[REFERENCE_LOSS])
        if not (scored and math.isfinite(values[LOSS])):
            values[LOSS] = math.nan
        on_front = t.number in front and arch_id not in seen_on_front
        if on_front:
            seen_on_front.add(arch_id)
        rows.append({
            "number": t.number,
            "state": t.state.name,
            **values,
            "feasible": t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values()),
            "scored": scored,
            "pareto": on_front,
            "baseline": bool(t.user_attrs.get("baseline", False)),
            "arch_id": arch_id,
            "arch": ArchConfig.from_dict(arch).describe() if arch else "",
            "params": t.user_attrs.get("params"),
            "n_layer": arch["n_layer"] if arch else None,
            "d_model": arch["d_model"] if arch else None,
            "precision": arch["precision"] if arch else None,
            "duration_s": t.duration.total_seconds() if t.duration else math.nan,
        })
    # "params" is a column of its own unless it is an objective.
    return pd.DataFrame(rows, columns=["number", "state", *names,
                                       *(c for c in COLUMNS if c not in names)])


def pareto_frame(df: pd.DataFrame) -> pd.DataFrame:
    """The Pareto-optimal rows, by the first objective other than the loss (fastest first)."""
    names = objectives_of(df)
    costs = [n for n in names if n != LOSS]
    return df[df["pareto"]].sort_values([*costs, LOSS]).reset_index(drop=True)


def front_2d(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows of ``df`` no other row beats in both ``x`` and ``y``, by ``x``: a 2-D front
    (of a front in more dimensions, the points its projection on ``(x, y)`` keeps)."""
    rows = df.dropna(subset=[x, y]).sort_values([x, y])
    keep = rows[y] < rows[y].astype(float).cummin().shift(fill_value=math.inf)
    return rows[keep]


def choose_winner(pareto: pd.DataFrame, budgets: Mapping[str, float] | None) -> pd.Series | None:
    """The lowest loss within every budget (by objective); None if nothing fits."""
    fits = pareto
    for name, b in (budgets or {}).items():
        fits = fits[fits[name] <= b]
    if fits.empty:
        return None
    return fits.sort_values([LOSS, *(n for n in REGISTRY if n in fits and n != LOSS)]).iloc[0]


def hypervolume(points: np.ndarray | Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by ``points`` (both objectives minimised) up to ``reference``.

    An exact sweep: sorted by the first objective, each point adds the strip between
    its second objective and the lowest one seen so far. Points beyond the reference in
    either objective, or not finite, add nothing.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    ref_x, ref_y = (float(r) for r in reference)
    pts = pts[np.all(np.isfinite(pts), axis=1) & (pts[:, 0] <= ref_x) & (pts[:, 1] <= ref_y)]
    area, floor = 0.0, ref_y
    for x, y in sorted(map(tuple, pts)):
        if y < floor:  # else dominated by (or equal to) a point already swept
            area += (ref_x - x) * (floor - y)
            floor = y
    return area


def hypervolume_history(df: pd.DataFrame, reference: Sequence[float]) -> np.ndarray:
    """Hypervolume of the feasible scored trials among the first k, for every k (by number)."""
    df = df[df["state"] == "COMPLETE"].sort_values("number")
    ok = (df["feasible"] & df["scored"]).to_numpy()
    pts = df[["val_loss", "latency_ms"]].to_numpy()
    out, kept = np.zeros(len(df)), []
    hv = 0.0
    for i in range(len(df)):
        if ok[i]:
            kept.append(pts[i])
            hv = hypervolume(np.array(kept), reference)
        out[i] = hv
    return out
