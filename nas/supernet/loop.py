"""The training loop shared by the supernet and standalone models, and its state.

``Run`` holds what the loop mutates and a checkpoint must restore (weights, optimizer,
step, RNG states); ``fit`` steps it to the recipe's end, validating, logging and
saving on the way.
"""
from __future__ import annotations

import dataclasses
import math
import logging
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from nas.errors import ConfigError
from nas.supernet.data import Corpus, fixed_batches, get_batch
from nas.supernet.distributed import GradSync, World, mean_over_ranks
from nas.model import GPT
from nas.supernet.recipe import EVAL_BATCH_SIZE, TrainConfig, lr_at
from nas.supernet.score import evaluate
from nas.space import ArchConfig
from nas.supernet.step import amp_context, sync, train_step

log = logging.getLogger(__name__)


class _Quiet:
    """Stands in for a tqdm bar when there is none (no progress wanted, or no tqdm)."""

    def __init__(self, echo: bool, initial: int = 0, **_: Any):
        self.echo, self.n = echo, initial

    def set_postfix(self, **_: Any) -> None:
        pass

    def update(self, k: int) -> None:
        self.n += k

    def write(self, s: str, file: Any = None) -> None:
        if self.echo:  # progress was wanted but tqdm is missing: keep the evaluation lines
            print(s, file=file or sys.stdout, flush=True)

    def close(self) -> None:
        pass


def _bar(progress: bool, **kw: Any) -> Any:
    if progress:
        try:  # optional: the GPU experiments run where only torch, pandas and matplotlib are
            from tqdm import tqdm
            return tqdm(dynamic_ncols=True, file=sys.stderr, **kw)
        except ImportError:
            pass
    return _Quiet(progress, **kw)


@dataclass
class Run:
    """What a training loop mutates, and what a checkpoint must restore."""

    model: GPT
    opt: torch.optim.AdamW
    pick: Callable[[], list[ArchConfig]]
    arch_rng: random.Random
    data_rng: torch.Generator
    step: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    tokens_per_s: float = 0.0  # of this session's training, evaluation excluded
    seconds: float = 0.0
    best_val: float = math.inf  # of the tracked architecture (standalone runs)
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def rng_state(self) -> dict[str, Any]:
        return {"arch": self.arch_rng.getstate(), "data": self.data_rng.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def set_rng_state(self, s: Mapping[str, Any]) -> None:
        a = s["arch"]  # a checkpoint stores the state's tuples as lists
        self.arch_rng.setstate((a[0], tuple(a[1]), a[2]))
        self.data_rng.set_state(s["data"].cpu())
        torch.set_rng_state(s["torch"].cpu())
        if s["cuda"] and torch.cuda.is_available():  # a host with fewer GPUs takes the first
            torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"][:torch.cuda.device_count()]])


def _stop_if_not_finite(value: float, what: str, step: int, cfg: TrainConfig) -> None:
    """Stop a run whose weights went non-finite, before they are saved: the checkpoint on
    disk stays the last finite one (nothing after it could be trained from)."""
    if not math.isfinite(value):
        raise ConfigError(f"train: the {what} is {value} at step {step} (train.lr={cfg.lr:g}); "
                          "training stopped, and the last checkpoint saved before it is kept: "
                          "lower train.lr (or set train.grad_clip) and run again")


def fit(run: Run, corpus: Corpus, cfg: TrainConfig, device: str,
         val_archs: Mapping[str, ArchConfig], save: Callable[[], None] | None,
         progress: bool, desc: str, track: str | None = None, world: World = World()) -> None:
    """The training loop shared by the supernet and standalone models.

    With ``track`` (a key of ``val_archs``), the weights of that network's best
    validation are kept in ``run.best_state``, and training stops once ``cfg.patience``
    validations in a row have not improved on it (0: never early).

    With a ``world`` of several ranks, each trains on its rows of every global batch
    and the gradients are averaged once per step; every rank validates (the same
    weights, the same windows) and calls ``save``, which must let rank 0 alone write.
    """
    model, block = run.model, run.model.arch.block_size
    if cfg.compile and track is None:
        raise ConfigError("train.compile: true applies to a model trained alone (arch=...); a "
                          "supernet's sub-network changes every pass and would be compiled anew "
                          "each time: set train.compile=false")
    # The compiled module shares the model's weights; checkpoints keep saving the model.
    step_model = torch.compile(model) if cfg.compile else model
    amp = amp_context(device)
    rows = world.rows(cfg.batch_size) if world.size > 1 else None
    reduce = GradSync(model, world) if world.size > 1 else None
    val_batches = fixed_batches(corpus.part("val"), cfg.eval_batches, EVAL_BATCH_SIZE, block)
    bar = _bar(progress, total=cfg.steps, initial=run.step, desc=desc)
    model.train()
    tokens, pending = 0, []
    run.seconds = 0.0
    t0 = time.perf_counter()
    try:  # closed on a stop too, so that the message after it starts on a line of its own
        while run.step < cfg.steps:
            # part() each step: a prepared corpus's memory map is opened anew (nanoGPT: a
            # memmap kept open for a whole run leaks memory as its pages are touched).
            x, y = get_batch(corpus.part("train"), cfg.batch_size, block, generator=run.data_rng,
                             rows=rows, device=device)
            for g in run.opt.param_groups:
                g["lr"] = lr_at(run.step, cfg)
            archs = run.pick()
            pending.append(train_step(step_model, run.opt, x, y, archs, cfg.distill_alpha,
                                      cfg.grad_clip, amp, reduce)[0])
            tokens += x.numel() * world.size * len(archs)  # every sub-network pass counts
            run.step += 1
            last = run.step == cfg.steps
            do_eval = last or (cfg.eval_every and run.step % cfg.eval_every == 0)
            if run.step % cfg.log_every and not do_eval:
                continue
            # .item() only here: a sync every step would slow a GPU down.
            sync(device)
            now = time.perf_counter()
            run.seconds += now - t0
            run.tokens_per_s = tokens / run.seconds
            loss = mean_over_ranks(torch.stack(pending).mean(), world).item()
            pending = []
            _stop_if_not_finite(loss, "training loss", run.step, cfg)
            row: dict[str, Any] = {"step": run.step, "loss": loss, "lr": lr_at(run.step - 1, cfg),
                                   "tokens_per_s": run.tokens_per_s}
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{run.tokens_per_s:,.0f}")
            bar.update(run.step - bar.n)
            if do_eval:
                _validate(model, val_batches, val_archs, row, loss, cfg, bar, world)
                run.history.append(row)
                if save is not None:
                    save()
                if track is not None and _stop_early(run, row[f"val_{track}"], cfg, bar):
                    break
            else:
                run.history.append(row)
            t0 = time.perf_counter()  # evaluation and saving are not training time
    finally:
        bar.close()
    model.eval()


def _validate(model: Any, val_batches: Any, val_archs: Mapping[str, ArchConfig],
              row: dict[str, Any], loss: float, cfg: TrainConfig, bar: Any, world: World) -> None:
    """Each named network's validation loss into ``row``; the line shown and logged."""
    model.eval()
    seen: dict[str, float] = {}  # the baseline may be the largest: evaluate it once
    for name, arch in val_archs.items():
        if arch.arch_id not in seen:
            seen[arch.arch_id] = evaluate(model, val_batches, arch)
        row[f"val_{name}"] = seen[arch.arch_id]
    model.train()
    for name in val_archs:
        _stop_if_not_finite(row[f"val_{name}"], f"validation loss of {name}", row["step"], cfg)
    # Validation is a result: stdout; the bar is on stderr.
    line = f"step {row['step']}: loss {loss:.4f}, " + ", ".join(
        f"val {name} {row[f'val_{name}']:.4f}" for name in val_archs)
    bar.write(line, file=sys.stdout)
    if world.main:  # the job log keeps them, once
        log.debug("%s, %.0f tokens/s", line, row["tokens_per_s"])


def _stop_early(run: Run, val: float, cfg: TrainConfig, bar: Any) -> bool:
    """Keep the weights of a new best validation; True once ``cfg.patience`` validations
    in a row have not improved on it."""
    if val < run.best_val:
        run.best_val, run.best_step = val, run.step
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        return False
    if cfg.patience and run.step - run.best_step >= cfg.patience * cfg.eval_every:
        bar.write(f"stopping early at step {run.step}: no better validation since "
                  f"step {run.best_step}", file=sys.stdout)
        return True
    return False
