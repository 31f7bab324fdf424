"""Character-level corpus, split like nanoGPT's shakespeare-char.

The vocabulary is every distinct character of the whole file (65 for tiny-shakespeare);
the first 90% of the characters train, the last 10% validate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from nas.errors import ConfigError

DEFAULT_CORPUS = Path(__file__).resolve().parent / "data" / "tinyshakespeare.txt"


@dataclass(frozen=True)
class CharCorpus:
    chars: str            # the vocabulary, sorted
    train: torch.Tensor   # (N_train,) int64 token ids
    val: torch.Tensor     # (N_val,) int64 token ids
    path: str

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        stoi = {c: i for i, c in enumerate(self.chars)}
        return [stoi[c] for c in s]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)


def load_corpus(path: str | Path | None = None, block_size: int = 256,
                vocab_size: int | None = None) -> CharCorpus:
    """Read a UTF-8 text file and split it 90/10.

    Args:
        path: the corpus (default: the shipped tiny-shakespeare).
        block_size: context length; both splits must hold more than one window.
        vocab_size: the model's vocabulary; the corpus may not use more characters.

    Raises:
        ConfigError: missing file, not UTF-8, too short, or too many distinct characters.
    """
    p = Path(path) if path else DEFAULT_CORPUS
    if not p.is_file():
        raise ConfigError(f"data.path: corpus file {p} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"data.path: {p} is not UTF-8 text (bad byte at offset {e.start})") from None
    chars = "".join(sorted(set(text)))
    if vocab_size is not None and len(chars) > vocab_size:
        raise ConfigError(f"data.path: {p} has {len(chars)} distinct characters but the search space "
                          f"has vocab_size {vocab_size}; set vocab_size >= {len(chars)} in the space")
    n = int(0.9 * len(text))
    if len(text) - n <= block_size:
        raise ConfigError(f"data.path: {p} has {len(text)} characters; its 10% validation split must be "
                          f"longer than one context window ({block_size}), so at least "
                          f"{10 * (block_size + 1)} characters are needed")
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    return CharCorpus(chars=chars, train=ids[:n], val=ids[n:], path=str(p))


def get_batch(data: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs ``(B, T)`` and next-character targets ``(B, T)``."""
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
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
