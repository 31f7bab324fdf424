"""Data-parallel supernet training: two gloo ranks under torchrun train as one process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.supernet.data import get_batch
from nas.supernet.distributed import World
from nas.errors import ConfigError
from nas.supernet.recipe import TrainConfig
from nas.supernet.train import train_supernet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The worker's recipe (tests/ddp_worker.py), for the one-process runs compared with it.
CFG = TrainConfig(steps=20, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=2, n_random=1,
                  eval_every=10, eval_batches=2, device="cpu", log_every=5)


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE)]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           "--standalone", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def _close(a: dict, b: dict, tol: float) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=tol, rtol=0) for k in a)


def test_a_rank_takes_its_rows_of_the_global_batch(micro_corpus):
    whole = get_batch(micro_corpus.train, 8, 16, generator=torch.Generator().manual_seed(3))
    for rank in range(2):
        gen = torch.Generator().manual_seed(3)
        x, y = get_batch(micro_corpus.train, 8, 16, generator=gen, rows=World(rank, 2).rows(8))
        assert torch.equal(x, whole[0][4 * rank:4 * rank + 4])
        assert torch.equal(y, whole[1][4 * rank:4 * rank + 4])
        # The stream moves on as for the whole batch: the next batches are shared too.
        assert torch.equal(gen.get_state(), _after_one_batch(micro_corpus, 3))
    with pytest.raises(ConfigError, match=r"train.batch_size: 7 .*multiple of 2"):
        World(0, 2).rows(7)


def _after_one_batch(corpus, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    get_batch(corpus.train, 8, 16, generator=gen)
    return gen.get_state()


@pytest.mark.slow
def test_two_ranks_train_as_one_process_and_resume_on_one(micro_space, micro_corpus, tmp_path):
    p = _torchrun([str(HERE / "ddp_worker.py"), str(tmp_path), micro_corpus.path, "20"], tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    # One reduction per step keeps the ranks in lockstep: equal weights and optimizer state.
    for k, v in ranks[0]["model"].items():
        assert torch.equal(v, ranks[1]["model"][k]), k
    for s0, s1 in zip(ranks[0]["optimizer"]["state"].values(), ranks[1]["optimizer"]["state"].values()):
        assert torch.equal(s0["exp_avg"], s1["exp_avg"]) and torch.equal(s0["exp_avg_sq"], s1["exp_avg_sq"])
    # Rank 0 alone writes, at every evaluation.
    assert not (tmp_path / "writes-1.txt").exists()
    assert [line.split()[0] for line in (tmp_path / "writes-0.txt").read_text().splitlines()] == ["10", "20"]
    two = torch.load(tmp_path / "run" / "supernet.pt", weights_only=True)
    assert two["world_size"] == 2 and len(two["rank_rng"]) == 1

    # The same global batches and sub-networks as one process: the same run, up to the
    # order of float sums.
    one = torch.load(train_supernet(micro_space, micro_corpus, CFG, tmp_path / "one", progress=False),
                     weights_only=True)
    assert [r["step"] for r in two["history"]] == [r["step"] for r in one["history"]]
    for a, b in zip(two["history"], one["history"]):
        for key in ("loss", "val_largest", "val_smallest"):
            if key in b:
                assert a[key] == pytest.approx(b[key], abs=1e-5), (a["step"], key)
    assert _close(two["model"], one["model"], 1e-4)

    # The 2-rank checkpoint of step 10 continues in one process to the same step 20.
    resumed = torch.load(train_supernet(micro_space, micro_corpus, CFG, tmp_path / "resumed",
                                        resume=tmp_path / "ckpt-10.pt", progress=False),
                         weights_only=True)
    assert resumed["step"] == 20 and "world_size" not in resumed
    assert resumed["history"][-1]["val_largest"] == pytest.approx(
        one["history"][-1]["val_largest"], abs=1e-5)
    assert _close(resumed["model"], one["model"], 1e-4)


@pytest.mark.slow
def test_cli_refuses_a_global_batch_the_ranks_cannot_share(tmp_path):
    p = _torchrun(["-m", "nas.supernet", "search_space=tiny", "train.batch_size=7",
                   f"out_dir={tmp_path / 'out'}"], tmp_path)
    assert p.returncode != 0
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: train.batch_size: 7 is the global batch and must divide evenly "
                      "among the 2 processes; give a multiple of 2"]
    assert not (tmp_path / "out").exists()
