"""One rank of the data-parallel supernet test (tests/test_distributed.py), under torchrun.

Trains the micro supernet with ``train_supernet`` in a gloo process group and leaves,
besides the run's own files: ``rank<R>.pt`` (this rank's final weights and optimizer
state), ``writes-<R>.txt`` (every checkpoint this rank wrote) and ``ckpt-<step>.pt``
(a copy of each checkpoint, to resume from).

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_worker.py OUT CORPUS STEPS
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch

import nas.supernet.train
from conftest import MICRO
from nas.supernet import distributed
from nas.supernet.data import load_corpus
from nas.space import SearchSpace
from nas.supernet.recipe import TrainConfig
from nas.supernet.train import train_supernet


def main() -> None:
    out, corpus_path, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    world = distributed.start("cpu")
    space = SearchSpace.from_dict(MICRO)
    corpus = load_corpus(corpus_path, block_size=MICRO["block_size"], vocab_size=MICRO["vocab_size"])
    cfg = TrainConfig(steps=steps, batch_size=8, lr=3e-3, min_lr=3e-4, warmup=2, n_random=1,
                      eval_every=10, eval_batches=2, device="cpu", log_every=5)
    real_save, real_fit = nas.supernet.train.save_atomic, nas.supernet.train.fit

    def save_atomic(obj, path):
        with open(out / f"writes-{world.rank}.txt", "a") as f:
            f.write(f"{obj['step']} {path}\n")
        real_save(obj, path)
        shutil.copy(path, out / f"ckpt-{obj['step']}.pt")

    def fit(run, *args, **kwargs):
        real_fit(run, *args, **kwargs)
        torch.save({"model": run.model.state_dict(), "optimizer": run.opt.state_dict()},
                   out / f"rank{world.rank}.pt")

    nas.supernet.train.save_atomic, nas.supernet.train.fit = save_atomic, fit
    try:
        train_supernet(space, corpus, cfg, out / "run", progress=False, world=world)
    finally:
        distributed.stop()


if __name__ == "__main__":
    main()
