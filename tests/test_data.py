"""The character corpus: split, vocabulary, batches, and user mistakes."""
from __future__ import annotations

import pytest
import torch

from nas.data import DEFAULT_CORPUS, fixed_batches, get_batch, load_corpus
from nas.errors import ConfigError


def test_shipped_corpus_split_and_vocab():
    c = load_corpus(block_size=64)
    n = len(c.train) + len(c.val)
    assert c.vocab_size == 65
    assert len(c.train) == int(0.9 * n)
    assert abs(len(c.val) / n - 0.1) < 1e-4
    assert c.decode(c.encode("To be")) == "To be"
    assert c.path == str(DEFAULT_CORPUS)


def test_batches_are_shifted_by_one():
    c = load_corpus(block_size=64)
    x, y = get_batch(c.train, 4, 64, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])
    a = fixed_batches(c.val, 2, 8, 64)
    b = fixed_batches(c.val, 2, 8, 64)
    assert len(a) == 2 and all(torch.equal(p[0], q[0]) for p, q in zip(a, b))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_corpus(tmp_path / "nope.txt")


def test_not_utf8(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 ".encode("latin-1") * 1000)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_corpus(p)


@pytest.mark.parametrize("chars", [10, 100, 640])
def test_too_short(tmp_path, chars):
    p = tmp_path / "short.txt"
    p.write_text("ab" * (chars // 2))
    with pytest.raises(ConfigError, match="context window"):
        load_corpus(p, block_size=64)


def test_vocab_larger_than_model(tmp_path):
    p = tmp_path / "wide.txt"
    p.write_text("".join(chr(0x100 + i) for i in range(100)) * 20)
    with pytest.raises(ConfigError, match="vocab_size"):
        load_corpus(p, block_size=8, vocab_size=65)
