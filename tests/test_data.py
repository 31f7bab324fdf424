"""The character corpus: split, vocabulary, batches, and user mistakes."""
from __future__ import annotations

import pytest
import torch

from nas.supernet.data import DEFAULT_CORPUS, SPLIT, fixed_batches, get_batch, load_corpus
from nas.errors import ConfigError


def test_shipped_corpus_split_and_vocab():
    c = load_corpus(block_size=64)
    n = len(c.train) + len(c.val) + len(c.test)
    assert c.vocab_size == 65
    assert len(c.train) == int(0.9 * n)  # the same training text as nanoGPT's 90/10 split
    assert abs(len(c.val) / n - 0.05) < 1e-4 and abs(len(c.test) / n - 0.05) < 1e-4
    assert c.decode(c.encode("To be")) == "To be"
    assert c.path == str(DEFAULT_CORPUS)
    assert c.split == SPLIT == (0.9, 0.05, 0.05)


def test_splits_are_consecutive_and_disjoint(tmp_path):
    p = tmp_path / "c.txt"
    text = "".join(chr(48 + i % 40) for i in range(4000))
    p.write_text(text)
    c = load_corpus(p, block_size=8)
    assert c.decode(torch.cat([c.train, c.val, c.test]).tolist()) == text
    assert (len(c.train), len(c.val), len(c.test)) == (3600, 200, 200)
    assert torch.equal(c.part("test"), c.test)
    with pytest.raises(ConfigError, match="allowed: train, val, test"):
        c.part("holdout")


def test_other_split_or_text_is_refused_by_the_record(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("abcdefgh" * 500)
    c = load_corpus(p, block_size=8)
    c.check_record(c.record(), "m.pt")  # the same corpus and split: accepted
    other = load_corpus(p, block_size=8, split=(0.8, 0.1, 0.1))
    with pytest.raises(ConfigError, match=r"m.pt was trained with split \[0.8, 0.1, 0.1\]"):
        c.check_record(other.record(), "m.pt")
    old = {k: v for k, v in c.record().items() if k != "split"}
    with pytest.raises(ConfigError, match="predates the test split"):
        c.check_record(old, "m.pt")
    q = tmp_path / "d.txt"
    q.write_text("hgfedcba" * 500)  # same characters, other text
    with pytest.raises(ConfigError, match="contents differ"):
        c.check_record(load_corpus(q, block_size=8).record(), "m.pt")


@pytest.mark.parametrize("split", [(0.9, 0.1), (0.9, 0.1, 0.0), (0.5, 0.3, 0.3)])
def test_bad_split_is_refused(tmp_path, split):
    p = tmp_path / "c.txt"
    p.write_text("ab" * 4000)
    with pytest.raises(ConfigError, match="split: .* must be three positive fractions"):
        load_corpus(p, block_size=8, split=split)


def test_batches_are_shifted_by_one():
    c = load_corpus(block_size=64)
    x, y = get_batch(c.train, 4, 64, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])
    a = fixed_batches(c.val, 2, 8, 64)
    b = fixed_batches(c.val, 2, 8, 64)
    assert len(a) == 2 and all(torch.equal(p[0], q[0]) for p, q in zip(a, b))


def test_a_seed_draws_the_windows_at_its_starts():
    """Which windows a seed draws: a training run's data does not change with the reading."""
    c = load_corpus(block_size=64)
    starts = torch.randint(len(c.train) - 64, (4,), generator=torch.Generator().manual_seed(5))
    for device in (None, "cpu"):
        x, y = get_batch(c.train, 4, 64, generator=torch.Generator().manual_seed(5), device=device)
        for row, s in enumerate(starts.tolist()):
            assert torch.equal(x[row], c.train[s:s + 64]) and torch.equal(y[row], c.train[s + 1:s + 65])


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_corpus(tmp_path / "nope.txt")


def test_not_utf8(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\xe9 ".encode("latin-1") * 1000)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_corpus(p)


@pytest.mark.parametrize("chars", [10, 100, 1280])
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
