"""The subword tokenizer of a prepared corpus: byte-level BPE (Hugging Face ``tokenizers``).

Byte-level, as GPT-2's: every byte has a token, so any UTF-8 text encodes without an
unknown token. The end-of-text token separates documents in the shards; a trained
tokenizer has it as id 0, an existing ``tokenizer.json`` must define it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from nas.errors import ConfigError

EOT = "<|endoftext|>"
MIN_VOCAB = 257  # the 256 bytes and the end-of-text token


def _lib() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise ConfigError("tokenizers: the package is not installed; pip install tokenizers") from None
    return tokenizers


def train_bpe(texts: Iterable[str], vocab_size: int, length: int | None = None,
              progress: bool = True) -> Any:
    """A byte-level BPE tokenizer trained on ``texts``.

    Args:
        texts: the training documents (an iterator is fine: it is read once).
        vocab_size: the most ids it may have; a small text gives fewer (no merge is
            invented), so read :func:`vocab_size` of the result.
        length: the number of texts, for the progress bar.
        progress: the library's own progress bar on stderr.

    Returns:
        A ``tokenizers.Tokenizer`` whose id 0 is :data:`EOT`.
    """
    tk = _lib()
    check_vocab_size(vocab_size)
    tok = tk.Tokenizer(tk.models.BPE())
    # add_prefix_space=False: a document's first word encodes as it is, as in GPT-2's data.
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
                                     show_progress=progress)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return tok


def check_vocab_size(n: int) -> None:
    if n < MIN_VOCAB:
        raise ConfigError(f"--vocab-size: {n} is too small; a byte-level BPE needs at least "
                          f"{MIN_VOCAB} (256 bytes and the end-of-text token)")


def load_tokenizer(path: str | Path, key: str = "--tokenizer") -> Any:
    """Read a ``tokenizer.json``; refuse one that is not a tokenizer or lacks :data:`EOT`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{key}: {p} not found; give a tokenizer.json file")
    try:
        tok = _lib().Tokenizer.from_file(str(p))
    except Exception as e:  # noqa: BLE001 - the library raises plain Exceptions for bad files
        raise ConfigError(f"{key}: {p} is not a tokenizers JSON file "
                          f"({str(e).splitlines()[0][:120] if str(e) else e.__class__.__name__})") from None
    if tok.token_to_id(EOT) is None:
        raise ConfigError(f"{key}: {p} has no {EOT} token, which separates documents; "
                          "add it as a special token")
    return tok


def to_json(tok: Any) -> str:
    """The tokenizer as saved: compact, so that its hash does not depend on indentation."""
    return tok.to_str()


def json_sha256(text: str) -> str:
    """sha256 of a tokenizer's JSON (the same tokenizer gives the same hash)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vocab_size(tok: Any) -> int:
    """Ids the model must embed: one past the largest id (special tokens included)."""
    return tok.get_vocab_size(with_added_tokens=True)


def eot_id(tok: Any) -> int:
    return int(tok.token_to_id(EOT))


def encode_texts(tok: Any, texts: list[str]) -> Iterator[list[int]]:
    """Ids of each text, encoded in parallel by the library (Rust threads)."""
    # encode_batch_fast skips the character offsets, which a corpus does not need.
    fast = getattr(tok, "encode_batch_fast", None) or tok.encode_batch
    for enc in fast(texts, add_special_tokens=False):
        yield enc.ids


def describe(tok_json: str) -> dict[str, Any]:
    """The kind of model and pre-tokenizer of a tokenizer's JSON, for the manifest."""
    d = json.loads(tok_json)
    pre = d.get("pre_tokenizer") or {}
    return {"model": (d.get("model") or {}).get("type"), "pre_tokenizer": pre.get("type")}
