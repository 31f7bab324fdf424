"""One training step: the sandwich rule with in-place distillation (BigNAS).

A step trains, on one batch, the sub-networks a picker returns (by default
:func:`sandwich`: the largest, the smallest and ``n_random`` random ones), summing
their gradients into a single optimizer step. The first learns from the true next
characters; the others learn from the labels and its detached predictions,
``(1 - a) * CE + a * KD`` (:func:`student_loss`).
"""
from __future__ import annotations

import contextlib
import random
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from nas.model import GPT
from nas.space import ArchConfig, SearchSpace, sample


def soft_cross_entropy(logits: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ``-sum_v p_teacher(v) log p_student(v)``.

    The in-place distillation loss. It differs from KL(teacher || student) only by the
    teacher's entropy, a constant for the student, so its gradients are KL's; unlike KL
    its value sits on the same scale as the true-label cross-entropy.
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, vocab)
    return -(teacher_probs * logp).sum(-1).mean()


def student_loss(logits: torch.Tensor, y: torch.Tensor, teacher_probs: torch.Tensor | None,
                 alpha: float) -> torch.Tensor:
    """``(1 - alpha) * CE(logits, y) + alpha * KD(logits, teacher_probs)``.

    The label term keeps every sub-network anchored to the data: with ``alpha = 1``
    (BigNAS's loss) the students only chase the teacher's current guesses, which on
    tiny-shakespeare held the shared weights far back (experiments/distillation).
    """
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
    if teacher_probs is None or alpha == 0:
        return ce
    return (1 - alpha) * ce + alpha * soft_cross_entropy(logits, teacher_probs)


def train_step(model: GPT, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               archs: Sequence[ArchConfig], distill_alpha: float, grad_clip: float,
               amp: Callable[[], contextlib.AbstractContextManager],
               reduce: Callable[[], None] | None = None) -> list[torch.Tensor]:
    """One optimizer step over the sub-networks ``archs`` on one batch.

    Gradients of every sub-network are summed (not averaged), as in BigNAS: each
    sub-network gets the full step size of its own loss.

    Args:
        model: the supernet (or a standalone GPT, with ``archs`` its own architecture).
        opt: its optimizer.
        x, y: inputs and targets, ``(B, T)``.
        archs: sub-networks; ``archs[0]`` learns from the labels alone and is the
            teacher of the others when ``distill_alpha > 0``.
        distill_alpha: weight of the teacher's detached predictions in the loss of
            ``archs[1:]`` (:func:`student_loss`).
        grad_clip: global gradient-norm limit (0: none).
        amp: returns the autocast context (a null context in fp32).
        reduce: called once after every sub-network's backward, before clipping: the
            data-parallel gradient average (``nas.supernet.distributed.GradSync``); None alone.

    Returns:
        The detached loss of every sub-network, in order.
    """
    opt.zero_grad(set_to_none=True)
    teacher = None
    losses = []
    for i, arch in enumerate(archs):
        with amp():
            logits = model(x, arch)  # (B, T, vocab)
        if i == 0:
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            if distill_alpha > 0:
                # Detached: the teacher learns from the labels only, never from its students.
                teacher = F.softmax(logits.detach().float(), dim=-1)
        else:
            loss = student_loss(logits, y, teacher, distill_alpha)
        # Backward per sub-network frees its activations before the next one runs.
        loss.backward()
        losses.append(loss.detach())
    if reduce is not None:
        reduce()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return losses


def amp_context(device: str) -> Callable[[], contextlib.AbstractContextManager]:
    """The autocast context of ``device``'s training: bf16 on CUDA, none (fp32) on a CPU."""
    if device == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def sync(device: str) -> None:
    """Wait for the GPU's queued work, so that a clock read after it is true."""
    if device == "cuda":
        torch.cuda.synchronize()


def sandwich(space: SearchSpace, rng: random.Random, n_random: int) -> list[ArchConfig]:
    """Largest, smallest and ``n_random`` random sub-networks (fp32), drawn with ``rng``."""
    dev = next(iter(space.precision))  # any device: the drawn precision is replaced by fp32
    return ([space.largest(), space.smallest()]
            + [sample(space, rng, device=dev, precision="fp32") for _ in range(n_random)])

