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

On a GPU a decode table can add a term for the L2 cache. Its blocks are each timed
rotating among several copies, so a small block runs from L2 while a model whose
weights and KV cache (its working set ``W``) outgrow the L2 cache streams them from
memory, step after step; the share of the step that slows grows with ``W`` until the
whole model is out of L2:

    predicted = a * sum + b * n_layer + c + d * sum * min(W / L2, 1)

``L2`` is the card's L2 size (known, not fitted). The fit tries this form, the same
without the layer term, and the plain one, keeps those whose slope on the sum
(``a + d * min(W / L2, 1)``) is positive for every calibration model, and of those the
one with the lowest leave-one-out error on the calibration models: the choice is made
on the calibration set alone.
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
        d: coefficient of the working-set term (0: the plain form).
        l2_bytes: the L2 cache size the term is relative to (0: no term).
        loo_rmse_pct: leave-one-out relative RMSE of the chosen form (None: not computed).
        plain_loo_rmse_pct: the same for the plain form, when a working set was offered.
    """

    a: float
    b: float
    c: float
    n: int
    seed: int
    rmse_pct: float
    max_abs_pct: float
    raw_rmse_pct: float
    d: float = 0.0
    l2_bytes: float = 0.0
    loo_rmse_pct: float | None = None
    plain_loo_rmse_pct: float | None = None

    @property
    def uses_working_set(self) -> bool:
        """Whether :meth:`apply` needs the model's working set."""
        return self.d != 0.0 and self.l2_bytes > 0

    def apply(self, raw_sum_ms: float, n_layer: int,
              working_set_bytes: float | None = None) -> float:
        """The corrected latency in milliseconds.

        Raises:
            ValueError: the correction has a working-set term and none was given.
        """
        ms = self.a * raw_sum_ms + self.b * n_layer + self.c
        if self.uses_working_set:
            if working_set_bytes is None:
                raise ValueError("this calibration has a working-set term: give the model's "
                                 "weight + KV cache bytes")
            ms += self.d * raw_sum_ms * min(working_set_bytes / self.l2_bytes, 1.0)
        return ms

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "Calibration":
        """Read the JSON form; ``where`` names the file in errors."""
        try:
            # Tables written before the working-set term lack its fields: the plain form.
            cal = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{where}: calibration entry is malformed ({e}); "
                              "rebuild the table") from None
        for k in ("a", "b", "c", "d", "l2_bytes"):
            v = getattr(cal, k)
            if not isinstance(v, (int, float)) or not np.isfinite(v):
                raise ConfigError(f"{where}: calibration {k}={v!r} is not a finite number; "
                                  "rebuild the table")
        # With the working-set term the slope is a + d * min(W / L2, 1): checked at
        # saturation here (at every calibration model by the fit).
        slope = cal.a + cal.d if cal.uses_working_set else cal.a
        if slope <= 0:
            raise ConfigError(f"{where}: calibration a={cal.a} (d={cal.d}) gives a slope of "
                              f"{slope} that must be positive; rebuild the table")
        return cal


def _lstsq(cols: dict[str, np.ndarray], names: tuple[str, ...], m: np.ndarray,
           idx: np.ndarray) -> dict[str, float]:
    """Least squares on relative error over the rows ``idx``."""
    X = np.stack([cols[k][idx] for k in names], axis=1)
    coef, *_ = np.linalg.lstsq(X / m[idx, None], np.ones(idx.size), rcond=None)
    return dict(zip(names, (float(v) for v in coef)))


def _predict(cols: dict[str, np.ndarray], got: dict[str, float]) -> np.ndarray:
    return sum(v * cols[k] for k, v in got.items())


def _loo_rmse_pct(cols: dict[str, np.ndarray], names: tuple[str, ...], m: np.ndarray) -> float:
    """Leave-one-out relative RMSE (%) of the form ``names``."""
    errs = []
    for i in range(m.size):
        got = _lstsq(cols, names, m, np.delete(np.arange(m.size), i))
        errs.append(sum(v * cols[k][i] for k, v in got.items()) / m[i] - 1)
    return float(100 * np.sqrt(np.mean(np.square(errs))))


def fit(raw_sum_ms: Sequence[float], n_layer: Sequence[int], measured_ms: Sequence[float],
        seed: int, working_set_bytes: Sequence[float] | None = None,
        l2_bytes: float | None = None) -> Calibration:
    """Fit the correction on end-to-end measurements.

    Args:
        raw_sum_ms: the plain sum of block medians of each architecture.
        n_layer: its number of layers.
        measured_ms: its measured end-to-end median.
        seed: the seed that drew the architectures (recorded, never reused to validate).
        working_set_bytes: per architecture, weights + KV cache at the workload; with
            ``l2_bytes`` the working-set forms are tried too (see the module docstring).
        l2_bytes: the L2 cache size of the device.

    Returns:
        The fitted :class:`Calibration`.

    Raises:
        ValueError: fewer than 4 architectures, or no fit with a positive slope.
    """
    s, L, m = (np.asarray(v, dtype=float) for v in (raw_sum_ms, n_layer, measured_ms))
    if s.size < 4:
        raise ValueError(f"calibration needs at least 4 architectures, got {s.size}")
    cols = {"a": s, "b": L, "c": np.ones_like(s)}
    every = np.arange(s.size)
    # The full model first; with few or noisy points its slope can come out meaningless,
    # so fall back to fewer terms (a slope and an offset, then a bare ratio).
    terms = [("a", "b", "c"), ("a", "c"), ("a",)]
    if np.ptp(L) == 0:  # one depth only: the layer term is not identifiable
        terms = terms[1:]
    for names in terms:
        got = _lstsq(cols, names, m, every)
        if got["a"] > 0:
            break
    else:
        raise ValueError("calibration fit has a non-positive slope; the measurements are too noisy")
    plain_loo = _loo_rmse_pct(cols, names, m) if s.size > len(names) + 1 else None
    best, best_loo, l2 = got, plain_loo, 0.0
    if working_set_bytes is not None and l2_bytes and s.size > 6 and plain_loo is not None:
        share = np.minimum(np.asarray(working_set_bytes, dtype=float) / l2_bytes, 1.0)
        cols["d"] = s * share
        forms = [("a", "b", "c", "d"), ("a", "c", "d")]
        if np.ptp(L) == 0:
            forms = forms[1:]
        for names in forms:
            cand = _lstsq(cols, names, m, every)
            # A model with more block time must never be predicted faster.
            if np.any(cand["a"] + cand["d"] * share <= 0):
                continue
            loo = _loo_rmse_pct(cols, names, m)
            if loo < best_loo:
                best, best_loo, l2 = cand, loo, float(l2_bytes)
    rel = _predict(cols, best) / m - 1
    raw = s / m - 1
    return Calibration(a=best["a"], b=best.get("b", 0.0), c=best.get("c", 0.0),
                       n=int(s.size), seed=int(seed),
                       rmse_pct=float(100 * np.sqrt(np.mean(rel**2))),
                       max_abs_pct=float(100 * np.max(np.abs(rel))),
                       raw_rmse_pct=float(100 * np.sqrt(np.mean(raw**2))),
                       d=best.get("d", 0.0), l2_bytes=l2, loo_rmse_pct=best_loo,
                       plain_loo_rmse_pct=plain_loo if working_set_bytes is not None else None)
