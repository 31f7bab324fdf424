"""``nas-train`` (``python -m nas.supernet``, or ``torchrun --nproc_per_node=N -m
nas.supernet ...``): the supernet, or one architecture alone, from the command line.

The sandwich rule with in-place distillation (BigNAS) trains the supernet; a single
architecture can also be trained alone with the very same loop, from scratch or from
the supernet's slices (fine-tuning). The training API lives in the modules of
``nas.supernet`` (``recipe``, ``step``, ``loop``, ``train``, ``standalone``,
``distributed``); this module only turns the Hydra config into their calls.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nas.supernet import distributed
from nas.supernet.data import load_corpus
from nas.errors import ConfigError, exit_on_user_error
from nas.limits import check_trainable
from nas.locks import exclusive, lock_path
from nas.outputs import check_folder, write_atomic
from nas.supernet.recipe import EVAL_BATCH_SIZE, TrainConfig, resolve_device
from nas.supernet.score import TEST_BATCHES, AccuracyScorer
from nas.signals import held
from nas.space import ArchConfig, SearchSpace
from nas.supernet.standalone import train_standalone
from nas.supernet.train import load_supernet, train_supernet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One ``nas-train`` command, checked (:func:`check_first`)."""

    space: SearchSpace
    train: TrainConfig
    corpus: Any                   # nas.supernet.data.Corpus
    out_dir: Path
    resume: Path | None
    arch: ArchConfig | None       # trained alone when given
    init_from: str | None         # the supernet.pt a model trained alone starts from


def check_first(cfg: Any) -> Job:
    """Every check of the command, before Hydra makes its run folder and before any
    training (``nas.hydra_cli.CheckFirst``, ``conf/train.yaml``)."""
    from omegaconf import OmegaConf

    raw = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
           for k, v in cfg.items() if k != "hydra"}  # Hydra's node: not ours, not all resolvable yet
    if not isinstance(raw["search_space"], Mapping):
        raise ConfigError(f"search_space: {raw['search_space']!r} is not a search space; its "
                          "YAML file must be a mapping (n_layer, d_model, n_head, d_ff, precision)")
    space = SearchSpace.from_dict(raw["search_space"])
    tcfg = TrainConfig.from_dict(raw["train"])
    corpus = load_corpus(tcfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    out_dir = Path(raw["out_dir"])
    check_folder(out_dir, "out_dir")  # now, not after hours of training
    resume = Path(raw["resume"]) if raw.get("resume") else None
    init = raw.get("init") or "scratch"
    if init not in ("scratch", "supernet"):
        raise ConfigError(f"init: {init!r} is not allowed; allowed: scratch, supernet")
    if init == "supernet" and not raw.get("arch"):
        raise ConfigError("init: 'supernet' fine-tunes one architecture; give arch=<yaml> too")
    if raw.get("arch") and distributed.launched_size() > 1:
        raise ConfigError("arch: a model trained alone runs in one process; start it with "
                          "python -m nas.supernet, not torchrun")
    if not raw.get("arch"):
        return Job(space, tcfg, corpus, out_dir, resume, None, None)
    arch = ArchConfig.from_yaml(raw["arch"])
    try:
        space.check(arch, resolve_device(tcfg.device))
    except ConfigError as e:
        raise ConfigError(f"arch: {raw['arch']}: {e}; pick search_space=<the space it "
                          "belongs to>") from None
    corpus = load_corpus(tcfg.data, block_size=arch.block_size, vocab_size=arch.vocab_size)
    ckpt = None
    if init == "supernet":
        ckpt = (raw.get("supernet") or {}).get("checkpoint")
        if not ckpt:
            raise ConfigError("supernet.checkpoint: init=supernet needs the supernet.pt to "
                              "inherit from; pass supernet.checkpoint=PATH")
    check_trainable(arch.n_params, resolve_device(tcfg.device), f"arch: {raw['arch']}")
    return Job(space, tcfg, corpus, out_dir, resume, arch, ckpt)


@exit_on_user_error
def _main(cfg: Any) -> Path:
    from omegaconf import OmegaConf

    from nas.hydra_cli import CheckFirst

    t0 = time.perf_counter()
    job = CheckFirst.take() or check_first(cfg)
    space, tcfg, corpus, out_dir, arch = job.space, job.train, job.corpus, job.out_dir, job.arch
    if arch is not None:  # one architecture (an exported winner, say) trained alone
        supernet = None if job.init_from is None else load_supernet(job.init_from, corpus=corpus)
        name = "finetuned" if supernet is not None else "standalone"
        path = out_dir / f"{name}-{arch.arch_id}.pt"
        log.info(f"training {arch.describe()} alone on {resolve_device(tcfg.device)}"
              f"{' from the supernet' if supernet is not None else ''}: "
              f"{tcfg.steps} steps, batch {tcfg.batch_size}")
        with exclusive(lock_path(path), "out_dir", f"the weights {path}"):  # one run per file
            res = train_standalone(arch, corpus, tcfg, progress=True, n_batches=tcfg.eval_batches,
                                   batch_size=EVAL_BATCH_SIZE, save_to=path, init=supernet)
        log.info(f"kept step {res.best_step} (best validation of {res.steps} steps trained)")
        log.info(f"validation loss ({tcfg.eval_batches} x {EVAL_BATCH_SIZE} windows, "
              f"{arch.precision}): {res.val_loss:.4f}")
        log.info(f"test loss ({TEST_BATCHES} x {EVAL_BATCH_SIZE} windows, {arch.precision}): "
              f"{res.test_loss:.4f}")
        log.info(f"weights: {path}  ({res.params:,} parameters, {res.tokens_per_s:,.0f} tokens/s)")
        return path
    device = resolve_device(tcfg.device)
    distributed.check_batch(tcfg.batch_size, distributed.launched_size())
    world = distributed.start(device)
    try:
        if world.main:
            on = (f" x {world.size} processes (batch {tcfg.batch_size // world.size} each)"
                  if world.size > 1 else "")
            log.info(f"training the supernet of '{space.name}' on {device}{on}: {tcfg.steps} "
                     f"steps, batch {tcfg.batch_size}, sandwich of {2 + tcfg.n_random}")
        path = train_supernet(space, corpus, tcfg, out_dir, resume=job.resume, world=world)
    finally:
        distributed.stop()
    if not world.main:
        return path
    with held():
        text = OmegaConf.to_yaml(cfg, resolve=True).encode()
        write_atomic(out_dir / "config.yaml", lambda f: f.write(text))
    supernet = load_supernet(path, space, corpus=corpus)
    scorer = AccuracyScorer(supernet, corpus, n_batches=tcfg.eval_batches, batch_size=EVAL_BATCH_SIZE)
    log.info(f"validation loss ({tcfg.eval_batches} x {EVAL_BATCH_SIZE} windows of "
          f"{space.block_size}, inherited weights, fp32):")
    for name, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        log.info(f"  {name:8s} {arch.describe():40s} {scorer(arch):.4f}")
    log.info(f"checkpoint: {path}  (step {supernet.meta['step']}, "
          f"{supernet.meta['tokens_per_s']:,.0f} tokens/s)")
    log.info(f"wall time: {time.perf_counter() - t0:.1f} s")
    return path


def main() -> None:
    """``python -m nas.supernet [search_space=NAME] [train=RECIPE] [out_dir=DIR] [resume=CKPT] [arch=YAML]
    [init=scratch|supernet supernet.checkpoint=PT]``.

    With ``arch``, the architecture in that file (an exported winner) is trained alone
    with the recipe instead of the supernet; ``init=supernet`` starts it from the
    supernet's slices (fine-tuning) instead of a random init.
    """
    from nas.hydra_cli import launch
    from nas.signals import stop_cleanly

    with stop_cleanly("kept: the supernet checkpoint of the last evaluation; run the same "
                      "command again to continue (a model trained alone is saved at its end only)"):
        launch("nas-train", "train", _main)

if __name__ == "__main__":
    main()