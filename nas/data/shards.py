"""Token shards: one flat array of token ids per split, read as a memory map (as nanoGPT).

``train.bin``, ``val.bin`` and ``test.bin`` hold the ids of their documents one after
another, each document followed by the end-of-text token, as raw little-endian
integers with no header (the manifest gives the dtype and the length). ``uint16`` holds
a vocabulary of up to 65,536 ids and halves the disk and page-cache of ``uint32``,
which a larger vocabulary needs (``--dtype uint32``); a vocabulary that does not fit the
dtype asked for is refused, never truncated.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from nas.data.documents import Document, chunks, read_text
from nas.data.tokenizer import encode_texts
from nas.errors import ConfigError

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
# Text handed to the tokenizer at once: its encodings take about 100 bytes per token, so
# 4 MiB of text (about a million tokens) keeps memory near 100 MB on a corpus of any size.
CHUNK_BYTES = 4 << 20


def shard_path(folder: str | Path, split: str) -> Path:
    return Path(folder) / f"{split}.bin"


def check_dtype(n_ids: int, dtype: str, key: str = "--vocab-size") -> None:
    """Refuse a vocabulary whose largest id does not fit ``dtype``."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype: {dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
    limit = int(np.iinfo(DTYPES[dtype]).max) + 1
    if n_ids > limit:
        hint = "; pass --dtype uint32" if dtype == "uint16" else ""
        raise ConfigError(f"{key}: {n_ids} ids do not fit {dtype} shards (at most {limit}){hint}")


def _pieces(text: str, max_chars: int) -> list[str]:
    """``text`` cut after a newline into pieces of at most ``max_chars`` (long files only:
    the tokens of a piece may then differ from the whole file's at the cut)."""
    out, i = [], 0
    while i < len(text):
        j = min(len(text), i + max_chars)
        if j < len(text):
            k = text.rfind("\n", i, j)
            if k > i:
                j = k + 1
        out.append(text[i:j])
        i = j
    return out or [""]


def write_split(tok: Any, docs: Sequence[Document], path: Path, dtype: str, eot: int,
                bar: Any = None, chunk_bytes: int = CHUNK_BYTES) -> list[int]:
    """Encode ``docs`` in order into the shard ``path``, each followed by ``eot``.

    Args:
        tok: the tokenizer.
        docs: the split's documents.
        path: the shard to write (created).
        dtype: a key of :data:`DTYPES`.
        eot: the end-of-text id.
        bar: a tqdm bar advanced by the bytes encoded, or None.
        chunk_bytes: text encoded in one parallel call.

    Returns:
        The number of tokens of each document (its end-of-text token not counted).
    """
    counts: list[int] = []
    np_dtype = DTYPES[dtype]
    with open(path, "wb") as f:
        for run in chunks(list(docs), chunk_bytes):
            texts, owner = [], []
            for i, d in enumerate(run):
                for piece in _pieces(read_text(d), chunk_bytes):
                    texts.append(piece)
                    owner.append(i)
            ids_of: list[list[int]] = [[] for _ in run]
            for i, ids in zip(owner, encode_texts(tok, texts)):
                ids_of[i].extend(ids)
            for ids in ids_of:
                np.asarray(ids + [eot], dtype=np_dtype).tofile(f)
                counts.append(len(ids))
            if bar is not None:
                bar.update(sum(d.bytes for d in run))
    return counts


def open_shard(folder: str | Path, split: str, dtype: str, tokens: int) -> np.memmap:
    """The shard of ``split`` as a read-only memory map of ``tokens`` ids.

    Open it anew for each batch when sampling for long: nanoGPT found that a memmap kept
    open for a whole training leaks memory as its pages are touched.

    Raises:
        ConfigError: missing, or not the length the manifest says (truncated or replaced).
    """
    p = shard_path(folder, split)
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if not p.is_file():
        raise ConfigError(f"train.data: {p} is missing; prepare the corpus again (nas-data prepare)")
    if p.stat().st_size != tokens * itemsize:
        raise ConfigError(f"train.data: {p} holds {p.stat().st_size // itemsize} tokens but its "
                          f"manifest says {tokens}; prepare the corpus again (nas-data prepare)")
    return np.memmap(p, dtype=DTYPES[dtype], mode="r")
