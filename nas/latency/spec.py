"""What a latency table is measured for: the workload and the block keys. Pure Python.

A table times one *phase* of generation. ``prefill`` is a forward pass over a prompt
of ``seq_len`` tokens (the tables the search has used from the start); ``decode`` is
one generation step, one new token per sequence against a static KV cache of
``seq_len`` positions (its context), which every step attends over in full
(``nas.model.KVCache``): time per output token.

An architecture is ``Embedding``, then per layer ``Attention`` and ``FeedForward``, then
``Head`` (see ``nas.model``). A block's latency depends on its kind, its shape and the
precision, so a :class:`BlockKey` is ``(kind, d_model, n_head, d_ff, precision,
n_kv_head)`` with 0 where a field does not apply (an attention block's ``n_kv_head`` is its
key/value heads, as many as ``n_head`` unless grouped; a layer without attention runs no
attention block).

LayerNorm is timed on its own too (kind ``layernorm``), for inspection only: every
LayerNorm of the model already sits inside an Attention, FeedForward or Head block.
The model has no separate cast operation: token ids enter as int64, a bf16/fp16 model
runs in that dtype from the embedding on, and int8 dynamic quantisation quantises the
activations inside each quantised Linear, so every cast is inside the block timings.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Iterable

from nas.errors import ConfigError
from nas.space import DEVICES, PRECISIONS, ArchConfig, SearchSpace, sample

KINDS = ("embedding", "attention", "ffn", "head", "layernorm")
# eager: module by module; graph: the same kernels replayed as CUDA graphs; fused: the
# fused runtime (nas.fused: q/k/v in one product, compiled blocks) replayed as CUDA graphs.
MODES = ("eager", "graph", "fused")
GRAPH_MODES = ("graph", "fused")
PHASES = ("prefill", "decode")


@dataclass(frozen=True, order=True)
class BlockKey:
    """One row of a latency table: a block kind at one shape and precision."""

    kind: str
    d_model: int
    n_head: int = 0
    d_ff: int = 0
    precision: str = "fp32"
    n_kv_head: int = 0

    def __post_init__(self) -> None:
        if self.kind == "attention" and not self.n_kv_head:  # full multi-head attention
            object.__setattr__(self, "n_kv_head", self.n_head)

    def describe(self) -> str:
        """Short form, e.g. ``attention d128 h4 fp32`` (``h12 kv4``: grouped)."""
        heads = f" h{self.n_head}" + (f" kv{self.n_kv_head}" if self.n_kv_head != self.n_head else "")
        extra = {"attention": heads, "ffn": f" f{self.d_ff}"}.get(self.kind, "")
        return f"{self.kind} d{self.d_model}{extra} {self.precision}"


@dataclass(frozen=True)
class Workload:
    """Where and on what input a table is measured.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        batch_size: sequences per forward pass.
        seq_len: prefill: tokens per sequence; decode: the KV cache's context.
        precisions: the precisions measured.
        mode: ``"eager"``, ``"graph"`` (CUDA graphs; a table of its own) or ``"fused"``
            (the fused runtime of ``nas.fused`` as CUDA graphs; a table of its own).
        threads: CPU intra-op threads, fixed while measuring (CPU timings depend on it).
        phase: ``"prefill"`` or ``"decode"``.
        prompt_len: decode only: the prompt of the request whose peak memory a decode
            table models (default: half the context).
    """

    device: str
    batch_size: int
    seq_len: int
    precisions: tuple[str, ...]
    mode: str = "eager"
    threads: int = 1
    phase: str = "prefill"
    prompt_len: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precisions", tuple(self.precisions))
        if self.device not in DEVICES:
            raise ConfigError(f"device: {self.device!r} is not supported; allowed: {list(DEVICES)}")
        for key in ("batch_size", "seq_len", "threads"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{key}: {v!r} must be a positive integer")
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is unknown; allowed: {list(MODES)}")
        if self.mode in GRAPH_MODES and self.device != "cuda":
            raise ConfigError(f"mode: {self.mode!r} (CUDA graphs) needs device cuda; use "
                              "mode=eager on cpu")
        if not self.precisions:
            raise ConfigError("precisions: empty list; give at least one")
        for p in self.precisions:
            if p not in PRECISIONS[self.device]:
                raise ConfigError(f"precisions: {p!r} is not supported on {self.device}; "
                                  f"allowed: {list(PRECISIONS[self.device])}")
        if self.phase not in PHASES:
            raise ConfigError(f"phase: {self.phase!r} is unknown; allowed: {list(PHASES)}")
        if self.phase == "prefill" and self.prompt_len not in (None, self.seq_len):
            raise ConfigError(f"prompt_len: {self.prompt_len} given for a prefill table; its "
                              f"prompt is seq_len ({self.seq_len})")
        if self.phase == "decode":
            if self.prompt_len is None:
                object.__setattr__(self, "prompt_len", max(1, self.seq_len // 2))
            n = self.prompt_len
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < self.seq_len:
                raise ConfigError(f"prompt_len: {n!r} must be an integer from 1 to the context "
                                  f"minus one ({self.seq_len - 1}): a request generates into "
                                  "the rest of the cache")

    def to_dict(self) -> dict[str, Any]:
        d = {"device": self.device, "batch_size": self.batch_size, "seq_len": self.seq_len,
             "precisions": list(self.precisions), "mode": self.mode, "threads": self.threads,
             "phase": self.phase}
        if self.phase == "decode":
            d["prompt_len"] = self.prompt_len
        return d


def arch_blocks(arch: ArchConfig) -> list[BlockKey]:
    """The blocks ``arch`` runs, in order, one entry per occurrence."""
    p, d = arch.precision, arch.d_model
    keys = [BlockKey("embedding", d, precision=p)]
    for h, g, f in zip(arch.n_head, arch.n_kv_head, arch.d_ff):
        if h:  # a layer without attention runs its FFN alone
            keys.append(BlockKey("attention", d, n_head=h, precision=p, n_kv_head=g))
        keys.append(BlockKey("ffn", d, d_ff=f, precision=p))
    keys.append(BlockKey("head", d, precision=p))
    return keys


def space_blocks(space: SearchSpace, precisions: Iterable[str],
                 kinds: Iterable[str] = KINDS) -> list[BlockKey]:
    """Every block the space can produce in ``precisions``, sorted.

    Args:
        space: the search space.
        precisions: the precisions to cover.
        kinds: restrict to these block kinds (all by default).
    """
    kinds = set(kinds)
    keys: set[BlockKey] = set()
    for p in precisions:
        for d in space.d_model:
            for kind in ("embedding", "head", "layernorm"):
                keys.add(BlockKey(kind, d, precision=p))
            for h in space.n_head:
                if h * space.head_dim <= d:
                    for g in space.kv_choices(h):
                        keys.add(BlockKey("attention", d, n_head=h, precision=p, n_kv_head=g))
            for f in space.d_ff:
                keys.add(BlockKey("ffn", d, d_ff=f, precision=p))
    return sorted(k for k in keys if k.kind in kinds)


def sample_archs(space: SearchSpace, n: int, seed: int, device: str, precision: str,
                 exclude: Iterable[str] = ()) -> list[ArchConfig]:
    """``n`` distinct random architectures in ``precision``, drawn from their own seed.

    Args:
        space: the search space.
        n: how many.
        seed: seeds a private ``random.Random``.
        device: the device whose precision list the genome draws from.
        precision: the precision of every architecture.
        exclude: architecture ids to skip (e.g. the calibration set, so a
            validation set never contains an architecture a correction was fitted on).

    Raises:
        ConfigError: the space has fewer than ``n`` such architectures.
    """
    rng = random.Random(seed)
    skip, out, seen = set(exclude), [], set()
    for _ in range(200 * n + 1000):
        if len(out) == n:
            break
        a = sample(space, rng, device=device, precision=precision)
        if a.arch_id in skip or a.arch_id in seen:
            continue
        seen.add(a.arch_id)
        out.append(a)
    if len(out) < n:
        raise ConfigError(f"{space.name}: found only {len(out)} distinct architectures for "
                          f"n={n} (seed {seed}); ask for fewer")
    return out
