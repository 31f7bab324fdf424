"""The accuracy scorer: inherited-weight validation loss, memoised."""
from __future__ import annotations

import random

import pytest
import torch

from nas.model import Supernet
from nas.supernet.score import AccuracyScorer
from nas.space import sample


@pytest.fixture
def scorer(micro_space, micro_corpus):
    torch.manual_seed(0)
    return AccuracyScorer(Supernet(micro_space), micro_corpus, n_batches=2, batch_size=4)


def test_memoised_by_arch_id(scorer, micro_space):
    arch = micro_space.largest()
    first = scorer(arch)
    assert scorer(arch) == first
    assert scorer.n_evaluated == 1 and scorer.hits == 1
    assert scorer.cache == {arch.arch_id: first}


def test_deterministic_and_leaves_global_rng_alone(scorer, micro_space, micro_corpus):
    arch = sample(micro_space, 4)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = scorer(arch)
    assert torch.equal(torch.get_rng_state(), state)
    fresh = AccuracyScorer(scorer.supernet, micro_corpus, n_batches=2, batch_size=4)
    assert fresh(arch) == a


def test_different_archs_differ(scorer, micro_space):
    rng = random.Random(0)
    archs = {micro_space.largest(), micro_space.smallest()}
    archs |= {sample(micro_space, rng, precision="fp32") for _ in range(6)}
    losses = [scorer(a) for a in archs]
    assert len(set(losses)) == len(archs)
    assert all(3.0 < x < 6.0 for x in losses)  # an untrained model is near log(65) = 4.17


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_precisions_are_scored_and_close_to_fp32(scorer, micro_space, precision):
    fp32 = scorer(micro_space.largest("fp32"))
    low = scorer(micro_space.largest(precision))
    assert low != fp32  # the rounding is really applied
    assert abs(low - fp32) < 0.1
    assert scorer.n_evaluated == 2
