"""What a decode table times: one generation step, and its blocks, against a static KV cache.

A generation step is what a server repeats for every new token: ``GPT.decode`` of one
token per sequence at position ``cache.pos``, the greedy choice of the next token
(written into the step's static input), and ``pos`` advanced (:func:`step`). Because the
cache is static and every step attends over all its ``context`` slots (the ones not yet
written masked out), a step costs the same at every position; so a timed callable runs
``STEPS`` steps from ``context - STEPS`` and then rewinds ``pos``, and the time of one
call is divided by ``STEPS`` (the rewind, one tiny kernel, is shared by all of them).

Blocks are timed the same way as in ``blocks.py``, on one token: the Attention block
runs ``Attention.decode`` against a full cache of ``context`` slots of its own. A decode
step moves little but weights and keys, layer after layer, each read once; a block
called back to back on the same tensors would find them in the GPU's L2 cache (50 MB on
an H100, enough for a whole block at batch 16) and time faster than it runs in a model.
So each call of a timed block uses the next of ``copies`` independent instances
(weights, cache and input), as the layers of a model are.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch

from nas.latency.prefill import fused_block, make_block, standalone
from nas.latency.spec import BlockKey
from nas.model import DTYPES, GPT, Attention, KVCache, apply_precision

if TYPE_CHECKING:
    from nas.space import ArchConfig

STEPS = 8  # generation steps per timed call


def step(model: GPT, cache: KVCache, idx: torch.Tensor) -> torch.Tensor:
    """One generation step: decode ``idx`` ``(B, 1)``, write the greedy next token into it.

    Returns:
        The logits ``(B, 1, vocab)``.
    """
    logits = model.decode(idx, cache)
    idx.copy_(logits[:, -1].argmax(-1, keepdim=True))
    cache.advance()
    return logits


def make_decode_step(arch: ArchConfig, *, batch_size: int, context: int, device: str,
                     seed: int = 0, fused: bool = False,
                     serve: Callable[[Any], Any] | None = None) -> Callable[[], Any]:
    """``STEPS`` generation steps of ``arch``'s standalone model at ``context``.

    Args:
        arch: the architecture, in its precision.
        batch_size: sequences decoded together.
        context: the KV cache's length (``<= arch.block_size``); every step attends over it.
        device: ``"cpu"`` or ``"cuda"`` (int8 stays on the CPU).
        seed: seeds the weights, the cache contents and the tokens.
        fused: served by the fused runtime (``nas.fused``).
        serve: another runtime: takes the standalone model, returns what serves it
            (with ``decode`` and ``make_cache`` as ``GPT`` has them).

    Returns:
        A no-argument callable running ``STEPS`` steps, then rewinding ``cache.pos``.
    """
    if not STEPS <= context <= arch.block_size:
        raise ValueError(f"context {context} must be between {STEPS} and the context "
                         f"{arch.block_size} of {arch.describe()}")
    model, on = standalone(arch, device, seed, fused)
    if serve is not None:
        model = serve(model)
    cache = model.make_cache(batch_size, context)
    _fill_random(cache.k + cache.v, on, seed)  # keys and values as a prompt would leave them
    g = torch.Generator().manual_seed(seed)
    start = context - STEPS
    cache.pos.fill_(start)
    idx = torch.randint(0, arch.vocab_size, (batch_size, 1), generator=g).to(on)  # (B, 1)

    def run() -> None:
        for _ in range(STEPS):
            step(model, cache, idx)
        cache.pos.fill_(start)

    return run


def make_decode_block(key: BlockKey, *, vocab_size: int, block_size: int, head_dim: int,
                      batch_size: int, context: int, device: str, seed: int = 0,
                      copies: int = 1, fused: bool = False) -> Callable[[], Any]:
    """The block ``key`` on one token per sequence, as inside a decode step.

    Args:
        key: which block.
        vocab_size, block_size, head_dim: the space's fixed sizes.
        batch_size: sequences decoded together (input ``(batch_size, 1, d_model)``).
        context: the KV cache's length; the Attention block attends over all of it.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seeds the weights and the inputs.
        copies: independent instances the calls take in turn (see the module's docstring).
        fused: as the fused runtime runs it (``nas.fused``).

    Returns:
        A no-argument callable that runs the block once.
    """
    if key.kind != "attention":  # position-wise: a prefill block on a sequence of one
        runs = [make_block(key, vocab_size=vocab_size, block_size=block_size, head_dim=head_dim,
                           batch_size=batch_size, seq_len=1, device=device, seed=seed + i,
                           start=context - 1, fused=fused) for i in range(copies)]
    else:
        runs = [_attention(key, head_dim, batch_size, context, device, seed + i, fused)
                for i in range(copies)]
    turn = iter(range(2**62))

    def run() -> Any:
        return runs[next(turn) % copies]()

    return run


def _attention(key: BlockKey, head_dim: int, batch_size: int, context: int, device: str,
               seed: int, fused: bool = False) -> Callable[[], Any]:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mod = Attention(key.d_model, key.n_head, head_dim, n_kv_head=key.n_kv_head)
    on = "cpu" if key.precision == "int8" else device
    mod = apply_precision(mod.to(on), key.precision).eval()
    dtype = DTYPES.get(key.precision, torch.float32)  # int8 blocks take fp32 activations
    x = torch.randn(batch_size, 1, key.d_model, generator=g).to(on, dtype)  # (B, 1, C)
    k, v = (torch.empty(batch_size, key.n_kv_head, context, head_dim, device=on, dtype=dtype)
            for _ in range(2))  # (B, g, S, hd)
    _fill_random([k, v], on, seed)
    pos = torch.tensor(context - 1, device=on)
    mask = torch.ones(1, context, dtype=torch.bool, device=on)  # the last position sees all
    if fused:
        return fused_block(key, mod, x, cache=(k, v, pos, mask))

    def run() -> Any:
        return mod.decode(x, k, v, pos, mask)

    return run


def _fill_random(tensors: list[torch.Tensor], on: str, seed: int) -> None:
    """Random values, drawn on the device (a cache is too large to draw on the CPU
    per model), never zeros: kernels can run faster on zeros than on real data."""
    gpus = [torch.cuda.current_device()] if on == "cuda" else []
    with torch.random.fork_rng(devices=gpus):
        torch.manual_seed(seed)
        for t in tensors:
            t.normal_()
