"""Character-level corpus, split into training, validation and test text.

The vocabulary is every distinct character of the whole file (65 for tiny-shakespeare).
The split is by position, 90/5/5 by default: the first 90% of the characters train,
the next 5% validate (the supernet's periodic validation, the search's accuracy
objective, early stopping) and the last 5% are the test split, which neither training
nor the search ever reads: every final figure (a winner, a baseline, the ground truth
of a ranking) is reported on it. The training part is the same 90% as nanoGPT's
shakespeare-char, whose 10% validation split is here cut in two.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from nas.errors import ConfigError
from nas.paths import CORPUS as DEFAULT_CORPUS
SPLIT = (0.90, 0.05, 0.05)  # train, validation, test: fractions of the characters, in order
SPLITS = ("train", "val", "test")


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
        if rec.get("chars") != self.chars:
            raise ConfigError(
                f"checkpoint: {what} was trained on {rec.get('path')} ({len(rec.get('chars') or '')} "
                f"distinct characters) but the corpus is {self.path} ({self.vocab_size}); "
                "pass the same data path")
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
                f"{self.path} (sha256 {rec['sha256'][:12]} vs {self.sha256[:12]}); pass the same data path")

    def encode(self, s: str) -> list[int]:
        stoi = {c: i for i, c in enumerate(self.chars)}
        return [stoi[c] for c in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def load_corpus(path: str | Path | None = None, block_size: int = 256,
                vocab_size: int | None = None,
                split: tuple[float, float, float] = SPLIT) -> CharCorpus:
    """Read a UTF-8 text file and split it by position into train, validation and test.

    Args:
        path: the corpus (default: the shipped tiny-shakespeare).
        block_size: context length; the validation and test splits must each hold more
            than one window.
        vocab_size: the model's vocabulary; the corpus may not use more characters.
        split: fractions of the characters for train, validation and test (sum 1).

    Raises:
        ConfigError: missing file, not UTF-8, too short, or too many distinct characters.
    """
    if len(split) != 3 or any(s <= 0 for s in split) or abs(sum(split) - 1) > 1e-9:
        raise ConfigError(f"data.split: {list(split)} must be three positive fractions "
                          "(train, validation, test) that sum to 1")
    p = Path(path) if path else DEFAULT_CORPUS
    if not p.is_file():
        raise ConfigError(f"data.path: corpus file {p} not found")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"data.path: {p} is not UTF-8 text (bad byte at offset {e.start})") from None
    chars = "".join(sorted(set(text)))
    if vocab_size is not None and len(chars) > vocab_size:
        raise ConfigError(f"data.path: {p} has {len(chars)} distinct characters but the search space "
                          f"has vocab_size {vocab_size}; set vocab_size >= {len(chars)} in the space")
    n_train = int(split[0] * len(text))
    n_val = int((split[0] + split[1]) * len(text))
    smallest = min(n_val - n_train, len(text) - n_val)
    if smallest <= block_size:
        need = int((block_size + 1) / min(split[1:])) + 1
        raise ConfigError(f"data.path: {p} has {len(text)} characters; its validation and test splits "
                          f"({split[1]:.0%} and {split[2]:.0%}) must each be longer than one context "
                          f"window ({block_size}), so at least {need} characters are needed")
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    return CharCorpus(chars=chars, train=ids[:n_train], val=ids[n_train:n_val], test=ids[n_val:],
                      path=str(p), sha256=hashlib.sha256(raw).hexdigest(),
                      split=tuple(float(s) for s in split))


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None,
              rows: slice | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs ``(B, T)`` and next-character targets ``(B, T)``.

    With ``rows``, only those rows of the ``batch_size`` drawn windows: the generator
    advances as for the whole batch, so data-parallel ranks sharing its seed split one
    global batch between them (``nas.supernet.distributed``).
    """
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    if rows is not None:
        ix = ix[rows]
    offs = torch.arange(block_size)
    x = data[ix[:, None] + offs]
    y = data[ix[:, None] + offs + 1]
    return x, y


def fixed_batches(data: torch.Tensor, n_batches: int, batch_size: int,
                  block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic, evenly spaced windows covering the split: the same for every caller."""
    n = n_batches * batch_size
    starts = torch.linspace(0, len(data) - block_size - 1, n).long()
    offs = torch.arange(block_size)
    x = data[starts[:, None] + offs]
    y = data[starts[:, None] + offs + 1]
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
