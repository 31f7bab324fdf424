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
from typing import Any, Iterator, Sequence

import numpy as np

from nas.data.documents import Document, read_text
from nas.data.tokenizer import encode_texts
from nas.errors import ConfigError

DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
# Text handed to the tokenizer at once: encoding takes up to about 250 bytes of memory per
# byte of text (dense generated C headers; 40 on average), so 1 MiB keeps the peak near
# 300 MB on a corpus of any size. Pieces of 64 KiB let its threads share one large file.
CHUNK_BYTES = 1 << 20
PIECE_CHARS = 64 << 10


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
    """``text`` in pieces of at most ``max_chars``, encoded as the whole text would be.

    Each cut is before a newline that follows a printable ASCII character: the byte-level
    pre-tokenizer (GPT-2's pattern) always splits there, and BPE merges never cross its
    splits, so the pieces' tokens are the text's. A text without such a newline in a
    whole window (none in practice) is cut at the window's end.
    """
    out, i = [], 0
    while len(text) - i > max_chars:
        j = k = i + max_chars
        while (k := text.rfind("\n", i + 1, k)) > i:
            c = text[k - 1]
            if c < "\x80" and not c.isspace():
                j = k
                break
        out.append(text[i:j])
        i = j
    out.append(text[i:])
    return out


def _batches(docs: Sequence[Document], chunk_bytes: int) -> Iterator[list[tuple[int, str, bool]]]:
    """``(document index, piece, last piece of it)`` in runs of about ``chunk_bytes`` of text.

    Pieces, not documents, are batched: one large file (generated register headers run
    to 14 MB) is encoded a chunk at a time like the rest.
    """
    batch: list[tuple[int, str, bool]] = []
    size = 0
    for i, d in enumerate(docs):
        pieces = _pieces(read_text(d), min(PIECE_CHARS, chunk_bytes))
        for j, piece in enumerate(pieces):
            if batch and size + len(piece) > chunk_bytes:
                yield batch
                batch, size = [], 0
            batch.append((i, piece, j == len(pieces) - 1))
            size += len(piece)
    if batch:
        yield batch


def write_split(tok: Any, docs: Sequence[Document], path: Path, dtype: str, eot: int,
                bar: Any = None, chunk_bytes: int = CHUNK_BYTES) -> list[int]:
    """Encode ``docs`` in order into the shard ``path``, each followed by ``eot``.

    Args:
        tok: the tokenizer.
        docs: the split's documents.
        path: the shard to write (created).
        dtype: a key of :data:`DTYPES`.
        eot: the end-of-text id.
        bar: a tqdm bar advanced by the bytes of the documents written, or None.
        chunk_bytes: text encoded in one parallel call.

    Returns:
        The number of tokens of each document (its end-of-text token not counted).
    """
    counts: list[int] = []
    n = 0  # tokens of the document being written
    np_dtype = DTYPES[dtype]
    with open(path, "wb") as f:
        for batch in _batches(docs, chunk_bytes):
            for (i, _, last), ids in zip(batch, encode_texts(tok, [p for _, p, _ in batch]), strict=True):
                np.asarray(ids, dtype=np_dtype).tofile(f)
                n += len(ids)
                if last:
                    np.asarray([eot], dtype=np_dtype).tofile(f)
                    counts.append(n)
                    n = 0
                    if bar is not None:
                        bar.update(docs[i].bytes)
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
