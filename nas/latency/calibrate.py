"""The correction that turns a sum of block timings into an end-to-end prediction.

Even blocks timed back to back do not add up to the whole model: the model's own
forward (the layer loop, the calls between blocks), caches shared between blocks and,
on a GPU, how CPU launch overhead overlaps kernels all add a little per layer and a
little per forward pass. So each precision gets

    predicted = a * sum(block medians) + b * n_layer + c

fitted by least squares on *relative* errors (the goal is a relative tolerance) to the
end-to-end latencies of a calibration set of random architectures. The coefficients,
the seed and the size of that set and the fit's residuals are stored in the table's
JSON; validation must draw its architectures from another seed. Pure numpy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from nas.errors import ConfigError


@dataclass(frozen=True)
class Calibration:
    """``predicted = a * raw_sum + b * n_layer + c`` (milliseconds) for one precision.

    Attributes:
        a, b, c: the coefficients.
        n: architectures the fit used.
        seed: the seed that drew them.
        rmse_pct: root-mean-square relative residual on those architectures (in-sample).
        max_abs_pct: largest absolute relative residual (in-sample).
        raw_rmse_pct: the same for the plain sum, before correction.
    """

    a: float
    b: float
    c: float
    n: int
    seed: int
    rmse_pct: float
    max_abs_pct: float
    raw_rmse_pct: float

    def apply(self, raw_sum_ms: float, n_layer: int) -> float:
        """The corrected latency in milliseconds."""
        return self.a * raw_sum_ms + self.b * n_layer + self.c

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "Calibration":
        """Read the JSON form; ``where`` names the file in errors."""
        try:
            cal = cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{where}: calibration entry is malformed ({e}); "
                              "rebuild the table") from None
        for k in ("a", "b", "c"):
            v = getattr(cal, k)
            if not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ConfigError(f"{where}: calibration {k}={v!r} is not a finite number; "
                                  "rebuild the table")
        if cal.a <= 0:
            raise ConfigError(f"{where}: calibration a={cal.a} must be positive; rebuild the table")
        return cal


def fit(raw_sum_ms: Sequence[float], n_layer: Sequence[int], measured_ms: Sequence[float],
        seed: int) -> Calibration:
    """Fit the correction on end-to-end measurements.

    Args:
        raw_sum_ms: the plain sum of block medians of each architecture.
        n_layer: its number of layers.
        measured_ms: its measured end-to-end median.
        seed: the seed that drew the architectures (recorded, never reused to validate).

    Returns:
        The fitted :class:`Calibration`.

    Raises:
        ValueError: fewer than 4 architectures, or no fit with a positive slope.
    """
    s, L, m = (np.asarray(v, dtype=float) for v in (raw_sum_ms, n_layer, measured_ms))
    if s.size < 4:
        raise ValueError(f"calibration needs at least 4 architectures, got {s.size}")
    # The full model first; with few or noisy points its slope can come out meaningless,
    # so fall back to fewer terms (a slope and an offset, then a bare ratio).
    terms = [("a", "b", "c"), ("a", "c"), ("a",)]
    if np.ptp(L) == 0:  # one depth only: the layer term is not identifiable
        terms = terms[1:]
    cols = {"a": s, "b": L, "c": np.ones_like(s)}
    w = 1.0 / m  # least squares on relative error
    for names in terms:
        X = np.stack([cols[k] for k in names], axis=1)
        coef, *_ = np.linalg.lstsq(X * w[:, None], np.ones_like(m), rcond=None)
        got = dict(zip(names, coef))
        if got["a"] > 0:
            break
    else:
        raise ValueError("calibration fit has a non-positive slope; the measurements are too noisy")
    a, b, c = got["a"], got.get("b", 0.0), got.get("c", 0.0)
    pred = a * s + b * L + c
    rel = pred / m - 1
    raw = s / m - 1
    return Calibration(a=float(a), b=float(b), c=float(c), n=int(s.size), seed=int(seed),
                       rmse_pct=float(100 * np.sqrt(np.mean(rel**2))),
                       max_abs_pct=float(100 * np.max(np.abs(rel))),
                       raw_rmse_pct=float(100 * np.sqrt(np.mean(raw**2))))
