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


def _working_set_rows(d: float, n: int = 24):
    """Synthetic calibration rows: models out of L2 run ``d`` x their block sum slower."""
    rng = np.random.default_rng(3)
    L = rng.integers(2, 9, n)
    raw = L * rng.uniform(0.045, 0.06, n)
    ws = rng.uniform(0.3, 1.6, n) * 50e6
    measured = 0.9 * raw + 0.002 * L + 0.004 + d * raw * np.minimum(ws / 50e6, 1.0)
    return raw, L, ws, measured


def test_fit_recovers_a_working_set_effect():
    raw, L, ws, measured = _working_set_rows(d=0.2)
    cal = fit(raw, L, measured, seed=1000, working_set_bytes=ws, l2_bytes=50e6)
    assert cal.uses_working_set and cal.l2_bytes == 50e6
    assert (cal.a, cal.b, cal.c, cal.d) == pytest.approx((0.9, 0.002, 0.004, 0.2), rel=1e-6)
    assert cal.loo_rmse_pct < 1e-6 < cal.plain_loo_rmse_pct
    # A model entirely in L2 and one twice its size: the term scales the sum by W / L2, capped.
    assert cal.apply(0.3, 6, 25e6) == pytest.approx(0.9 * 0.3 + 0.012 + 0.004 + 0.2 * 0.3 * 0.5)
    assert cal.apply(0.3, 6, 100e6) == pytest.approx(0.9 * 0.3 + 0.012 + 0.004 + 0.2 * 0.3)
    with pytest.raises(ValueError, match="working-set term"):
        cal.apply(0.3, 6)
    assert Calibration.from_dict(cal.to_dict(), "x.json") == cal


def test_working_set_term_stays_out_when_it_does_not_help_or_is_not_offered():
    raw, L, ws, measured = _working_set_rows(d=0.0)
    measured = measured * (1 + np.random.default_rng(4).normal(0, 0.01, measured.size))
    plain = fit(raw, L, measured, seed=0)
    offered = fit(raw, L, measured, seed=0, working_set_bytes=ws, l2_bytes=50e6)
    assert not plain.uses_working_set and plain.d == 0.0 and plain.l2_bytes == 0.0
    if not offered.uses_working_set:  # no better out of sample: the plain form, unchanged
        assert (offered.a, offered.b, offered.c) == (plain.a, plain.b, plain.c)
    assert offered.loo_rmse_pct <= offered.plain_loo_rmse_pct
    assert plain.apply(0.3, 6, 1e9) == plain.apply(0.3, 6)


def test_calibration_json_of_older_tables_reads_as_the_plain_form():
    d = {"a": 1.1, "b": 0.0, "c": 0.01, "n": 5, "seed": 0, "rmse_pct": 0, "max_abs_pct": 0,
         "raw_rmse_pct": 0}
    cal = Calibration.from_dict(d, "t.json")
    assert not cal.uses_working_set and cal.apply(1.0, 3) == pytest.approx(1.11)
