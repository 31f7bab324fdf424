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
