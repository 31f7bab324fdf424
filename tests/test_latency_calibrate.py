"""The correction fit and the accuracy metrics (pure numpy)."""
from __future__ import annotations

import numpy as np
import pytest

from nas.latency.calibrate import Calibration, fit
from nas.latency.accuracy import metrics, spearman
from nas.errors import ConfigError


def test_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0.2, 2.0, 30)
    L = rng.integers(1, 5, 30)
    measured = 1.08 * raw + 0.03 * L + 0.05
    cal = fit(raw, L, measured, seed=7)
    assert (cal.a, cal.b, cal.c) == pytest.approx((1.08, 0.03, 0.05), rel=1e-6)
    assert cal.rmse_pct < 1e-6 and cal.raw_rmse_pct > 1 and cal.seed == 7 and cal.n == 30
    assert cal.apply(1.0, 2) == pytest.approx(1.08 + 0.06 + 0.05)
    assert Calibration.from_dict(cal.to_dict(), "x.json") == cal


def test_fit_with_one_depth_drops_the_layer_term():
    raw = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    cal = fit(raw, [2] * 5, 2 * raw + 0.1, seed=0)
    assert (cal.a, cal.b, cal.c) == pytest.approx((2.0, 0.0, 0.1))


def test_fit_needs_enough_points():
    with pytest.raises(ValueError, match="at least 4"):
        fit([1, 2, 3], [1, 1, 2], [1, 2, 3], seed=0)


def test_non_positive_slope_in_json_is_refused():
    d = {"a": -1.0, "b": 0, "c": 0, "n": 5, "seed": 0, "rmse_pct": 0, "max_abs_pct": 0,
         "raw_rmse_pct": 0}
    with pytest.raises(ConfigError, match="t.json: calibration a=-1.0"):
        Calibration.from_dict(d, "t.json")


def test_metrics_and_spearman():
    m = metrics([1.0, 2.05, 2.9, 4.5], [1.0, 2.0, 3.0, 4.0])
    assert m["n"] == 4 and m["within_5"] == 0.75 and m["within_10"] == 0.75
    assert m["max_abs_err_pct"] == pytest.approx(12.5) and m["spearman"] == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_fit_falls_back_to_fewer_terms_rather_than_a_negative_slope():
    # Latency falls as the sum grows: the full fit's slope is negative, so it is not used.
    raw = np.array([0.5, 1.0, 0.7, 0.9, 0.6, 0.8])
    L = np.array([1, 2, 3, 4, 5, 6])
    measured = 0.2 * L - 0.05 * raw + 0.3
    cal = fit(raw, L, measured, seed=0)
    assert cal.a > 0 and cal.b == 0.0
