"""Fixtures of the test suite: tiny spaces and corpora so a supernet trains in seconds,
the ``tiny`` space with its committed CPU table, a supernet and finished studies made
once a session, and a real PostgreSQL server on loopback (helpers in ``helpers.py``)."""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from nas.supernet.data import load_corpus
from nas.space import SearchSpace, load_space
from helpers import (ROOT, TABLE, FakeServing, free_port, has_user, run_as, budget_between,
                     search_in_process, server_bin)

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


@pytest.fixture(autouse=True, scope="session")
def hydra_schemas():
    """The typed schemas the commands store before composing (``nas.hydra_cli``): tests
    that compose ``conf/`` with Hydra's compose API need them too."""
    from nas.hydra_cli import register_schema
    for command in ("search", "train", "latency"):
        register_schema(command)


@pytest.fixture
def micro_space() -> SearchSpace:
    return SearchSpace.from_dict(MICRO)


@pytest.fixture
def micro_corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT * 40, encoding="utf-8")
    return load_corpus(p, block_size=MICRO["block_size"], vocab_size=MICRO["vocab_size"])


# --- the tiny space, its table, a supernet and finished studies (made once) ----------

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
    from nas.supernet.recipe import TrainConfig
    from nas.supernet.train import train_supernet

    corpus = load_corpus(block_size=tiny_space.block_size, vocab_size=tiny_space.vocab_size)
    cfg = TrainConfig(steps=3, batch_size=4, eval_every=0, eval_batches=1, device="cpu")
    return train_supernet(tiny_space, corpus, cfg, tmp_path_factory.mktemp("supernet"),
                          progress=False)


@pytest.fixture(scope="session")
def tiny_scorer_factory(tiny_space, tiny_supernet):
    """A fresh AccuracyScorer (its own memo) on the tiny supernet, one batch of four windows."""
    from nas.supernet.data import load_corpus
    from nas.supernet.score import AccuracyScorer
    from nas.supernet.train import load_supernet

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


# --- a real PostgreSQL server ---------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_url():
    """``postgresql+psycopg://nas@127.0.0.1:<port>/nas`` on a fresh server."""
    try:
        import psycopg  # noqa: F401
    except ImportError:  # part of the dev extra: `make install` brings it
        pytest.fail("the PostgreSQL driver is missing: pip install -e '.[dev]' (or '.[postgres]')")
    bin_dir = server_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    user = None
    if os.geteuid() == 0:  # initdb refuses root
        user = next((u for u in ("postgres", "nobody") if has_user(u)), None)
        if user is None:
            pytest.fail("running as root and neither a 'postgres' nor a 'nobody' user exists")
    top = Path(tempfile.mkdtemp(prefix="nas-pg-"))
    data = top / "data"
    if user is not None:
        os.chown(top, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
    r = run_as(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", "nas", "--auth=trust",
                       "--no-sync", "-E", "UTF8", "--locale=C"])
    assert r.returncode == 0, r.stdout + r.stderr
    port = None
    for _ in range(5):  # a port taken between probing it and the server binding it: retry
        port = free_port()
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={top} "
                "-c fsync=off -c max_connections=100")
        r = run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(top / "log"),
                           "-o", opts, "-w", "-t", "60", "start"])
        if r.returncode == 0:
            break
    assert r.returncode == 0, r.stdout + r.stderr + (top / "log").read_text()
    try:
        r = run_as(None, [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                           "-U", "nas", "nas"])
        assert r.returncode == 0, r.stderr
        yield f"postgresql+psycopg://nas@127.0.0.1:{port}/nas"
    finally:
        run_as(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(top, ignore_errors=True)
