"""Supernet training: the sandwich rule with in-place distillation (BigNAS).

Every step trains, on one batch, the largest sub-network, the smallest and
``n_random`` random ones, accumulating their gradients into a single optimizer step.
The largest learns from the true next characters; the others learn from the labels
and the largest's detached predictions, ``(1 - a) * CE + a * KD`` with
``a = distill_alpha`` (in-place distillation; 0 turns it off). ``train_standalone``
runs the very same loop on a single architecture with a model of its own, from
scratch or from the supernet's slices (fine-tuning), keeping the weights of its best
validation (early stopping); that is what the supernet's inherited weights are
compared against.

``python -m nas.train search_space=tiny train=tiny`` is the command-line entry point.
Hydra is imported inside ``main`` only, so the experiments can import this module on
machines without Hydra or Optuna.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from nas.checkpoint import FORMAT, check_space, read_checkpoint, same_space, save_atomic, space_of
from nas.data import CharCorpus, fixed_batches, get_batch, load_corpus
from nas.errors import ConfigError, exit_on_user_error
from nas.model import GPT, Supernet, copy_slices
from nas.outputs import check_folder
from nas.score import TEST_BATCHES, AccuracyScorer, evaluate, split_loss
from nas.signals import held
from nas.space import ArchConfig, SearchSpace, sample

EVAL_BATCH_SIZE = 32  # the scorer's default, so periodic validation matches its numbers
# Settings that may change between a run and its continuation without making it another run.
RESUMABLE_CHANGES = ("steps", "device", "log_every", "eval_every", "patience")


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
        data: path of the training corpus (None: the shipped tiny-shakespeare).
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
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if "distill" in unknown:
            raise ConfigError("train.distill: replaced by train.distill_alpha, the weight of the "
                              "distillation term in [0, 1] (0: off; 1: the old distill=true)")
        if unknown:
            raise ConfigError(f"train: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        kw: dict[str, Any] = {}
        for key, v in d.items():
            kind = type(fields[key].default)
            if key == "data":
                kw[key] = None if v in (None, "") else str(v)
            elif kind is bool:
                if not isinstance(v, bool):
                    raise ConfigError(f"train.{key}: {v!r} must be true or false")
                kw[key] = v
            elif kind in (int, float):
                try:
                    x = float(v) if not isinstance(v, bool) else math.nan
                except (TypeError, ValueError):
                    x = math.nan
                if math.isnan(x) or (kind is int and x != int(x)):
                    raise ConfigError(f"train.{key}: {v!r} must be {'an integer' if kind is int else 'a number'}")
                kw[key] = kind(x)
            else:
                kw[key] = str(v)
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
               amp: Callable[[], contextlib.AbstractContextManager]) -> list[torch.Tensor]:
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
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return losses


def _amp(device: str) -> Callable[[], contextlib.AbstractContextManager]:
    if device == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


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


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def sandwich(space: SearchSpace, rng: random.Random, n_random: int) -> list[ArchConfig]:
    """Largest, smallest and ``n_random`` random sub-networks (fp32), drawn with ``rng``."""
    dev = next(iter(space.precision))  # any device: the drawn precision is replaced by fp32
    return ([space.largest(), space.smallest()]
            + [sample(space, rng, device=dev, precision="fp32") for _ in range(n_random)])


@dataclass
class _Run:
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
        if s["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"]])


def _fit(run: _Run, corpus: CharCorpus, cfg: TrainConfig, device: str,
         val_archs: Mapping[str, ArchConfig], save: Callable[[], None] | None,
         progress: bool, desc: str, track: str | None = None) -> None:
    """The training loop shared by the supernet and standalone models.

    With ``track`` (a key of ``val_archs``), the weights of that network's best
    validation are kept in ``run.best_state``, and training stops once ``cfg.patience``
    validations in a row have not improved on it (0: never early).
    """
    model, block = run.model, run.model.arch.block_size
    amp = _amp(device)
    val_batches = fixed_batches(corpus.val, cfg.eval_batches, EVAL_BATCH_SIZE, block)
    bar = _bar(progress, total=cfg.steps, initial=run.step, desc=desc)
    model.train()
    tokens, pending = 0, []
    run.seconds = 0.0
    t0 = time.perf_counter()
    try:  # closed on a stop too, so that the message after it starts on a line of its own
        while run.step < cfg.steps:
            x, y = get_batch(corpus.train, cfg.batch_size, block, generator=run.data_rng)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            for g in run.opt.param_groups:
                g["lr"] = lr_at(run.step, cfg)
            archs = run.pick()
            pending.append(train_step(model, run.opt, x, y, archs, cfg.distill_alpha, cfg.grad_clip,
                                      amp)[0])
            tokens += x.numel() * len(archs)  # every sub-network pass counts
            run.step += 1
            last = run.step == cfg.steps
            do_eval = last or (cfg.eval_every and run.step % cfg.eval_every == 0)
            if run.step % cfg.log_every and not do_eval:
                continue
            # .item() only here: a sync every step would slow a GPU down.
            _sync(device)
            now = time.perf_counter()
            run.seconds += now - t0
            run.tokens_per_s = tokens / run.seconds
            loss = torch.stack(pending).mean().item()
            pending = []
            row: dict[str, Any] = {"step": run.step, "loss": loss, "lr": lr_at(run.step - 1, cfg),
                                   "tokens_per_s": run.tokens_per_s}
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{run.tokens_per_s:,.0f}")
            bar.update(run.step - bar.n)
            if do_eval:
                model.eval()
                seen: dict[str, float] = {}  # the baseline may be the largest: evaluate it once
                for name, arch in val_archs.items():
                    if arch.arch_id not in seen:
                        seen[arch.arch_id] = evaluate(model, val_batches, arch)
                    row[f"val_{name}"] = seen[arch.arch_id]
                model.train()
                # Validation is a result: stdout; the bar is on stderr.
                bar.write(f"step {run.step}: " + ", ".join(
                    f"val {name} {row[f'val_{name}']:.4f}" for name in val_archs), file=sys.stdout)
                run.history.append(row)
                if save is not None:
                    save()
                if track is not None:
                    if row[f"val_{track}"] < run.best_val:
                        run.best_val, run.best_step = row[f"val_{track}"], run.step
                        run.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    elif cfg.patience and run.step - run.best_step >= cfg.patience * cfg.eval_every:
                        bar.write(f"stopping early at step {run.step}: no better validation since "
                                  f"step {run.best_step}", file=sys.stdout)
                        break
            else:
                run.history.append(row)
            t0 = time.perf_counter()  # evaluation and saving are not training time
    finally:
        bar.close()
    model.eval()


def _checkpoint(run: _Run, space: SearchSpace, corpus: CharCorpus, cfg: TrainConfig) -> dict:
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
    tmp = path.with_name(f".{path.name}.tmp")  # renamed over the log: never half a file
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
    os.replace(tmp, path)


def _run_identity(ckpt_train: Mapping[str, Any], cfg: TrainConfig) -> bool:
    a = {k: v for k, v in ckpt_train.items() if k not in RESUMABLE_CHANGES}
    b = {k: v for k, v in cfg.to_dict().items() if k not in RESUMABLE_CHANGES}
    return a == b


def train_supernet(space: SearchSpace, corpus: CharCorpus, cfg: TrainConfig, out_dir: Path,
                   resume: Path | None = None, progress: bool = True) -> Path:
    """Train the weight-sharing supernet of ``space`` with the sandwich rule.

    Re-running into an ``out_dir`` whose ``supernet.pt`` holds the same space, corpus and
    settings (``steps``, ``device``, ``log_every``, ``eval_every`` may differ) continues
    that run, so an interrupted command resumes by being run again.

    Args:
        space: the search space; the supernet is its largest architecture.
        corpus: training and validation text (``nas.data.load_corpus``).
        cfg: the recipe.
        out_dir: where ``supernet.pt`` and ``log.csv`` go.
        resume: a checkpoint to continue from (its step up to ``cfg.steps``).
        progress: show a progress bar.

    Returns:
        ``out_dir / "supernet.pt"``, saved every ``cfg.eval_every`` steps and at the end.

    Raises:
        ConfigError: a checkpoint of another space or corpus; an ``out_dir`` holding
            another run; a corpus with more characters than the space's vocabulary.
    """
    out_dir = Path(out_dir)
    final = out_dir / "supernet.pt"
    if corpus.vocab_size > space.vocab_size:
        raise ConfigError(f"data: {corpus.path} has {corpus.vocab_size} distinct characters but "
                          f"search space '{space.name}' has vocab_size {space.vocab_size}")
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
            print(f"continuing {final} from step {old['step']}", file=sys.stderr)

    device = resolve_device(cfg.device)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the fp32 parts of autocast
    torch.manual_seed(cfg.seed)
    model = Supernet(space, dropout=cfg.dropout).to(device)
    arch_rng = random.Random(cfg.seed)
    run = _Run(model=model, opt=make_optimizer(model, cfg),
               pick=lambda: sandwich(space, arch_rng, cfg.n_random),
               arch_rng=arch_rng, data_rng=torch.Generator().manual_seed(cfg.seed))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        run.opt.load_state_dict(ckpt["optimizer"])
        run.step, run.history = int(ckpt["step"]), list(ckpt.get("history", []))
        run.tokens_per_s = float(ckpt.get("tokens_per_s", 0.0))
        run.set_rng_state(ckpt["rng"])

    def save() -> None:
        with held():  # a Ctrl-C waits for the checkpoint and its log to be written whole
            save_atomic(_checkpoint(run, space, corpus, cfg), final)
            _write_log(run.history, out_dir / "log.csv")

    if run.step >= cfg.steps:
        if src != final:  # a finished checkpoint from elsewhere: still land it in out_dir
            save()
        return final
    val_archs = {"largest": space.largest(), "smallest": space.smallest()}
    if space.baseline_arch() is not None:  # the reference architecture, tracked as it trains
        val_archs["baseline"] = space.baseline_arch()
    _fit(run, corpus, cfg, device, val_archs, save, progress, desc=f"supernet {space.name}")
    return final


def load_supernet(path: str | Path, space: SearchSpace | None = None,
                  device: str | torch.device = "cpu", corpus: CharCorpus | None = None) -> Supernet:
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


def train_standalone(arch: ArchConfig, corpus: CharCorpus, cfg: TrainConfig, progress: bool = False,
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
    run = _Run(model=model, opt=make_optimizer(model, cfg), pick=lambda: [fp32],
               arch_rng=random.Random(cfg.seed), data_rng=torch.Generator().manual_seed(cfg.seed))
    how = "fine-tune" if init is not None else "alone"
    _fit(run, corpus, cfg, device, {"arch": fp32}, None, progress, desc=f"{how} {arch.arch_id}",
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


def measure_throughput(model: GPT, pick: Callable[[], list[ArchConfig]], corpus: CharCorpus,
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
    opt, amp, gen = make_optimizer(model, cfg), _amp(device), torch.Generator().manual_seed(cfg.seed)
    model.train()
    tokens, t0 = 0, 0.0
    for i in range(warmup_steps + steps):
        if i == warmup_steps:
            _sync(device)
            t0, tokens = time.perf_counter(), 0
        x, y = get_batch(corpus.train, cfg.batch_size, model.arch.block_size, generator=gen)
        archs = pick()
        train_step(model, opt, x.to(device), y.to(device), archs, cfg.distill_alpha, cfg.grad_clip,
                   amp)
        tokens += x.numel() * len(archs)
    _sync(device)
    model.eval()
    return tokens / (time.perf_counter() - t0)


@exit_on_user_error
def _main(cfg: Any) -> Path:
    from omegaconf import OmegaConf

    t0 = time.perf_counter()
    raw = OmegaConf.to_container(cfg, resolve=True)
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
    if raw.get("arch"):  # one architecture (an exported winner, say) trained alone
        arch = ArchConfig.from_yaml(raw["arch"])
        try:
            space.check(arch, resolve_device(tcfg.device))
        except ConfigError as e:
            raise ConfigError(f"arch: {raw['arch']}: {e}; pick search_space=<the space it "
                              "belongs to>") from None
        corpus = load_corpus(tcfg.data, block_size=arch.block_size, vocab_size=arch.vocab_size)
        supernet = None
        if init == "supernet":
            ckpt = (raw.get("supernet") or {}).get("checkpoint")
            if not ckpt:
                raise ConfigError("supernet.checkpoint: init=supernet needs the supernet.pt to "
                                  "inherit from; pass supernet.checkpoint=PATH")
            supernet = load_supernet(ckpt, corpus=corpus)
        name = "finetuned" if supernet is not None else "standalone"
        path = out_dir / f"{name}-{arch.arch_id}.pt"
        print(f"training {arch.describe()} alone on {resolve_device(tcfg.device)}"
              f"{' from the supernet' if supernet is not None else ''}: "
              f"{tcfg.steps} steps, batch {tcfg.batch_size}")
        res = train_standalone(arch, corpus, tcfg, progress=True, n_batches=tcfg.eval_batches,
                               batch_size=EVAL_BATCH_SIZE, save_to=path, init=supernet)
        print(f"kept step {res.best_step} (best validation of {res.steps} steps trained)")
        print(f"validation loss ({tcfg.eval_batches} x {EVAL_BATCH_SIZE} windows, "
              f"{arch.precision}): {res.val_loss:.4f}")
        print(f"test loss ({TEST_BATCHES} x {EVAL_BATCH_SIZE} windows, {arch.precision}): "
              f"{res.test_loss:.4f}")
        print(f"weights: {path}  ({res.params:,} parameters, {res.tokens_per_s:,.0f} tokens/s)")
        return path
    print(f"training the supernet of '{space.name}' on {resolve_device(tcfg.device)}: "
          f"{tcfg.steps} steps, batch {tcfg.batch_size}, sandwich of {2 + tcfg.n_random}")
    path = train_supernet(space, corpus, tcfg, out_dir, resume=resume)
    with held():
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    supernet = load_supernet(path, space, corpus=corpus)
    scorer = AccuracyScorer(supernet, corpus, n_batches=tcfg.eval_batches, batch_size=EVAL_BATCH_SIZE)
    print(f"validation loss ({tcfg.eval_batches} x {EVAL_BATCH_SIZE} windows of "
          f"{space.block_size}, inherited weights, fp32):")
    for name, arch in (("largest", space.largest()), ("smallest", space.smallest())):
        print(f"  {name:8s} {arch.describe():40s} {scorer(arch):.4f}")
    print(f"checkpoint: {path}  (step {supernet.meta['step']}, "
          f"{supernet.meta['tokens_per_s']:,.0f} tokens/s)")
    print(f"wall time: {time.perf_counter() - t0:.1f} s")
    return path


def main() -> None:
    """``python -m nas.train [search_space=NAME] [train=RECIPE] [out_dir=DIR] [resume=CKPT] [arch=YAML]
    [init=scratch|supernet supernet.checkpoint=PT]``.

    With ``arch``, the architecture in that file (an exported winner) is trained alone
    with the recipe instead of the supernet; ``init=supernet`` starts it from the
    supernet's slices (fine-tuning) instead of a random init.
    """
    import hydra  # here, not at the top: library users need no Hydra

    from nas.cli_checks import precheck
    from nas.paths import CONF_DIR
    from nas.signals import stop_cleanly

    precheck(sys.argv[1:], "train")
    with stop_cleanly("kept: the supernet checkpoint of the last evaluation; run the same "
                      "command again to continue (a model trained alone is saved at its end only)"):
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")(_main)()


if __name__ == "__main__":
    main()
