"""The accuracy objective: validation loss of a sub-network with inherited weights.

The search scores on the validation split; :func:`split_loss` gives the test-split loss
that final figures are reported on (the search never reads it). No Hydra or Optuna
here: the experiments import this on machines that have neither.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from nas.supernet.data import Corpus, fixed_batches
from nas.model import GPT, build_model
from nas.signals import raise_pending

if TYPE_CHECKING:
    from nas.space import ArchConfig

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]
TEST_BATCHES = 16  # x 32 windows: 512 windows spread over the whole test split


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Batches, arch: ArchConfig = None) -> float:
    """Mean next-character cross-entropy of ``model`` over ``batches``.

    Args:
        model: a ``GPT`` (or its int8-quantised copy) in eval mode.
        batches: ``(x, y)`` pairs, each ``(B, T)``; moved to the model's device.
        arch: run this sub-network of ``model`` (None: the whole model).

    Returns:
        The loss averaged over every token (batches have equal sizes, so this is the
        mean of the per-batch means).
    """
    device = next(model.parameters(), torch.empty(0)).device
    total, n = 0.0, 0
    for x, y in batches:
        raise_pending()  # a stop whose exception was lost ends the scoring here
        x, y = x.to(device), y.to(device)
        logits = model(x) if arch is None else model(x, arch)  # (B, T, vocab)
        # fp32 loss whatever the model's precision: bf16 logits would round the loss itself.
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum")
        total += loss.item()
        n += y.numel()
    return total / n


def split_loss(model: nn.Module, corpus: Corpus, split: str, arch: ArchConfig = None,
               device: str | torch.device = "cpu", n_batches: int = TEST_BATCHES,
               batch_size: int = 32) -> float:
    """Loss of ``arch`` (``model`` itself when None) on fixed windows of one split.

    Args:
        model: a trained GPT; ``arch``, when given, is run as a standalone model in its
            own precision with ``model``'s weights (its leading slices).
        corpus: the corpus.
        split: ``"val"`` or ``"test"``.
        device: where to evaluate.
        n_batches, batch_size: ``n_batches * batch_size`` windows evenly spread over the split.
    """
    gpt = model
    if arch is not None:
        with torch.random.fork_rng(devices=[]):
            gpt = build_model(arch, model, device)
    batches = fixed_batches(corpus.part(split), n_batches, batch_size, gpt.arch.block_size)
    return evaluate(gpt, batches)


class AccuracyScorer:
    """Validation loss of an architecture with weights inherited from a supernet.

    Each architecture is built as a standalone model in its own precision
    (``nas.model.build_model``), so int8 and bf16 scores include their rounding, and
    evaluated on the same deterministic windows of the validation split
    (``nas.supernet.data.fixed_batches``). Results are memoised by ``arch.arch_id``.

    Attributes:
        cache: ``arch_id -> loss`` of every architecture scored so far.
        n_evaluated: forward evaluations actually run (calls minus cache hits).
        n_calls: calls, hits included.
        seconds: time spent evaluating (cache hits excluded).
    """

    def __init__(self, supernet: GPT, corpus: Corpus, device: str | torch.device = "cpu",
                 n_batches: int = 4, batch_size: int = 32):
        """
        Args:
            supernet: a trained supernet (or any GPT whose leading slices fit the archs).
            corpus: the corpus the supernet was trained on; a supernet loaded from a
                checkpoint (``.meta``) trained on another corpus or split is refused.
            device: where to evaluate (int8 models always run on the CPU).
            n_batches: number of validation batches.
            batch_size: windows per batch; the context length is the supernet's.
        """
        meta = getattr(supernet, "meta", None) or {}
        if meta.get("corpus") is not None:
            corpus.check_record(meta["corpus"], meta.get("path", "the supernet"))
        self.supernet = supernet.eval()
        self.device = torch.device(device)
        self.batches = fixed_batches(corpus.part("val"), n_batches, batch_size, supernet.arch.block_size)
        self.cache: dict[str, float] = {}
        self.n_evaluated = 0
        self.n_calls = 0
        self.seconds = 0.0

    @property
    def hits(self) -> int:
        """Calls answered from the cache."""
        return self.n_calls - self.n_evaluated

    def __call__(self, arch: ArchConfig) -> float:
        """Validation loss of ``arch`` (lower is better)."""
        self.n_calls += 1
        key = arch.arch_id
        if key in self.cache:
            return self.cache[key]
        t0 = time.perf_counter()
        # GPT.__init__ draws a random init before the inherited weights overwrite it;
        # fork_rng keeps that from shifting the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            model = build_model(arch, self.supernet, self.device)
        loss = evaluate(model, self.batches)
        self.seconds += time.perf_counter() - t0
        self.n_evaluated += 1
        self.cache[key] = loss
        return loss
