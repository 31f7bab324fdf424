"""Shared fixtures: a tiny search space and corpus so a supernet trains in seconds."""
from __future__ import annotations

import pytest
import torch

from nas.supernet.data import load_corpus
from nas.space import SearchSpace

MICRO = {
    "name": "micro", "vocab_size": 65, "block_size": 16, "head_dim": 8,
    "n_layer": {"min": 1, "max": 2}, "d_model": [16, 32], "n_head": [1, 2],
    "d_ff": [32, 64], "precision": {"cpu": ["fp32", "bf16", "int8"], "cuda": ["fp32", "bf16"]},
}

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    # The test models are tiny: a second thread buys nothing, and on a shared CPU an
    # OpenMP thread left waiting for a busy core makes every small op stall.
    torch.set_num_threads(1)


@pytest.fixture
def micro_space() -> SearchSpace:
    return SearchSpace.from_dict(MICRO)


@pytest.fixture
def micro_corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT * 40, encoding="utf-8")
    return load_corpus(p, block_size=MICRO["block_size"], vocab_size=MICRO["vocab_size"])
