"""A prepared corpus as training and scoring read it (``train.data=<folder>``).

The same interface as the character corpus (``nas.supernet.data.CharCorpus``):
``vocab_size``, ``split``, ``part(name)``, ``record()`` and ``check_record()``. A part is a
read-only memory map of its shard, opened anew at each call, so a corpus of any size is
sampled without being read into memory (``nas.supernet.data.get_batch`` takes windows of
it as nanoGPT does). The test part is read only for final figures.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from nas.data import manifest
from nas.data.documents import SPLITS
from nas.data.shards import open_shard
from nas.errors import ConfigError


@dataclass(frozen=True)
class PreparedCorpus:
    path: str                   # the corpus folder
    info: Mapping[str, Any]     # its manifest

    @property
    def vocab_size(self) -> int:
        return int(self.info["tokenizer"]["vocab_size"])

    @property
    def split(self) -> tuple[float, float, float]:
        return tuple(float(f) for f in self.info["split"]["fractions"])  # type: ignore[return-value]

    @property
    def sha256(self) -> str:
        """The corpus's identity (``nas.data.manifest.corpus_sha256``)."""
        return str(self.info["corpus_sha256"])

    def tokens(self, name: str) -> int:
        return int(self.info["totals"][name]["tokens"])

    def part(self, name: str) -> np.memmap:
        """The token ids of split ``name`` (train, val or test), memory-mapped."""
        if name not in SPLITS:
            raise ConfigError(f"split: {name!r} is not a split; allowed: {', '.join(SPLITS)}")
        return open_shard(self.path, name, self.info["dtype"], self.tokens(name))

    def record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the corpus, to refuse another corpus later."""
        return {"kind": "prepared", "path": self.path, "corpus_sha256": self.sha256,
                "tokenizer_sha256": self.info["tokenizer"]["sha256"],
                "vocab_size": self.vocab_size, "split": list(self.split)}

    def check_record(self, rec: Mapping[str, Any], what: str) -> None:
        """Refuse a model trained on another corpus (other documents, tokens, tokenizer or split).

        Args:
            rec: a :meth:`record` (or a character corpus's record) stored with the model.
            what: names the model in the message (a checkpoint path, say).
        """
        if rec.get("kind") != "prepared":
            raise ConfigError(
                f"checkpoint: {what} was trained on the character corpus {rec.get('path')} but "
                f"train.data is the prepared corpus {self.path}; pass train.data={rec.get('path')}")
        if rec.get("corpus_sha256") != self.sha256:
            why = ("another tokenizer" if rec.get("tokenizer_sha256") != self.info["tokenizer"]["sha256"]
                   else "other documents or another split")
            raise ConfigError(
                f"checkpoint: {what} was trained on the prepared corpus {rec.get('path')} "
                f"(corpus {str(rec.get('corpus_sha256'))[:12]}) but train.data is {self.path} "
                f"(corpus {self.sha256[:12]}: {why}); pass the corpus it was trained on")

    @cached_property
    def _tokenizer(self) -> Any:
        from nas.data.tokenizer import load_tokenizer
        return load_tokenizer(Path(self.path) / manifest.TOKENIZER, "train.data")

    def encode(self, s: str) -> list[int]:
        return list(self._tokenizer.encode(s, add_special_tokens=False).ids)

    def decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


def load_prepared(folder: str | Path, block_size: int = 256,
                  vocab_size: int | None = None) -> PreparedCorpus:
    """Open the prepared corpus in ``folder`` (``nas-data prepare``).

    Args:
        folder: the corpus folder.
        block_size: context length; the validation and test parts must each hold more
            than one window.
        vocab_size: the model's vocabulary, which must be the tokenizer's.

    Raises:
        ConfigError: not a prepared corpus, a shard missing or of the wrong length,
            another vocabulary size, or a part too short for one window.
    """
    p = Path(folder)
    info = manifest.read(p, "train.data")
    if info is None:
        raise ConfigError(f"train.data: {p} is a folder but not a prepared corpus (no "
                          f"{manifest.MANIFEST}); make one with: nas-data prepare {p} --out <corpus folder>")
    corpus = PreparedCorpus(path=str(p), info=info)
    if vocab_size is not None and vocab_size != corpus.vocab_size:
        raise ConfigError(f"train.data: {p} has a vocabulary of {corpus.vocab_size} tokens but the "
                          f"search space has vocab_size {vocab_size}; set vocab_size: "
                          f"{corpus.vocab_size} in the space")
    for name in SPLITS:
        corpus.part(name)  # every shard there, of its length
    short = [s for s in SPLITS if corpus.tokens(s) <= block_size + 1]
    if short:
        raise ConfigError(f"train.data: {p}: the {' and '.join(short)} part(s) hold "
                          f"{', '.join(str(corpus.tokens(s)) for s in short)} tokens, not more than "
                          f"one context window ({block_size}); prepare it from more documents or "
                          "with larger --split fractions")
    return corpus
