"""The training recipe: ``TrainConfig``, its device, learning-rate schedule and optimizer.

Pure settings and the two functions of them that every training loop uses; nothing
here trains.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from nas.errors import ConfigError
from nas.yaml_limits import load_yaml
from nas.schema import from_mapping

EVAL_BATCH_SIZE = 32  # the scorer's default, so periodic validation matches its numbers
# Settings that may change between a run and its continuation without making it another run.


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The defaults are the ``tiny`` CPU recipe (``conf/train/tiny.yaml``).

    Attributes:
        steps: optimizer steps in total (a resumed run continues up to this).
        batch_size: windows per batch; every sub-network of a step sees the same batch.
        lr: peak learning rate, reached after ``warmup`` steps.
        min_lr: learning rate at the end of the cosine decay.
        warmup: steps of linear warmup.
        weight_decay: AdamW decay, applied to 2-D weights only.
        grad_clip: clip the global gradient norm to this (0: no clipping).
        dropout: dropout of the supernet while training.
        n_random: random sub-networks per step, on top of the largest and smallest.
        distill_alpha: weight of in-place distillation: sub-networks other than the
            largest learn from ``(1 - a) * CE(labels) + a * KD(largest's predictions)``;
            0 turns it off (labels only), 1 is BigNAS's teacher-only loss.
        eval_every: validate and save a checkpoint every this many steps (0: at the end only).
        patience: a model trained alone stops after this many validations without a new
            best (0: never early); it always keeps the weights of its best validation.
            The supernet ignores it.
        eval_batches: validation batches of 32 windows each.
        seed: seeds the initial weights, the batches and the sub-network draws.
        device: "auto" (CUDA when available), "cpu" or "cuda".
        data: the corpus: a UTF-8 text file (read by character), a folder prepared by
            ``nas-data prepare`` (subword tokens), or None for the shipped tiny-shakespeare.
        log_every: update the progress bar and the log every this many steps.
    """

    steps: int = 3500
    batch_size: int = 16
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.0
    n_random: int = 2
    distill_alpha: float = 0.0
    eval_every: int = 250
    patience: int = 0
    eval_batches: int = 4
    seed: int = 1337
    device: str = "auto"
    data: str | None = None
    log_every: int = 25

    def __post_init__(self) -> None:
        def need(key: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"train.{key}: {getattr(self, key)!r} is not allowed; {allowed}")

        need("steps", self.steps >= 1, "it must be >= 1")
        need("batch_size", self.batch_size >= 1, "it must be >= 1")
        need("lr", self.lr > 0, "it must be > 0")
        need("min_lr", 0 <= self.min_lr <= self.lr, f"it must be in [0, lr={self.lr}]")
        need("warmup", self.warmup >= 0, "it must be >= 0")
        need("weight_decay", self.weight_decay >= 0, "it must be >= 0")
        need("grad_clip", self.grad_clip >= 0, "it must be >= 0 (0 turns clipping off)")
        need("dropout", 0 <= self.dropout < 1, "it must be in [0, 1)")
        need("n_random", self.n_random >= 0, "it must be >= 0")
        need("distill_alpha", 0 <= self.distill_alpha <= 1, "it must be in [0, 1] (0: no distillation)")
        need("patience", self.patience >= 0, "it must be >= 0 (0: no early stop)")
        need("eval_every", self.eval_every >= 0, "it must be >= 0 (0: at the end only)")
        need("eval_batches", self.eval_batches >= 1, "it must be >= 1")
        need("device", self.device in ("auto", "cpu", "cuda"), "allowed: auto, cpu, cuda")
        need("log_every", self.log_every >= 1, "it must be >= 1")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a plain mapping (a YAML file, a checkpoint), checking keys and types."""
        if "distill" in d:
            raise ConfigError("train.distill: replaced by train.distill_alpha, the weight of the "
                              "distillation term in [0, 1] (0: off; 1: the old distill=true)")
        if d.get("data") == "":
            d = {**d, "data": None}
        return from_mapping(cls, d, "train.")

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> "TrainConfig":
        """``conf/train/<name>.yaml`` with ``overrides`` (those that are None are skipped):
        the recipes without Hydra, for scripts and experiments.

        Raises:
            ConfigError: no such recipe (the message lists them), or a bad value.
        """
        from nas.paths import CONF_DIR
        path = CONF_DIR / "train" / f"{name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in path.parent.glob("*.yaml"))
            raise ConfigError(f"recipe: {name!r} unknown; available: {', '.join(known)}")
        d = load_yaml(path.read_text(), str(path))
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when available, else 'cpu'; 'cuda' without a GPU is a ConfigError."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' was asked for but no CUDA GPU is visible; "
                          "use device=cpu or device=auto")
    return name


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``cfg.lr``, then cosine decay to ``cfg.min_lr`` at ``cfg.steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    frac = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * frac)) * (cfg.lr - cfg.min_lr)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW decaying only 2-D weights (matrices, embeddings), not biases or norms."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # beta2 0.99 as nanoGPT's shakespeare-char: few tokens per step make gradients noisy.
    # The fused kernel updates every tensor in a few launches instead of a few per tensor.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=params[0].is_cuda)
