"""The bytes a decode step must read: every weight once and the whole KV cache."""
from __future__ import annotations

import pytest

from nas.latency.floor import floor_line, step_bytes
from nas.model import GPT
from nas.space import load_space


@pytest.mark.parametrize("kv", [None, [4, 0, 1]])
def test_step_bytes_count_the_model_and_its_cache(kv):
    space = load_space("tiny_gqa")
    heads = [4, 4, 4] if kv is None else [4, 0, 4]
    arch = space.make(3, 64, heads, [128, 256, 128], "fp32", kv)
    model = GPT(arch)
    cache = model.make_cache(batch_size=3, max_len=32)
    # Weights once, less the position table but the one row a step reads.
    weights = sum(p.numel() for p in model.parameters()) - (arch.block_size - 1) * arch.d_model
    assert step_bytes(arch, 3, 32) == 4 * weights + cache.nbytes


def test_gpt2_small_at_batch_32_reads_mostly_its_cache():
    base = load_space("gpt2s").baseline_arch("bf16")
    total = step_bytes(base, 32, 1024)
    assert 1.39e9 < total < 1.42e9  # 195 MB of weights, 1.21 GB of keys and values
    line = floor_line({"arch": base.describe(), "measured_ms": 0.5, "floor_ms": 0.33,
                       "bytes": total, "bandwidth_gbps": 4300.0, "ratio": 1.52})
    assert "1.52x the floor" in line and "4300 GB/s" in line
