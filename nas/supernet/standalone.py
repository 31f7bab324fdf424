"""One architecture trained alone, and the training throughput of a model.

``train_standalone`` runs the supernet's loop (``nas.supernet.loop``) on a single architecture
with a model of its own, from scratch or from the supernet's slices (fine-tuning),
keeping the weights of its best validation (early stopping); that is what the
supernet's inherited weights are compared against.
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from nas.supernet.checkpoint import save_atomic
from nas.supernet.data import Corpus, get_batch
from nas.errors import ConfigError
from nas.supernet.loop import Run, fit
from nas.model import GPT, copy_slices
from nas.supernet.recipe import TrainConfig, make_optimizer, resolve_device
from nas.supernet.score import TEST_BATCHES, AccuracyScorer, split_loss
from nas.space import ArchConfig
from nas.supernet.step import amp_context, sync, train_step


@dataclass(frozen=True)
class StandaloneResult:
    """One architecture trained alone, at its best validation (early-stopped)."""

    arch_id: str
    val_loss: float        # on the scorer's fixed validation windows, in the arch's precision
    tokens_per_s: float    # training tokens per second, evaluation excluded
    steps: int             # steps trained (fewer than the recipe's when stopped early)
    seconds: float         # training wall time, evaluation excluded
    params: int
    history: tuple = ()    # (step, val_loss) of every periodic validation, fp32
    test_loss: float = float("nan")  # on the test split, in the arch's precision
    best_step: int = 0     # the step whose weights were kept
    init: str = "scratch"  # or "supernet": started from the supernet's slices


def fits(arch: ArchConfig, supernet: GPT) -> str | None:
    """Why ``arch`` is not a sub-network of ``supernet`` (None when it is)."""
    big = supernet.arch
    for key in ("vocab_size", "block_size", "head_dim"):
        if getattr(arch, key) != getattr(big, key):
            return f"{key} {getattr(arch, key)} differs from the supernet's {getattr(big, key)}"
    if arch.n_layer > big.n_layer or arch.d_model > big.d_model:
        return (f"{arch.n_layer} layers of width {arch.d_model} exceed the supernet's "
                f"{big.n_layer} of width {big.d_model}")
    if max(arch.n_head) > min(big.n_head) or max(arch.d_ff) > min(big.d_ff):
        return (f"heads {list(arch.n_head)} or FFN {list(arch.d_ff)} exceed the supernet's "
                f"{max(big.n_head)} heads and FFN {max(big.d_ff)}")
    return None


def train_standalone(arch: ArchConfig, corpus: Corpus, cfg: TrainConfig, progress: bool = False,
                     n_batches: int = 4, batch_size: int = 32,
                     save_to: Path | None = None, init: GPT | None = None,
                     test_batches: int = TEST_BATCHES) -> StandaloneResult:
    """Train ``arch`` alone, with the supernet's loop, batches and step budget.

    ``cfg`` is the supernet's recipe: the same seed gives the same batches; the
    sandwich settings (``n_random``, ``distill_alpha``) do not apply to a single
    network. The weights of the best periodic validation are kept (early stopping;
    ``cfg.patience`` ends the run sooner), and both final figures are of those weights.

    Args:
        arch: the architecture; its ``precision`` is used for the final evaluations.
        corpus: training, validation and test text.
        cfg: the recipe (``steps``, ``batch_size``, schedule, ``patience``...).
        progress: show a progress bar.
        n_batches, batch_size: the validation windows, as given to the AccuracyScorer
            the result will be compared with.
        save_to: where to write the kept fp32 weights with the architecture and
            recipe (written atomically), or None.
        init: a supernet whose leading slices start the model (fine-tuning inherited
            weights, as Once-for-All and HAT do); None starts from a random init.
        test_batches: batches of ``batch_size`` windows of the test split for the test loss.

    Returns:
        Validation loss (scored exactly as the scorer scores inherited weights), test
        loss, the step kept and training throughput.

    Raises:
        ConfigError: ``init`` is given and ``arch`` is not one of its sub-networks.
    """
    if init is not None and (why := fits(arch, init)) is not None:
        raise ConfigError(f"arch: {arch.describe()} is not a sub-network of the supernet: {why}")
    device = resolve_device(cfg.device)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    torch.manual_seed(cfg.seed)
    fp32 = dataclasses.replace(arch, precision="fp32")
    model = GPT(fp32, dropout=cfg.dropout)
    if init is not None:
        copy_slices(model, init)
    model = model.to(device)
    run = Run(model=model, opt=make_optimizer(model, cfg), pick=lambda: [fp32],
               arch_rng=random.Random(cfg.seed), data_rng=torch.Generator().manual_seed(cfg.seed))
    how = "fine-tune" if init is not None else "alone"
    fit(run, corpus, cfg, device, {"arch": fp32}, None, progress, desc=f"{how} {arch.arch_id}",
         track="arch")
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    val = AccuracyScorer(model, corpus, device, n_batches, batch_size)(arch)
    test = split_loss(model, corpus, "test", arch, device, test_batches, batch_size)
    history = tuple((r["step"], r["val_arch"]) for r in run.history if "val_arch" in r)
    init_name = "supernet" if init is not None else "scratch"
    if save_to is not None:
        save_atomic({"arch": arch.to_dict(), "model": model.state_dict(), "train": cfg.to_dict(),
                     "val_loss": val, "test_loss": test, "best_step": run.best_step,
                     "init": init_name, "history": list(history), "corpus": corpus.record()},
                    save_to)
    return StandaloneResult(arch.arch_id, val, run.tokens_per_s, run.step, run.seconds,
                            model.num_params(), history, test, run.best_step, init_name)


def measure_throughput(model: GPT, pick: Callable[[], list[ArchConfig]], corpus: Corpus,
                       cfg: TrainConfig, steps: int = 20, warmup_steps: int = 3) -> float:
    """Training tokens per second of ``train_step`` (every sub-network pass counted).

    Trains ``model`` in place for ``warmup_steps + steps`` steps (use a throwaway model).

    Args:
        model: a supernet or standalone GPT, already on its device.
        pick: returns the sub-networks of one step.
        corpus, cfg: batches and recipe (``batch_size``, ``distill_alpha``, ``grad_clip``, ``device``).
        steps: timed steps.
        warmup_steps: untimed steps first (allocator and kernel warm-up).
    """
    device = resolve_device(cfg.device)
    opt, amp = make_optimizer(model, cfg), amp_context(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.train()
    tokens, t0 = 0, 0.0
    for i in range(warmup_steps + steps):
        if i == warmup_steps:
            sync(device)
            t0, tokens = time.perf_counter(), 0
        x, y = get_batch(corpus.part("train"), cfg.batch_size, model.arch.block_size, generator=gen,
                         device=device)
        archs = pick()
        train_step(model, opt, x, y, archs, cfg.distill_alpha, cfg.grad_clip, amp)
        tokens += x.numel() * len(archs)
    sync(device)
    model.eval()
    return tokens / (time.perf_counter() - t0)
