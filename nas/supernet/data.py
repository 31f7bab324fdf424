"""Character-level corpus, split into training, validation and test text.

The vocabulary is every distinct character of the whole file (65 for tiny-shakespeare).
The split is by position, 90/5/5 by default: the first 90% of the characters train,
the next 5% validate (the supernet's periodic validation, the search's accuracy
objective, early stopping) and the last 5% are the test split, which neither training
nor the search ever reads: every final figure (a winner, a baseline, the ground truth
of a ranking) is reported on it. The training part is the same 90% as nanoGPT's
shakespeare-char, whose 10% validation split is here cut in two.

A folder prepared by ``nas-data prepare`` is the other kind of corpus (subword tokens,
split by document, memory-mapped: ``nas.data.corpus.PreparedCorpus``); :func:`load_corpus`
opens either, by what ``train.data`` names, and :class:`Corpus` is what both offer.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np
import torch

from nas.errors import ConfigError
from nas.paths import CORPUS as DEFAULT_CORPUS
SPLIT = (0.90, 0.05, 0.05)  # train, validation, test: fractions of the characters, in order
SPLITS = ("train", "val", "test")


class Corpus(Protocol):
    """What training, scoring and checkpoints read of a corpus, of either kind."""

    path: str

    @property
    def sha256(self) -> str:
        """The corpus's identity: its text file's sha256, or a prepared corpus's."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def split(self) -> tuple[float, float, float]: ...

    def part(self, name: str) -> torch.Tensor | np.ndarray:
        """Token ids of split ``name``: a tensor, or a memory map of a prepared corpus."""

    def record(self) -> dict[str, Any]: ...

    def check_record(self, rec: Mapping[str, Any], what: str) -> None: ...


@dataclass(frozen=True)
class CharCorpus:
    chars: str            # the vocabulary, sorted
    train: torch.Tensor   # (N_train,) int64 token ids
    val: torch.Tensor     # (N_val,) int64 token ids
    test: torch.Tensor    # (N_test,) int64 token ids: for final figures only
    path: str
    sha256: str = ""      # of the file's bytes
    split: tuple[float, float, float] = SPLIT

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def part(self, name: str) -> torch.Tensor:
        """The token ids of split ``name`` (train, val or test)."""
        if name not in SPLITS:
            raise ConfigError(f"split: {name!r} is not a split; allowed: {', '.join(SPLITS)}")
        return getattr(self, name)

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the corpus, to refuse another corpus or split later."""
        return {"chars": self.chars, "path": self.path, "sha256": self.sha256,
                "split": list(self.split)}

    def check_record(self, rec: Mapping[str, Any], what: str) -> None:
        """Refuse a model trained on other text, vocabulary or split than this corpus.

        Args:
            rec: a :meth:`record` stored with the model.
            what: names the model in the message (a checkpoint path, say).

        Raises:
            ConfigError: another vocabulary, another file's contents, or another split
                (a model trained before the test split existed has none recorded).
        """
        if rec.get("kind") == "prepared":
            raise ConfigError(
                f"checkpoint: {what} was trained on the prepared corpus {rec.get('path')} but "
                f"train.data is the character corpus {self.path}; pass train.data={rec.get('path')}")
        if rec.get("chars") != self.chars:
            raise ConfigError(
                f"checkpoint: {what} was trained on {rec.get('path')} ({len(rec.get('chars') or '')} "
                f"distinct characters) but the corpus is {self.path} ({self.vocab_size}); "
                "pass the same train.data")
        split = rec.get("split")
        if split is None or [round(float(s), 6) for s in split] != [round(s, 6) for s in self.split]:
            had = "no recorded split (it predates the test split)" if split is None else f"split {split}"
            raise ConfigError(
                f"checkpoint: {what} was trained with {had} but the corpus is split "
                f"{list(self.split)} (train/val/test); its validation or test text may have been "
                "trained on, so retrain it with this version")
        if rec.get("sha256") and self.sha256 and rec["sha256"] != self.sha256:
            raise ConfigError(
                f"checkpoint: {what} was trained on {rec.get('path')} whose contents differ from "
                f"{self.path} (sha256 {rec['sha256'][:12]} vs {self.sha256[:12]}); pass the same train.data")

    def encode(self, s: str) -> list[int]:
        stoi = {c: i for i, c in enumerate(self.chars)}
        return [stoi[c] for c in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def load_corpus(path: str | Path | None = None, block_size: int = 256,
                vocab_size: int | None = None,
                split: tuple[float, float, float] = SPLIT) -> Corpus:
    """The corpus ``train.data`` names: a prepared folder, or a text file read by character.

    A folder must be a corpus prepared by ``nas-data prepare`` (its split is its own, by
    document, and its vocabulary must be the model's). A UTF-8 text file is split by
    position into train, validation and test, and its characters are the vocabulary.

    Args:
        path: the corpus (default: the shipped tiny-shakespeare).
        block_size: context length; the validation and test splits must each hold more
            than one window.
        vocab_size: the model's vocabulary; a text file may not use more characters, a
            prepared corpus's tokenizer must have exactly this many ids.
        split: fractions of the characters for train, validation and test (sum 1; text
            files only).

    Raises:
        ConfigError: missing file, not UTF-8, too short, too many distinct characters, a
            folder that is not a prepared corpus, or a vocabulary that is not the model's.
    """
    p = Path(path) if path else DEFAULT_CORPUS
    if p.is_dir():
        from nas.data.corpus import load_prepared
        return load_prepared(p, block_size=block_size, vocab_size=vocab_size)
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1) > 1e-9:
        raise ConfigError(f"split: {list(split)} must be three positive fractions "
                          "(train, validation, test) that sum to 1")
    if not p.is_file():
        raise ConfigError(f"train.data: corpus file {p} not found")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"train.data: {p} is not UTF-8 text (bad byte at offset {e.start})") from None
    chars = "".join(sorted(set(text)))
    if vocab_size is not None and len(chars) > vocab_size:
        raise ConfigError(f"train.data: {p} has {len(chars)} distinct characters but the search space "
                          f"has vocab_size {vocab_size}; set vocab_size >= {len(chars)} in the space")
    n_train = int(split[0] * len(text))
    n_val = int((split[0] + split[1]) * len(text))
    smallest = min(n_val - n_train, len(text) - n_val)
    if smallest <= block_size:
        need = int((block_size + 1) / min(split[1:])) + 1
        raise ConfigError(f"train.data: {p} has {len(text)} characters; its validation and test splits "
                          f"({split[1]:.0%} and {split[2]:.0%}) must each be longer than one context "
                          f"window ({block_size}), so at least {need} characters are needed")
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    return CharCorpus(chars=chars, train=ids[:n_train], val=ids[n_train:n_val], test=ids[n_val:],
                      path=str(p), sha256=hashlib.sha256(raw).hexdigest(),
                      split=tuple(float(s) for s in split))


def _windows(data: torch.Tensor | np.ndarray, starts: torch.Tensor, block_size: int,
             device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(B, T)`` and next-token targets ``(B, T)`` of the windows at ``starts``.

    Each window is read once, ``T + 1`` ids long, with one index; a memory map (a prepared
    corpus's shard) is read at those rows only, into int64. With ``device``, the windows
    are there; to a GPU they go through pinned memory without blocking, so the host
    draws the next batch while the GPU still runs the step before.
    """
    rows = starts[:, None] + torch.arange(block_size + 1)  # (B, T + 1)
    if isinstance(data, torch.Tensor):
        w = data[rows]
    else:
        w = torch.from_numpy(data[rows.numpy()].astype(np.int64))
    if device is not None:
        # From pageable memory the driver stages the copy and may make the host wait for
        # the GPU's queue; from pinned memory it is only queued (PyTorch's pinned-memory
        # cache reuses the buffer once the copy has run).
        pin = torch.device(device).type == "cuda"
        w = (w.pin_memory() if pin else w).to(device, non_blocking=pin)
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def get_batch(data: torch.Tensor | np.ndarray, batch_size: int, block_size: int,
              generator: torch.Generator | None = None, rows: slice | None = None,
              device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs ``(B, T)`` and next-token targets ``(B, T)``.

    ``data`` is a split's ids: a tensor, or a memory map (``Corpus.part``) that only the
    windows drawn are read of. With ``rows``, only those rows of the ``batch_size`` drawn
    windows: the generator advances as for the whole batch, so data-parallel ranks
    sharing its seed split one global batch between them (``nas.supernet.distributed``).
    With ``device``, the batch is on it (the same windows: the draw is on the host).
    """
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    if rows is not None:
        ix = ix[rows]
    return _windows(data, ix, block_size, device)


def fixed_batches(data: torch.Tensor | np.ndarray, n_batches: int, batch_size: int,
                  block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic, evenly spaced windows covering the split: the same for every caller."""
    n = n_batches * batch_size
    starts = torch.linspace(0, len(data) - block_size - 1, n).long()
    x, y = _windows(data, starts, block_size)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
