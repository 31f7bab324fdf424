"""The fused serving runtime computes what the model computes, eagerly and compiled."""
from __future__ import annotations

import random

import pytest
import torch

from nas.fused import FusedGPT
from nas.model import Supernet, build_model
from nas.space import load_space, sample

SPACE = {"name": "gqa", "vocab_size": 50, "block_size": 32, "head_dim": 8,
         "n_layer": {"min": 2, "max": 4}, "d_model": [32, 48], "n_head": [2, 4, 6],
         "n_kv_head": [1, 2], "drop_attention": True, "d_ff": [32, 64],
         "precision": {"cpu": ["fp32"]}}


@pytest.fixture(scope="module")
def supernet():
    space = load_space(SPACE)
    torch.manual_seed(0)
    return space, Supernet(space).eval()


def _check(model, vocab: int, compile: bool) -> None:
    """forward, then prefill + decode step by step, all equal to the model's forward."""
    idx = torch.randint(vocab, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(idx)
        fused = FusedGPT(model, compile=compile)
        assert all(getattr(m, "q", None) is None for m in model.layers[::2])  # held once
        torch.testing.assert_close(fused(idx), full, rtol=1e-4, atol=1e-4)
        cache = fused.make_cache(2, 20)
        steps = [fused.prefill(idx[:, :9], cache)]
        for t in range(9, 16):
            steps.append(fused.decode(idx[:, t:t + 1], cache))
            cache.advance()
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_fused_functions_equal_the_model(supernet, seed):
    space, sup = supernet
    arch = sample(space, random.Random(seed))
    model = build_model(arch, sup)
    _check(model, space.vocab_size, compile=False)


@pytest.mark.slow
def test_compiled_fused_runtime_equals_the_model(supernet):
    space, sup = supernet
    arch = space.make(3, 48, [6, 0, 4], [64, 32, 64], n_kv_head=[2, 0, 4])
    model = build_model(arch, sup)
    _check(model, space.vocab_size, compile=True)


@pytest.mark.slow
def test_the_fused_blocks_a_table_times_compute_the_modules():
    """``nas.latency.prefill.fused_block``: each block kind, bound as a table times it
    (attention over a prompt and as a decode step against a cache), gives its module's
    output."""
    from nas.latency.prefill import fused_block, module_of
    from nas.latency.spec import BlockKey

    torch.manual_seed(0)
    B, T, S, hd, vocab, ctx = 2, 5, 12, 8, 50, 32
    keys = [BlockKey("attention", 48, n_head=6, n_kv_head=2), BlockKey("ffn", 48, d_ff=64),
            BlockKey("embedding", 48), BlockKey("head", 48)]
    for key in keys:
        mod = module_of(key, vocab, ctx, hd).eval()
        x = (torch.randint(vocab, (B, T)) if key.kind == "embedding"
             else torch.randn(B, T, key.d_model))
        start = torch.tensor(3) if key.kind == "embedding" else None
        with torch.no_grad():
            want = mod(x, start=start) if key.kind == "embedding" else mod(x)
            got = fused_block(key, mod, x, start)()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    key = keys[0]
    mod = module_of(key, vocab, ctx, hd).eval()
    x1 = torch.randn(B, 1, key.d_model)
    k, v = torch.randn(B, 2, S, hd), torch.randn(B, 2, S, hd)
    pos, mask = torch.tensor(S - 4), (torch.arange(S) <= S - 4).view(1, -1)
    with torch.no_grad():
        want = mod.decode(x1, k.clone(), v.clone(), pos, mask)
        kc, vc = k.clone(), v.clone()
        got = fused_block(key, mod, x1, cache=(kc, vc, pos, mask))()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert not torch.equal(kc[:, :, S - 4], k[:, :, S - 4])  # the new key went to slot pos


@pytest.mark.slow
def test_the_fused_builders_of_the_latency_tables_run():
    """What a fused table and its validation build (blocks on one token against a cache,
    a decode step, a forward pass) runs; on a GPU each is then replayed as a CUDA graph."""
    from nas.latency.decode import make_decode_block, make_decode_step
    from nas.latency.prefill import make_block, make_model
    from nas.latency.spec import BlockKey, arch_blocks

    space = load_space(SPACE)
    arch = space.make(3, 48, [6, 0, 4], [64, 32, 64], n_kv_head=[2, 0, 4])
    sizes = dict(vocab_size=space.vocab_size, block_size=space.block_size,
                 head_dim=space.head_dim, batch_size=2, device="cpu")
    for key in set(arch_blocks(arch)) | {BlockKey("layernorm", 48)}:
        assert torch.isfinite(make_decode_block(key, context=16, copies=2, fused=True,
                                                **sizes)()).all()
        assert torch.isfinite(make_block(key, seq_len=8, fused=True, **sizes)()).all()
    make_decode_step(arch, batch_size=2, context=16, device="cpu", fused=True)()
    assert make_model(arch, batch_size=2, seq_len=8, device="cpu", fused=True)().shape == (
        2, 8, space.vocab_size)
