"""Peak memory of serving one request: weights + KV cache + activations. Pure numpy.

A decode table predicts the peak of one request at its workload (batch ``B``, prompt
``P``, context ``C``) as

    peak = sum(weight bytes of the model's blocks) + KV cache + a * activations
           + b * n_layer + c

- weights: measured per block like latency (``memory_measure.block_weight_bytes``): the
  bytes a block's module holds on the device in its precision, so allocator rounding and
  int8's packed weights (fbgemm pads small matrices to several times their size) are in
  it; the output projection, tied to the token embedding, adds only what it adds;
- the KV cache: exactly ``2 * B * C * sum(heads_i) * head_dim`` activations;
- activations: :func:`activation_bytes`, the largest set of tensors alive at one time
  during the prefill of ``B * P`` tokens, following the code layer by layer: inside an
  attention block the input, q, k, v, the attention output, its reshaped copy, the
  projection and the sum; inside an FFN block the input with two of LayerNorm output,
  ``fc1``, GELU and ``fc2`` output. A decode step holds far less.

``a``, ``b`` and ``c`` (:class:`MemoryFit`, per precision) are fitted on the measured
peaks of the table's calibration models, for what the count leaves out: kernel
workspaces, the model's own container, and what each block measured alone holds apart
from its weights (Python objects, and on a CPU the bookkeeping of int8 packing).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from nas.errors import ConfigError
from nas.latency.spec import BlockKey, arch_blocks

if TYPE_CHECKING:
    from nas.space import ArchConfig

ACT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 4}  # int8 quantises weights only
MB = 2**20


def cache_bytes(arch: ArchConfig, batch_size: int, context: int) -> int:
    """Bytes of the keys and values of a static cache of ``context`` positions."""
    return batch_size * context * arch.kv_bytes_per_token(ACT_BYTES[arch.precision])


def activation_bytes(arch: ArchConfig, batch_size: int, prompt_len: int) -> int:
    """The largest set of activations alive at once during the prefill of the prompt."""
    n, d, s = batch_size * prompt_len, arch.d_model, ACT_BYTES[arch.precision]
    peaks = [2 * n * d + prompt_len * d,  # token and position embeddings, their sum
             n * (2 * d + arch.vocab_size)]  # head: input, LayerNorm, logits
    for h, g, f in zip(arch.n_head, arch.n_kv_head, arch.d_ff):
        inner, kv_inner = h * arch.head_dim, g * arch.head_dim
        if h:
            peaks.append(n * (3 * d + 3 * inner + 2 * kv_inner))
        peaks.append(n * max(2 * d + f, d + 2 * f, 3 * d + f))
    return max(peaks) * s


@dataclass(frozen=True)
class MemoryFit:
    """``peak = fixed + a * activations + b * n_layer + c`` (bytes) for one precision.

    Attributes:
        a: scale of the counted activations.
        b: bytes each layer adds; c: bytes every model adds.
        n: calibration models the fit used; seed: the seed that drew them.
        rmse_pct, max_abs_pct: relative residuals on them (in-sample).
        raw_rmse_pct: the same for ``fixed + activations`` alone.
    """

    a: float
    b: float
    c: float
    n: int
    seed: int
    rmse_pct: float
    max_abs_pct: float
    raw_rmse_pct: float

    def apply(self, fixed_bytes: float, act_bytes: float, n_layer: int) -> float:
        return fixed_bytes + self.a * act_bytes + self.b * n_layer + self.c

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> "MemoryFit":
        try:
            fit_ = cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as e:
            raise ConfigError(f"{where}: memory fit is malformed ({e}); rebuild the table") from None
        if not all(isinstance(v, (int, float)) and np.isfinite(v)
                   for v in (fit_.a, fit_.b, fit_.c)):
            raise ConfigError(f"{where}: memory fit a={fit_.a!r} b={fit_.b!r} c={fit_.c!r} is "
                              "not finite; rebuild the table")
        return fit_


def fit(fixed_bytes: Sequence[float], act_bytes: Sequence[float], n_layer: Sequence[int],
        measured_bytes: Sequence[float], seed: int) -> MemoryFit:
    """Fit ``a``, ``b`` and ``c`` by least squares on relative error.

    Args:
        fixed_bytes: per model, measured block weights plus the KV cache.
        act_bytes: per model, :func:`activation_bytes`.
        n_layer: per model, its depth.
        measured_bytes: per model, the measured peak.
        seed: the seed that drew the models.

    Raises:
        ValueError: fewer than 4 models.
    """
    W, A, L, m = (np.asarray(v, dtype=float) for v in (fixed_bytes, act_bytes, n_layer,
                                                       measured_bytes))
    if m.size < 4:
        raise ValueError(f"a memory fit needs at least 4 models, got {m.size}")
    w = 1.0 / m
    cols = {"a": A, "b": L, "c": np.ones_like(A)}
    # With activations too small against the rest to tell apart, or one depth only,
    # drop the terms the data cannot pin down (activations are then counted as they are).
    for names in (("a", "b", "c"), ("a", "c"), ("b", "c"), ("c",)):
        if "b" in names and np.ptp(L) == 0:
            continue
        X = np.stack([cols[k] for k in names], axis=1) * w[:, None]
        target = (m - W - (0 if "a" in names else A)) * w
        got = dict(zip(names, np.linalg.lstsq(X, target, rcond=None)[0]))
        if got.get("a", 1.0) > 0:
            break
    a, b, c = got.get("a", 1.0), got.get("b", 0.0), got["c"]
    rel = (W + a * A + b * L + c) / m - 1
    raw = (W + A) / m - 1
    return MemoryFit(a=float(a), b=float(b), c=float(c), n=int(m.size), seed=int(seed),
                     rmse_pct=float(100 * np.sqrt(np.mean(rel**2))),
                     max_abs_pct=float(100 * np.max(np.abs(rel))),
                     raw_rmse_pct=float(100 * np.sqrt(np.mean(raw**2))))


class MemoryModel:
    """The peak-memory predictor of a decode table (its JSON's ``memory`` section).

    Attributes:
        batch_size, prompt_len, context: the request it predicts.
        blocks: measured weight bytes per block.
        fits: the :class:`MemoryFit` of each precision.
    """

    def __init__(self, blocks: Mapping[BlockKey, int], fits: Mapping[str, MemoryFit],
                 batch_size: int, prompt_len: int, context: int, where: str = "memory"):
        self.blocks, self.fits = dict(blocks), dict(fits)
        self.batch_size, self.prompt_len, self.context = batch_size, prompt_len, context
        self.where = where

    def to_meta(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "prompt_len": self.prompt_len,
                "context": self.context,
                # [kind, d_model, n_head, d_ff, precision, bytes(, n_kv_head when grouped)]
                "blocks": [[k.kind, k.d_model, k.n_head, k.d_ff, k.precision, int(b)]
                           + ([k.n_kv_head] if k.n_kv_head != k.n_head else [])
                           for k, b in sorted(self.blocks.items())],
                "fit": {p: f.to_dict() for p, f in self.fits.items()}}

    @classmethod
    def from_meta(cls, d: Any, where: str) -> "MemoryModel":
        """Read the JSON form; ``where`` names the file in errors."""
        try:
            blocks = {BlockKey(str(k), int(dm), int(h), int(f), str(p),
                               int(kv[0]) if kv else 0): int(b)
                      for k, dm, h, f, p, b, *kv in d["blocks"]}
            fits = {str(p): MemoryFit.from_dict(f, where) for p, f in d["fit"].items()}
            return cls(blocks, fits, int(d["batch_size"]), int(d["prompt_len"]),
                       int(d["context"]), where)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: 'memory' section is malformed ({e}); rebuild the "
                              "table") from None

    def fixed_bytes(self, arch: ArchConfig) -> int:
        """Measured block weights plus the KV cache of ``arch``."""
        try:
            weights = sum(self.blocks[k] for k in arch_blocks(arch))
        except KeyError as e:
            raise ConfigError(f"{self.where}: no measured weight bytes for "
                              f"{e.args[0].describe()} ({arch.describe()})") from None
        return weights + cache_bytes(arch, self.batch_size, self.context)

    def peak_bytes(self, arch: ArchConfig) -> float:
        """Predicted peak bytes of one request of ``arch`` (see the module's docstring)."""
        f = self.fits.get(arch.precision)
        if f is None:
            raise ConfigError(f"{self.where}: no memory fit for precision {arch.precision!r}; "
                              f"it has {sorted(self.fits)}")
        return f.apply(self.fixed_bytes(arch),
                       activation_bytes(arch, self.batch_size, self.prompt_len), arch.n_layer)
