"""What a prefill table times, from the real modules of ``nas.model``.

A block is exactly a module an architecture is made of (``Embedding``, ``Attention``,
``FeedForward``, ``Head``), cast by ``apply_precision`` and fed an input of the shape and
dtype it gets inside the model; a model is ``build_model(arch)``, fed token ids. Which
blocks exist is in ``spec.py``; a decode table times the same blocks on one token per
sequence, and a generation step instead of a forward pass (``decode.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from nas import fused as fz
from nas.latency.spec import KINDS, BlockKey
from nas.model import DTYPES, Attention, Embedding, FeedForward, Head, apply_precision, build_model

if TYPE_CHECKING:
    from nas.space import ArchConfig


def make_block(key: BlockKey, *, vocab_size: int, block_size: int, head_dim: int,
               batch_size: int, seq_len: int, device: str, seed: int = 0,
               start: int | None = None, fused: bool = False) -> Callable[[], Any]:
    """The block ``key`` on ``device`` in its precision, bound to an input.

    Args:
        key: which block.
        vocab_size, block_size, head_dim: the space's fixed sizes.
        batch_size, seq_len: the workload (input is ``(batch_size, seq_len, d_model)``).
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the weights and the input.
        start: the embedding's first position, as a tensor (as in a decode step).
        fused: run the block as the fused runtime does (``nas.fused``, compiled).

    Returns:
        A no-argument callable that runs the block once.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # module init draws from the global RNG: leave it be
        torch.manual_seed(seed)
        mod = module_of(key, vocab_size, block_size, head_dim)
    on = "cpu" if key.precision == "int8" else device  # dynamic int8 runs on the CPU only
    mod = apply_precision(mod.to(on), key.precision).eval()
    if key.kind == "embedding":
        x = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g).to(on)  # (B, T)
        kw = {} if start is None else {"start": torch.tensor(start, device=on)}
    else:
        dtype = DTYPES.get(key.precision, torch.float32)  # int8 blocks take fp32 activations
        x = torch.randn(batch_size, seq_len, key.d_model, generator=g).to(on, dtype)  # (B, T, C)
        kw = {}
    if fused and key.kind != "layernorm":  # LayerNorm is timed for inspection only
        return fused_block(key, mod, x, kw.get("start"))

    def run() -> Any:
        return mod(x, **kw)

    return run


def fused_block(key: BlockKey, mod: torch.nn.Module, x: torch.Tensor,
                start: torch.Tensor | None = None, cache: tuple[torch.Tensor, ...] = (),
                ) -> Callable[[], Any]:
    """The module ``mod`` of block ``key`` as the fused runtime runs it, bound to ``x``.

    ``cache``: ``(k, v, pos, mask)`` for an attention block of a decode step.
    """
    fn = fz.compiled(key.kind)
    with torch.no_grad():
        if key.kind == "embedding":
            args: tuple[Any, ...] = (x, *fz.plain(mod.wte.weight, mod.wpe.weight), start)
        elif key.kind == "attention":
            args = (x, *fz.attention_weights(mod), *(cache or (None,) * 4), key.n_head,
                    key.n_kv_head)
        elif key.kind == "ffn":
            args = (x, *fz.ffn_weights(mod))
        else:
            args = (x, *fz.plain(mod.ln.weight, mod.ln.bias, mod.lm_head.weight))

    def run() -> Any:
        with torch.no_grad():
            return fn(*args)

    return run


def module_of(key: BlockKey, vocab_size: int, block_size: int, head_dim: int) -> torch.nn.Module:
    """The fp32 module of block ``key`` (``apply_precision`` casts it)."""
    d = key.d_model
    if key.kind == "embedding":
        mod: torch.nn.Module = Embedding(vocab_size, block_size, d)
    elif key.kind == "attention":
        mod = Attention(d, key.n_head, head_dim, n_kv_head=key.n_kv_head)
    elif key.kind == "ffn":
        mod = FeedForward(d, key.d_ff)
    elif key.kind == "head":
        mod = Head(d, vocab_size)
    elif key.kind == "layernorm":
        mod = torch.nn.LayerNorm(d)
    else:
        raise ValueError(f"unknown block kind {key.kind!r}; known: {KINDS}")
    return mod


def make_model(arch: ArchConfig, *, batch_size: int, seq_len: int, device: str,
               seed: int = 0, fused: bool = False) -> Callable[[], Any]:
    """The standalone model of ``arch`` (``nas.model.build_model``), bound to token ids.

    Args:
        arch: the architecture, in its precision.
        batch_size, seq_len: the workload (input is ``(batch_size, seq_len)`` token ids).
        device: ``"cpu"`` or ``"cuda"`` (int8 stays on the CPU).
        seed: seeds the weights and the input.
        fused: served by the fused runtime.

    Returns:
        A no-argument callable that runs one forward pass.
    """
    if seq_len > arch.block_size:
        raise ValueError(f"seq_len {seq_len} exceeds the context {arch.block_size} of "
                         f"{arch.describe()}")
    g = torch.Generator().manual_seed(seed)
    model, on = standalone(arch, device, seed, fused)
    idx = torch.randint(0, arch.vocab_size, (batch_size, seq_len), generator=g).to(on)  # (B, T)

    def run() -> Any:
        return model(idx)

    return run


def standalone(arch: ArchConfig, device: str, seed: int = 0, fused: bool = False) -> tuple[Any, str]:
    """``build_model(arch)`` seeded, and where it runs (int8 stays on the CPU); with
    ``fused``, served by the fused runtime (``nas.fused.FusedGPT``)."""
    on = "cpu" if arch.precision == "int8" else device
    gpus = [torch.cuda.current_device()] if on == "cuda" else []
    # Initialise the weights on the device itself: on the GPU that is much faster than
    # a CPU init (with the one timing thread) plus a copy, for the same model.
    with torch.random.fork_rng(devices=gpus), torch.device(on):
        torch.manual_seed(seed)
        model = build_model(arch, device=on)
    return (fz.FusedGPT(model) if fused else model), on
