"""GPT-style decoder with elastic depth, width, heads and FFN. Imports only torch.

One class, :class:`GPT`, is both the standalone model of one architecture and, built
at the largest architecture of a space, the weight-sharing :class:`Supernet`. A
sub-network takes *leading slices* of every shared weight (HAT, Once-for-All): the
first ``d_model`` channels, the first ``n_head`` heads of q/k/v, the first ``d_ff``
FFN units and the first ``n_layer`` layers. Because the standalone model and the
supernet run the same code, a standalone model with copied weights gives the same
logits as the supernet with that architecture active.

Grouped-query attention takes the first ``n_kv_head`` key/value heads; query head ``j``
reads key/value head ``j // (n_head // n_kv_head)``. A layer whose ``n_head`` is 0 has no
attention: its residual stream passes straight to the FFN (the standalone model holds an
``nn.Identity`` there, so its parameter names still line up with the supernet's).

The model is a stack of the blocks the latency tables time: :class:`Embedding`,
``n_layer`` x (:class:`Attention`, :class:`FeedForward`), :class:`Head`.

Generation runs in two phases on a static :class:`KVCache`: ``prefill(idx, cache)`` runs
the prompt and stores its keys and values, then ``decode(idx, cache)`` runs one token at
position ``cache.pos`` against them. Every tensor of a decode step keeps its shape, so
the step can be captured once as a CUDA graph and replayed for every token.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from nas.space import ArchConfig, SearchSpace

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _linear(mod: nn.Module, x: torch.Tensor, n_out: int) -> torch.Tensor:
    """``mod(x)`` restricted to the first ``n_out`` outputs and ``x.shape[-1]`` inputs."""
    if n_out == mod.out_features and x.shape[-1] == mod.in_features:
        return mod(x)  # the full module: also works once quantised to int8
    b = mod.bias[:n_out] if mod.bias is not None else None
    return F.linear(x, mod.weight[:n_out, : x.shape[-1]], b)


def _layer_norm(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    C = x.shape[-1]
    return F.layer_norm(x, (C,), ln.weight[:C], ln.bias[:C], ln.eps)


class Embedding(nn.Module):
    """Token + position embedding."""

    def __init__(self, vocab_size: int, block_size: int, d_model: int, dropout: float = 0.0):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(block_size, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, idx: torch.Tensor, d_model: int | None = None,
                start: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids ``(B, T)`` at positions ``start .. start + T - 1`` (default 0)."""
        B, T = idx.shape
        d = d_model or self.wte.embedding_dim
        pos = torch.arange(T, device=idx.device)
        if start is not None:  # a tensor, so a captured decode step reads the position
            pos = pos + start
        x = self.wte.weight[:, :d][idx] + self.wpe.weight[:, :d][pos]  # (B, T, d)
        return self.drop(x)


class Attention(nn.Module):
    """Pre-norm causal self-attention with its residual: ``x + proj(attn(ln(x)))``.

    ``n_kv_head`` key/value heads (default ``n_head``) serve groups of query heads.
    """

    def __init__(self, d_model: int, n_head: int, head_dim: int, dropout: float = 0.0,
                 n_kv_head: int | None = None):
        super().__init__()
        self.n_head, self.head_dim, self.dropout = n_head, head_dim, dropout
        self.n_kv_head = n_kv_head or n_head
        inner, kv_inner = n_head * head_dim, self.n_kv_head * head_dim
        self.ln = nn.LayerNorm(d_model)
        # q, k and v as separate layers so the first h heads are a leading slice of each.
        self.q = nn.Linear(d_model, inner)
        self.k = nn.Linear(d_model, kv_inner)
        self.v = nn.Linear(d_model, kv_inner)
        self.proj = nn.Linear(inner, d_model)
        self.resid_drop = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor, h: int, g: int) -> tuple[torch.Tensor, ...]:
        B, T, _ = x.shape
        hd = self.head_dim
        y = _layer_norm(self.ln, x)
        q = _linear(self.q, y, h * hd).view(B, T, h, hd).transpose(1, 2)  # (B, h, T, hd)
        k, v = (_linear(m, y, g * hd).view(B, T, g, hd).transpose(1, 2)
                for m in (self.k, self.v))  # 2 x (B, g, T, hd)
        return q, k, v

    def _out(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, h, T, hd = y.shape
        y = y.transpose(1, 2).reshape(B, T, h * hd)  # (B, T, h*hd)
        return x + self.resid_drop(_linear(self.proj, y, x.shape[-1]))

    def forward(self, x: torch.Tensor, n_head: int | None = None,
                n_kv_head: int | None = None) -> torch.Tensor:
        h = n_head or self.n_head
        g = n_kv_head or (self.n_kv_head if n_head is None else min(h, self.n_kv_head))
        q, k, v = self._qkv(x, h, g)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=g != h)
        return self._out(x, y)

    def prefill(self, x: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor) -> torch.Tensor:
        """``forward`` over a prompt ``(B, T, C)``, storing its keys and values in slots ``:T``."""
        h, g = self.n_head, k_cache.shape[1]
        q, k, v = self._qkv(x, h, g)
        T = x.shape[1]
        k_cache[:, :, :T].copy_(k)
        v_cache[:, :, :T].copy_(v)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=g != h)
        return self._out(x, y)

    def decode(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
               pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """One token ``(B, 1, C)`` at position ``pos``, against the cache ``(B, h, S, hd)``.

        Its keys and values go to slot ``pos``; it attends over all ``S`` slots, those
        after ``pos`` masked out (``mask``: ``(1, S)``, True where a slot is seen), so the
        shapes, and the cost, are the same at every position. The cache ``(B, g, S, hd)``
        holds ``g`` key/value heads; the ``h // g`` query heads of a group attend as that
        many queries of one head, so the cache is read once and never repeated per head.
        """
        B, h, g = x.shape[0], self.n_head, k_cache.shape[1]
        q, k, v = self._qkv(x, h, g)  # (B, h, 1, hd), 2 x (B, g, 1, hd)
        k_cache.index_copy_(2, pos.view(1), k)
        v_cache.index_copy_(2, pos.view(1), v)
        q = q.reshape(B, g, h // g, self.head_dim)  # (B, g, h/g, hd): a group's queries
        y = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
        return self._out(x, y.reshape(B, h, 1, self.head_dim))


class FeedForward(nn.Module):
    """Pre-norm MLP with its residual: ``x + fc2(gelu(fc1(ln(x))))``."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.d_ff = d_ff
        self.ln = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, d_ff)
        self.fc2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, d_ff: int | None = None) -> torch.Tensor:
        C = x.shape[-1]
        y = F.gelu(_linear(self.fc1, _layer_norm(self.ln, x), d_ff or self.d_ff))  # (B, T, d_ff)
        return x + self.drop(_linear(self.fc2, y, C))


class Head(nn.Module):
    """Final LayerNorm and the output projection to the vocabulary."""

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.ln = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _linear(self.lm_head, _layer_norm(self.ln, x), self.lm_head.out_features)


class KVCache:
    """Static keys and values of every layer, preallocated for ``max_len`` positions.

    Attributes:
        k, v: per layer, ``(batch_size, n_kv_head_i, max_len, head_dim)``; a layer without
            attention holds 0 heads.
        pos: the next position to write, a 0-d tensor on the cache's device: a captured
            decode step reads it, so advancing it needs no new graph.
        max_len: the context the cache holds; every decode step attends over all of it.
    """

    def __init__(self, n_kv_head: Any, head_dim: int, batch_size: int, max_len: int,
                 dtype: torch.dtype, device: str | torch.device):
        self.k = [torch.zeros(batch_size, h, max_len, head_dim, dtype=dtype, device=device)
                  for h in n_kv_head]
        self.v = [torch.zeros_like(k) for k in self.k]
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.max_len = max_len
        self._slots = torch.arange(max_len, device=device)

    def mask(self) -> torch.Tensor:
        """``(1, max_len)``: True for the slots a token at ``pos`` attends to."""
        return (self._slots <= self.pos).view(1, -1)

    def advance(self, n: int = 1) -> None:
        self.pos.add_(n)

    @property
    def nbytes(self) -> int:
        """Bytes of the keys and values."""
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


class GPT(nn.Module):
    """Decoder for one architecture ``arch`` (an ``ArchConfig``, duck-typed).

    ``forward(idx, arch=None)`` runs the whole model, or, when ``arch`` is given, the
    sub-network ``arch`` on leading slices of these weights.
    """

    def __init__(self, arch: ArchConfig, dropout: float = 0.0):
        super().__init__()
        self.arch = arch
        self.embed = Embedding(arch.vocab_size, arch.block_size, arch.d_model, dropout)
        self.layers = nn.ModuleList()
        for h, g, f in zip(arch.n_head, arch.n_kv_head, arch.d_ff):
            self.layers.append(Attention(arch.d_model, h, arch.head_dim, dropout, g) if h
                               else nn.Identity())  # no attention: the FFN alone
            self.layers.append(FeedForward(arch.d_model, f, dropout))
        self.head = Head(arch.d_model, arch.vocab_size)
        self.head.lm_head.weight = self.embed.wte.weight  # weight tying, as in nanoGPT
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("proj.weight", "fc2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * arch.n_layer) ** 0.5)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, arch: ArchConfig = None) -> torch.Tensor:
        """Token ids ``(B, T)`` -> logits ``(B, T, vocab)``."""
        if arch is None:
            x = self.embed(idx)
            for layer in self.layers:
                x = layer(x)
            return self.head(x)
        if arch.n_layer > len(self.layers) // 2:
            raise ValueError(f"arch has {arch.n_layer} layers; this model has {len(self.layers) // 2}")
        x = self.embed(idx, arch.d_model)  # (B, T, d)
        for i in range(arch.n_layer):
            if arch.n_head[i]:
                x = self.layers[2 * i](x, arch.n_head[i], arch.n_kv_head[i])
            x = self.layers[2 * i + 1](x, arch.d_ff[i])
        return self.head(x)

    def make_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty :class:`KVCache` for this model (default length: its context)."""
        max_len = max_len or self.arch.block_size
        if max_len > self.arch.block_size:
            raise ValueError(f"max_len {max_len} exceeds the context {self.arch.block_size}")
        w = self.embed.wte.weight  # int8 models keep fp32 activations, and so fp32 keys
        return KVCache(self.arch.n_kv_head, self.arch.head_dim, batch_size, max_len, w.dtype,
                       w.device)

    def prefill(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The prompt ``(B, T)`` -> logits ``(B, T, vocab)``; fills the cache, ``pos = T``."""
        x = self.embed(idx)
        for i in range(len(self.layers) // 2):
            if self.arch.n_head[i]:
                x = self.layers[2 * i].prefill(x, cache.k[i], cache.v[i])
            x = self.layers[2 * i + 1](x)
        cache.pos.fill_(idx.shape[1])
        return self.head(x)

    def decode(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One token per sequence ``(B, 1)`` at ``cache.pos`` -> logits ``(B, 1, vocab)``.

        Writes the token's keys and values; the caller advances ``cache.pos``.
        """
        mask = cache.mask()
        x = self.embed(idx, start=cache.pos)
        for i in range(len(self.layers) // 2):
            if self.arch.n_head[i]:
                x = self.layers[2 * i].decode(x, cache.k[i], cache.v[i], cache.pos, mask)
            x = self.layers[2 * i + 1](x)
        return self.head(x)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Supernet(GPT):
    """Weight-sharing supernet: the GPT of ``space.largest()``; ``forward(idx, arch)``."""

    def __init__(self, space: SearchSpace, dropout: float = 0.0):
        super().__init__(space.largest(), dropout)
        self.space = space


def copy_slices(dst: nn.Module, src: nn.Module) -> None:
    """Copy into every tensor of ``dst`` the leading slice of the same tensor of ``src``."""
    src_state = src.state_dict()
    with torch.no_grad():
        for name, t in dst.state_dict().items():
            s = src_state[name]
            t.copy_(s[tuple(slice(0, n) for n in t.shape)])


def apply_precision(model: nn.Module, precision: str) -> nn.Module:
    """Cast to fp32/bf16/fp16, or quantise Linear layers to int8 (dynamic, CPU only)."""
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated but still the eager API
            warnings.simplefilter("ignore")
            return quantize_dynamic(model.float().cpu(), {nn.Linear}, dtype=torch.qint8)
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r}; allowed: {sorted(DTYPES) + ['int8']}")
    return model.to(DTYPES[precision])


def build_model(arch: ArchConfig, supernet: GPT | None = None, device: str | torch.device = "cpu",
                dropout: float = 0.0) -> nn.Module:
    """A standalone model of ``arch`` in ``arch.precision``, in eval mode.

    Args:
        arch: the architecture (``nas.space.ArchConfig``).
        supernet: when given, weights are inherited from its leading slices.
        device: where to put the model (int8 stays on the CPU).
        dropout: dropout of the new model (for training it alone).
    """
    model = GPT(arch, dropout)
    if supernet is not None:
        copy_slices(model, supernet)
    if arch.precision != "int8":
        model = model.to(device)
    return apply_precision(model, arch.precision).eval()
