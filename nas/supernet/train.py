"""Supernet training and its checkpoints: start, resume exactly, load.

``train_supernet`` runs the shared loop (``nas.supernet.loop``) over the sub-networks a picker
draws each step (the sandwich rule by default), saving a checkpoint that restores the
run bit for bit; ``load_supernet`` reads one back.
"""
from __future__ import annotations

import contextlib
import csv
import io
import random
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from nas.supernet.checkpoint import FORMAT, check_space, read_checkpoint, same_space, save_atomic, space_of
from nas.supernet.data import Corpus
from nas.supernet.distributed import (World, broadcast_weights, check_batch, gather_rank_rng,
                                      seed_rank, set_rank_rng_state)
from nas.errors import ConfigError
from nas.limits import check_trainable
from nas.locks import exclusive, lock_path
from nas.outputs import write_atomic
from nas.supernet.loop import Run, fit
from nas.model import Supernet
from nas.supernet.recipe import TrainConfig, make_optimizer, resolve_device
from nas.signals import held
from nas.space import ArchConfig, SearchSpace
from nas.supernet.step import sandwich

# Settings that may change between a run and its continuation without making it another run.
RESUMABLE_CHANGES = ("steps", "device", "log_every", "eval_every", "patience", "compile")


def _checkpoint(run: Run, space: SearchSpace, corpus: Corpus, cfg: TrainConfig) -> dict:
    evals = [r for r in run.history if "val_largest" in r]
    return {
        "format": FORMAT, "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
        "step": run.step, "rng": run.rng_state(), "space": space.to_dict(), "train": cfg.to_dict(),
        "corpus": corpus.record(),
        "history": run.history, "tokens_per_s": run.tokens_per_s,
        "val": ({k[4:]: v for k, v in evals[-1].items() if k.startswith("val_")} if evals else {}),
    }


def _write_log(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    keys = ["step", "loss", "lr", "tokens_per_s", "val_largest", "val_smallest", "val_baseline"]
    out = io.StringIO(newline="")
    w = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
    text = out.getvalue().encode()
    write_atomic(path, lambda f: f.write(text))  # a unique temporary name: never half a file


def _run_identity(ckpt_train: Mapping[str, Any], cfg: TrainConfig) -> bool:
    a = {k: v for k, v in ckpt_train.items() if k not in RESUMABLE_CHANGES}
    b = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
    return a == b


# Draws the sub-networks of one step: (space, rng, n_random) -> archs; archs[0] is the teacher.
Picker = Callable[[SearchSpace, random.Random, int], list[ArchConfig]]


def train_supernet(space: SearchSpace, corpus: Corpus, cfg: TrainConfig, out_dir: Path,
                   resume: Path | None = None, progress: bool = True,
                   picker: Picker = sandwich, world: World | None = None) -> Path:
    """Train the weight-sharing supernet of ``space`` with the sandwich rule.

    Re-running into an ``out_dir`` whose ``supernet.pt`` holds the same space, corpus and
    settings (``steps``, ``device``, ``log_every``, ``eval_every`` may differ) continues
    that run, so an interrupted command resumes by being run again.

    Args:
        space: the search space; the supernet is its largest architecture.
        corpus: training and validation text (``nas.supernet.data.load_corpus``).
        cfg: the recipe.
        out_dir: where ``supernet.pt`` and ``log.csv`` go.
        resume: a checkpoint to continue from (its step up to ``cfg.steps``).
        progress: show a progress bar.
        picker: draws the sub-networks of every step from ``space`` with the run's own
            RNG and ``cfg.n_random``; the first is the distillation teacher. The default
            is the sandwich rule (:func:`nas.supernet.step.sandwich`). The checkpoint does not
            record it: resume a run with the picker it started with.
        world: the data-parallel ranks (``nas.supernet.distributed.start``); None: the started
            process group's, one process when none is. ``cfg.batch_size`` is the global
            batch; rank 0 alone writes. A checkpoint resumes on any number of ranks.

    Returns:
        ``out_dir / "supernet.pt"``, saved every ``cfg.eval_every`` steps and at the end.

    Raises:
        ConfigError: a checkpoint of another space or corpus; an ``out_dir`` holding
            another run; a corpus with more characters than the space's vocabulary; a
            global batch the ranks cannot share equally.
    """
    out_dir = Path(out_dir)
    world = world or World.current()
    check_batch(cfg.batch_size, world.size)
    if corpus.vocab_size > space.vocab_size:
        raise ConfigError(f"train.data: {corpus.path} has a vocabulary of {corpus.vocab_size} but "
                          f"search space '{space.name}' has vocab_size {space.vocab_size}")
    # Two trainings into one folder would replace each other's checkpoints: one at a time.
    lock = (exclusive(lock_path(out_dir, folder=True), "out_dir", f"the training folder {out_dir}")
            if world.main else contextlib.nullcontext())
    with lock:
        return _train(space, corpus, cfg, out_dir, resume, progress, picker, world)


def _train(space: SearchSpace, corpus: Corpus, cfg: TrainConfig, out_dir: Path,
           resume: Path | None, progress: bool, picker: Picker, world: World) -> Path:
    """:func:`train_supernet` once ``out_dir`` is this process's."""
    final = out_dir / "supernet.pt"
    ckpt, src = None, None
    if resume is not None:
        src = Path(resume)
        ckpt = read_checkpoint(src)
        check_space(ckpt, space, src)
        corpus.check_record(ckpt["corpus"], str(src))
    if final.exists() and (src is None or src.resolve() != final.resolve()):
        old = read_checkpoint(final)
        same = (same_space(old["space"], space) and _run_identity(old["train"], cfg)
                and old["corpus"] == corpus.record())
        if not same:
            raise ConfigError(
                f"out_dir: {final} holds another run (search space '{old['space'].get('name')}', "
                f"step {old['step']}); pick another out_dir, or pass resume={final} to continue it")
        if src is None:
            ckpt, src = old, final
            if world.main:
                print(f"continuing {final} from step {old['step']}", file=sys.stderr)

    device = resolve_device(cfg.device)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the fp32 parts of autocast
    torch.manual_seed(cfg.seed)
    check_trainable(space.largest().n_params, device, f"search space '{space.name}'")
    model = Supernet(space, dropout=cfg.dropout).to(device)
    arch_rng = random.Random(cfg.seed)
    run = Run(model=model, opt=make_optimizer(model, cfg),
               pick=lambda: picker(space, arch_rng, cfg.n_random),
               arch_rng=arch_rng, data_rng=torch.Generator().manual_seed(cfg.seed))
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            run.opt.load_state_dict(ckpt["optimizer"])
            run.set_rng_state(ckpt["rng"])  # the data and sub-network streams of every rank
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            raise ConfigError(f"checkpoint: {src}: its weights, optimizer or random states do not "
                              f"fit this run ({e.__class__.__name__}); it cannot be resumed") from None
        run.step, run.history = int(ckpt["step"]), list(ckpt.get("history", []))
        run.tokens_per_s = float(ckpt.get("tokens_per_s", 0.0))
    if world.size > 1:
        _seed_other_ranks(world, cfg.seed, run.step, ckpt)
        broadcast_weights(model)

    def save() -> None:
        with held():  # a Ctrl-C waits for the checkpoint and its log to be written whole
            ranks = gather_rank_rng(world)  # every rank takes part; rank 0 writes
            if not world.main:
                return
            state = _checkpoint(run, space, corpus, cfg)
            if ranks is not None:
                state.update(world_size=world.size, rank_rng=ranks[1:])
            save_atomic(state, final)
            _write_log(run.history, out_dir / "log.csv")

    if run.step >= cfg.steps:
        if src != final:  # a finished checkpoint from elsewhere: still land it in out_dir
            save()
        return final
    val_archs = {"largest": space.largest(), "smallest": space.smallest()}
    if space.baseline_arch() is not None:  # the reference architecture, tracked as it trains
        val_archs["baseline"] = space.baseline_arch()
    fit(run, corpus, cfg, device, val_archs, save, progress and world.main,
        desc=f"supernet {space.name}", world=world)
    return final


def _seed_other_ranks(world: World, seed: int, step: int, ckpt: Mapping[str, Any] | None) -> None:
    """Give ranks above 0 their own dropout streams: the checkpoint's, when it was written
    by as many ranks, else new ones from the seed, the rank and the step."""
    if world.main:
        return
    saved = ckpt.get("rank_rng") if ckpt is not None else None
    if saved is not None and ckpt.get("world_size") == world.size:
        set_rank_rng_state(saved[world.rank - 1])
    else:
        seed_rank(seed, world.rank, step)


def load_supernet(path: str | Path, space: SearchSpace | None = None,
                  device: str | torch.device = "cpu", corpus: Corpus | None = None) -> Supernet:
    """The trained supernet of a checkpoint, in eval mode.

    Args:
        path: a ``supernet.pt`` written by :func:`train_supernet`.
        space: when given, the checkpoint must be of this space (precision lists aside).
        device: where to put the model.
        corpus: when given, the checkpoint must have been trained on this corpus and split.

    Returns:
        The supernet; ``.meta`` holds the checkpoint's step, corpus, training config and
        last validation losses.

    Raises:
        ConfigError: missing file, not a checkpoint, or a checkpoint of another space,
            corpus or split.
    """
    ckpt = read_checkpoint(path)
    if space is not None:
        check_space(ckpt, space, path)
    if corpus is not None:
        corpus.check_record(ckpt["corpus"], str(path))
    with torch.random.fork_rng(devices=[]):  # the random init is overwritten; keep the caller's RNG
        model = Supernet(space or space_of(ckpt))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise ConfigError(f"checkpoint: {path}: weights do not fit search space "
                          f"'{model.space.name}'") from None
    model.meta = {k: ckpt.get(k) for k in ("step", "corpus", "train", "val", "tokens_per_s",
                                                  "history")}
    model.meta["path"] = str(path)
    return model.to(device).eval()

