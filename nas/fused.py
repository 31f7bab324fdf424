"""A fused serving runtime for a standalone model: fewer, larger kernels. Imports only torch.

A fast server does not run a model module by module. It concatenates the query, key and
value projections into one matrix product, lets a compiler fuse the LayerNorms, biases,
GELUs and residual additions into the kernels around them, writes the new token's keys
and values straight into a static cache, and replays every generation step as one CUDA
graph (gpt-fast does this with ``torch.compile``). :class:`FusedGPT` is that runtime for
a :class:`nas.model.GPT`: the same weights, the same function, and the blocks the
latency tables time are its functions (:func:`attention`, :func:`ffn`, :func:`embed`,
:func:`head`), so a table's blocks are exactly the kernels of a fused model.

Each block is a plain function of tensors, compiled once with dynamic shapes
(:func:`compiled`): every width, head count and batch size of a space reuses a handful
of compilations instead of one per shape. A function's integer head counts only size
views, so they are the only shapes the compiler specialises on.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

EPS = 1e-5  # nn.LayerNorm's default, as in nas.model


def attention(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w_qkv: torch.Tensor,
              b_qkv: torch.Tensor, w_o: torch.Tensor, b_o: torch.Tensor,
              k_cache: torch.Tensor | None, v_cache: torch.Tensor | None,
              pos: torch.Tensor | None, mask: torch.Tensor | None, h: int, g: int) -> torch.Tensor:
    """``x + proj(attn(ln(x)))`` with ``h`` query and ``g`` key/value heads.

    Three uses, by what is given: a forward pass over ``x`` ``(B, T, C)`` (no cache); a
    prefill (caches, no ``pos``: keys and values go to slots ``:T``); a decode step of one
    token (caches, ``pos`` and ``mask`` ``(1, S)``: its keys and values go to slot ``pos``
    and it attends over every slot the mask shows).
    """
    B, T, C = x.shape
    hd = w_o.shape[1] // h
    y = F.layer_norm(x, (C,), ln_w, ln_b, EPS)
    q, k, v = F.linear(y, w_qkv, b_qkv).split([h * hd, g * hd, g * hd], dim=-1)
    k = k.view(B, T, g, hd).transpose(1, 2)  # (B, g, T, hd)
    v = v.view(B, T, g, hd).transpose(1, 2)
    if pos is not None:  # decode: a group's h/g queries attend as queries of one head
        k_cache[:, :, pos.view(1)] = k  # index_put_, done in place inside a compiled graph
        v_cache[:, :, pos.view(1)] = v
        qg = q.view(B, g, h // g, hd)  # (B, g, h/g, hd)
        o = F.scaled_dot_product_attention(qg, k_cache, v_cache, attn_mask=mask)
        o = o.reshape(B, T, h * hd)
    else:
        if k_cache is not None:
            k_cache[:, :, :T] = k
            v_cache[:, :, :T] = v
        q = q.view(B, T, h, hd).transpose(1, 2)  # (B, h, T, hd)
        if g == h:  # a branch, not enable_gqa=(g != h): the compiler specialises on it
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        o = o.transpose(1, 2).reshape(B, T, h * hd)
    return x + F.linear(o, w_o, b_o)


def ffn(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w1: torch.Tensor,
        b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """``x + fc2(gelu(fc1(ln(x))))``."""
    y = F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, EPS)
    return x + F.linear(F.gelu(F.linear(y, w1, b1)), w2, b2)


def embed(idx: torch.Tensor, wte: torch.Tensor, wpe: torch.Tensor,
          start: torch.Tensor | None) -> torch.Tensor:
    """Token ids ``(B, T)`` at positions ``start ..`` (0 when None) -> ``(B, T, C)``."""
    pos = torch.arange(idx.shape[1], device=idx.device)
    if start is not None:
        pos = pos + start
    return wte[idx] + wpe[pos]


def head(x: torch.Tensor, ln_w: torch.Tensor, ln_b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Final LayerNorm and the (tied) output projection: ``(B, T, C)`` -> logits."""
    return F.linear(F.layer_norm(x, (x.shape[-1],), ln_w, ln_b, EPS), w)


BLOCKS: dict[str, Callable[..., torch.Tensor]] = {
    "attention": attention, "ffn": ffn, "embedding": embed, "head": head}
_COMPILED: dict[tuple[str, str | None], Callable[..., torch.Tensor]] = {}


# Variants of one function the compiler keeps: batch 1 or more, one key/value head or
# more, grouped or not, prefill or decode, each a specialisation of its own.
RECOMPILE_LIMIT = 64


def compiled(kind: str, mode: str | None = None) -> Callable[..., torch.Tensor]:
    """The block function ``kind``, compiled once per process with dynamic shapes
    (``mode``: torch.compile's, e.g. ``"max-autotune-no-cudagraphs"``)."""
    if (kind, mode) not in _COMPILED:
        import torch._dynamo.config as dynamo  # the documented knob for this limit
        dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
        _COMPILED[kind, mode] = torch.compile(BLOCKS[kind], dynamic=True, fullgraph=True,
                                              mode=mode)
    return _COMPILED[kind, mode]


def plain(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Plain tensors, not parameters: the compiler keeps a parameter's shape static (one
    compilation per width), and a plain tensor's dynamic."""
    return tuple(t.detach() for t in ts)


def attention_weights(mod: Any) -> tuple[torch.Tensor, ...]:
    """An ``nas.model.Attention``'s weights in :func:`attention`'s order, q/k/v concatenated."""
    w = torch.cat([mod.q.weight, mod.k.weight, mod.v.weight])
    b = torch.cat([mod.q.bias, mod.k.bias, mod.v.bias])
    return plain(mod.ln.weight, mod.ln.bias, w, b, mod.proj.weight, mod.proj.bias)


def ffn_weights(mod: Any) -> tuple[torch.Tensor, ...]:
    """An ``nas.model.FeedForward``'s weights in :func:`ffn`'s order."""
    return plain(mod.ln.weight, mod.ln.bias, mod.fc1.weight, mod.fc1.bias, mod.fc2.weight,
                  mod.fc2.bias)


class FusedGPT:
    """A standalone ``nas.model.GPT`` served by the fused block functions.

    Same weights, same logits, the same ``forward``/``prefill``/``decode`` calls and
    :class:`nas.model.KVCache`. The q/k/v matrices move into one: the model's own are
    released (so a server holds its weights once), and the model no longer runs alone.

    Args:
        model: the GPT, in its precision and on its device, in eval mode.
        compile: compile the block functions (False runs them eagerly: the same
            function, for checking it).
        mode: torch.compile's mode for them (None: its default).
    """

    def __init__(self, model: Any, compile: bool = True, mode: str | None = None):
        self.arch = model.arch
        self._model = model  # owns the caches' dtype and device, and the tied embedding
        self._fn = (lambda kind: compiled(kind, mode)) if compile else BLOCKS.__getitem__
        arch = model.arch
        with torch.no_grad():
            self._layers = []
            for i, (h, g) in enumerate(zip(arch.n_head, arch.n_kv_head)):
                attn = attention_weights(model.layers[2 * i]) if h else None
                if h:
                    for name in ("q", "k", "v"):  # now inside attn's one q/k/v matrix
                        setattr(model.layers[2 * i], name, None)
                self._layers.append((attn, h, g, ffn_weights(model.layers[2 * i + 1])))
        self._embed = plain(model.embed.wte.weight, model.embed.wpe.weight)
        self._head = plain(model.head.ln.weight, model.head.ln.bias, model.head.lm_head.weight)

    def make_cache(self, batch_size: int, max_len: int | None = None) -> Any:
        return self._model.make_cache(batch_size, max_len)

    def _run(self, idx: torch.Tensor, cache: Any, start: torch.Tensor | None,
             decode: bool) -> torch.Tensor:
        fn = self._fn
        mask = cache.mask() if decode else None
        x = fn("embedding")(idx, *self._embed, start)
        for i, (attn, h, g, ff) in enumerate(self._layers):
            if attn is not None:
                k, v = (cache.k[i], cache.v[i]) if cache is not None else (None, None)
                x = fn("attention")(x, *attn, k, v, start if decode else None, mask, h, g)
            x = fn("ffn")(x, *ff)
        return fn("head")(x, *self._head)

    @torch.no_grad()
    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, T)`` -> logits ``(B, T, vocab)``, as ``GPT.forward``."""
        return self._run(idx, None, None, decode=False)

    @torch.no_grad()
    def prefill(self, idx: torch.Tensor, cache: Any) -> torch.Tensor:
        """As ``GPT.prefill``: fills the cache with the prompt, ``pos = T``."""
        out = self._run(idx, cache, None, decode=False)
        cache.pos.fill_(idx.shape[1])
        return out

    @torch.no_grad()
    def decode(self, idx: torch.Tensor, cache: Any) -> torch.Tensor:
        """As ``GPT.decode``: one token per sequence at ``cache.pos``; the caller advances."""
        return self._run(idx, cache, cache.pos, decode=True)
