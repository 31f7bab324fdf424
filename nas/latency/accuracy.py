"""How close predictions are to measurements: the figures every report quotes. Pure numpy."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on average ranks; no scipy needed)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def metrics(predicted: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Accuracy of predictions against measurements.

    Returns:
        n, within_5 and within_10 (shares), rmse_ms, rmse_pct, mean_err_pct,
        max_abs_err_pct, spearman.
    """
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = p / m - 1
    return {"n": int(p.size),
            "within_5": float(np.mean(np.abs(rel) <= 0.05)),
            "within_10": float(np.mean(np.abs(rel) <= 0.10)),
            "rmse_ms": float(np.sqrt(np.mean((p - m) ** 2))),
            "rmse_pct": float(100 * np.sqrt(np.mean(rel**2))),
            "mean_err_pct": float(100 * np.mean(rel)),
            "max_abs_err_pct": float(100 * np.max(np.abs(rel))),
            "spearman": spearman(p, m)}
