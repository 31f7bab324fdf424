"""Session fixtures for the search tests (``pytest_plugins = ["search_support"]``): the
``tiny`` space, its committed CPU latency table, a supernet trained for a few steps and
a finished study, so a whole search runs on a CPU in seconds."""
from __future__ import annotations

from pathlib import Path

import pytest

from nas.space import load_space
from search_helpers import ROOT, TABLE, FakeServing, budget_between, search_in_process


@pytest.fixture(scope="session")
def tiny_space():
    return load_space("tiny")


@pytest.fixture(scope="session")
def tiny_table(tiny_space):
    from nas.latency import LatencyTable

    return LatencyTable.load(ROOT / TABLE, space=tiny_space, device="cpu")


@pytest.fixture(scope="session")
def tiny_supernet(tmp_path_factory, tiny_space) -> Path:
    """A supernet of the tiny space after three training steps."""
    from nas.supernet.data import load_corpus
    from nas.train import TrainConfig, train_supernet

    corpus = load_corpus(block_size=tiny_space.block_size, vocab_size=tiny_space.vocab_size)
    cfg = TrainConfig(steps=3, batch_size=4, eval_every=0, eval_batches=1, device="cpu")
    return train_supernet(tiny_space, corpus, cfg, tmp_path_factory.mktemp("supernet"),
                          progress=False)


@pytest.fixture(scope="session")
def tiny_scorer_factory(tiny_space, tiny_supernet):
    """A fresh AccuracyScorer (its own memo) on the tiny supernet, one batch of four windows."""
    from nas.supernet.data import load_corpus
    from nas.supernet.score import AccuracyScorer
    from nas.train import load_supernet

    net = load_supernet(tiny_supernet, tiny_space)
    corpus = load_corpus(block_size=tiny_space.block_size, vocab_size=tiny_space.vocab_size)
    return lambda: AccuracyScorer(net, corpus, n_batches=1, batch_size=4)


@pytest.fixture(scope="session")
def finished_study(tmp_path_factory, tiny_space, tiny_table, tiny_scorer_factory):
    """A 16-trial study with a budget, in its own SQLite file: (url, name, budget_ms)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('study')}/nas.db"
    budget = budget_between(tiny_table, tiny_space, 0.4)
    search_in_process(tiny_space, tiny_table, tiny_scorer_factory(), url, "done", 16, budget)
    return url, "done", budget


@pytest.fixture(scope="session")
def three_objective_study(tmp_path_factory, tiny_space, tiny_table, tiny_scorer_factory):
    """A 16-trial study minimising loss, decode latency and peak memory (made up by
    ``FakeServing``), with a budget on memory only: (url, name, memory budget, serving)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('three')}/nas.db"
    serving = FakeServing(tiny_table)
    budget = round(0.3 * serving.peak_memory_mb(tiny_space.largest("fp32")), 3)
    search_in_process(tiny_space, tiny_table, tiny_scorer_factory(), url, "three", 16, None,
                      objectives=("val_loss", "decode_ms", "peak_mem_mb"),
                      budgets={"peak_mem_mb": budget}, serving=serving)
    return url, "three", budget, serving
