"""The elastic GPT: standalone sub-networks match the supernet; precisions run."""
from __future__ import annotations

import random

import pytest
import torch

from nas.model import GPT, Supernet, build_model
from nas.space import load_space, sample


@pytest.fixture(scope="module")
def tiny():
    space = load_space("tiny")
    torch.manual_seed(0)
    return space, Supernet(space).eval()


def _idx(space, B=2, T=None):
    g = torch.Generator().manual_seed(0)
    return torch.randint(space.vocab_size, (B, T or space.block_size), generator=g)


@pytest.mark.parametrize("seed", range(4))
def test_standalone_equals_supernet_slice(tiny, seed):
    space, supernet = tiny
    arch = sample(space, random.Random(seed), precision="fp32")
    idx = _idx(space)
    with torch.no_grad():
        expected = supernet(idx, arch)
        got = build_model(arch, supernet)(idx)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["largest", "smallest"])
def test_extremes_equal_supernet_slice(tiny, which):
    space, supernet = tiny
    arch = getattr(space, which)()
    idx = _idx(space)
    with torch.no_grad():
        torch.testing.assert_close(build_model(arch, supernet)(idx), supernet(idx, arch))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_precisions_give_finite_logits(tiny, precision):
    space, supernet = tiny
    arch = sample(space, 11, precision=precision)
    model = build_model(arch, supernet)
    idx = _idx(space, B=3, T=10)
    with torch.no_grad():
        out = model(idx)
    assert out.shape == (3, 10, space.vocab_size)
    assert torch.isfinite(out.float()).all()
    if precision == "bf16":
        assert out.dtype == torch.bfloat16


def test_shapes_and_full_forward(tiny):
    space, _ = tiny
    arch = space.smallest()
    model = GPT(arch)
    idx = _idx(space, B=4, T=7)
    assert model(idx).shape == (4, 7, space.vocab_size)
    assert model(idx, arch).shape == (4, 7, space.vocab_size)


def test_too_deep_arch_is_refused(tiny):
    space, _ = tiny
    small = GPT(space.smallest())
    with pytest.raises(ValueError, match="layers"):
        small(_idx(space), space.largest())


def test_param_count_by_hand():
    from nas.space import SearchSpace

    from conftest import MICRO

    arch = SearchSpace.from_dict(MICRO).smallest()  # d 16, one layer, 1 head of 8, ffn 32
    embeddings = 65 * 16 + 16 * 16 + 2 * 16  # tokens, positions, final LayerNorm (head tied)
    attention = 2 * 16 + 3 * (16 * 8 + 8) + (8 * 16 + 16)
    ffn = 2 * 16 + (16 * 32 + 32) + (32 * 16 + 16)
    assert arch.n_params == embeddings + attention + ffn == 3016
    assert GPT(arch).num_params() == 3016


@pytest.mark.parametrize("name", ["tiny", "shakespeare"])
def test_param_count_matches_the_model(name):
    space = load_space(name)
    rng = random.Random(0)
    for arch in [space.largest(), space.smallest()] + [sample(space, rng) for _ in range(3)]:
        # GPT, not build_model: int8 packs its Linear weights out of parameters().
        assert arch.n_params == GPT(arch).num_params(), arch.describe()


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-5), ("bf16", 5e-2)])
def test_prefill_then_decode_equals_the_full_forward(tiny, precision, tol):
    space, supernet = tiny
    arch = sample(space, 5, precision=precision)
    model = build_model(arch, supernet)
    idx = _idx(space, B=2, T=20)
    with torch.no_grad():
        cache = model.make_cache(batch_size=2, max_len=24)  # a static cache longer than needed
        steps = [model.prefill(idx[:, :12], cache)]
        assert int(cache.pos) == 12
        for t in range(12, 20):
            steps.append(model.decode(idx[:, t:t + 1], cache))
            cache.advance()
        full = model(idx)
    torch.testing.assert_close(torch.cat(steps, 1).float(), full.float(), rtol=tol, atol=tol)
    assert cache.nbytes == 2 * 2 * 24 * sum(arch.n_head) * arch.head_dim * (2 if precision == "bf16" else 4)


def test_a_cache_longer_than_the_context_is_refused(tiny):
    space, _ = tiny
    with pytest.raises(ValueError, match="exceeds the context"):
        GPT(space.smallest()).make_cache(1, space.block_size + 1)


# --- grouped-query attention and layers without attention ---------------------------
GQA_SPACE = {"name": "gqa", "vocab_size": 50, "block_size": 32, "head_dim": 8,
             "n_layer": {"min": 1, "max": 4}, "d_model": [32, 48], "n_head": [2, 4, 6],
             "n_kv_head": [1, 2], "drop_attention": True, "d_ff": [32, 64],
             "precision": {"cpu": ["fp32", "bf16"]}}


@pytest.fixture(scope="module")
def gqa():
    space = load_space(GQA_SPACE)
    torch.manual_seed(0)
    return space, Supernet(space).eval()


def _gqa_archs(space, n=40):
    """Random architectures, kept only where some layer shares key/value heads or has no
    attention (so every one exercises what is new)."""
    rng = random.Random(1)
    out = []
    while len(out) < n:
        a = sample(space, rng, precision="fp32")
        if a.gqa:
            out.append(a)
    return out


def test_gqa_archs_cover_both_variants(gqa):
    space, _ = gqa
    archs = _gqa_archs(space)
    assert any(0 in a.n_head for a in archs)
    assert any(0 < g < h for a in archs for h, g in zip(a.n_head, a.n_kv_head))


@pytest.mark.parametrize("i", range(0, 40, 5))
def test_gqa_standalone_equals_supernet_slice(gqa, i):
    space, supernet = gqa
    arch = _gqa_archs(space)[i]
    idx = _idx(space)
    with torch.no_grad():
        expected = supernet(idx, arch)
        model = build_model(arch, supernet)
        got = model(idx)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert model.num_params() == arch.n_params


@pytest.mark.parametrize("i", range(1, 40, 8))
def test_gqa_decode_equals_the_full_forward(gqa, i):
    space, supernet = gqa
    arch = _gqa_archs(space)[i]
    model = build_model(arch, supernet)
    idx = _idx(space, B=2, T=16)
    with torch.no_grad():
        cache = model.make_cache(batch_size=2, max_len=20)
        steps = [model.prefill(idx[:, :9], cache)]
        for t in range(9, 16):
            steps.append(model.decode(idx[:, t:t + 1], cache))
            cache.advance()
        full = model(idx)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)
    # the cache holds key/value heads only, none for a layer without attention
    assert cache.nbytes == 2 * 20 * arch.kv_bytes_per_token(4)
    assert [k.shape[1] for k in cache.k] == list(arch.n_kv_head)


def test_a_grouped_layer_differs_from_full_attention(gqa):
    """The slice really drops key/value heads: sharing one changes the logits."""
    space, supernet = gqa
    full = space.make(2, 48, [6, 6], [64, 64])
    grouped = space.make(2, 48, [6, 6], [64, 64], n_kv_head=[1, 6])
    none = space.make(2, 48, [0, 6], [64, 64], n_kv_head=[0, 6])
    idx = _idx(space)
    with torch.no_grad():
        outs = [supernet(idx, a) for a in (full, grouped, none)]
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    assert none.n_params < grouped.n_params < full.n_params
