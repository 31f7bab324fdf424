"""``nas-data prepare``: a folder or glob of text files into a prepared corpus folder.

The steps, each checked before the next costs anything: find the files, hash and check
every one (UTF-8 text, no NUL byte), split them by document, then train or read the
tokenizer and encode each split into its shard. Everything is written into a new
folder beside the target and renamed into place at the end, so a refused, failed or
interrupted run leaves nothing behind, and a corpus folder is either whole or absent.
Run again on the same input, it finds the manifest up to date and writes nothing.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from nas.data import manifest, tokenizer
from nas.data.documents import (DEFAULT_SPLIT, SPLITS, Document, by_split, check_fractions,
                                find_files, progress_bar, read_text, scan)
from nas.data.shards import check_dtype, shard_path, write_split
from nas.errors import ConfigError
from nas.outputs import check_folder
from nas.signals import held


@dataclass(frozen=True)
class PrepareOptions:
    """What ``nas-data prepare`` was asked for (its flags).

    Attributes:
        source: a folder (every file under it) or a glob of text files.
        out: the prepared corpus folder to create.
        vocab_size: ids of the BPE tokenizer to train (ignored with ``tokenizer``).
        tokenizer: an existing ``tokenizer.json`` to use instead of training one.
        sample_mb: train the tokenizer on at most this many MB of training documents
            (None: all of them); which ones is fixed by a hash of their names.
        split: train, validation and test fractions of the documents.
        dtype: of the shards, ``uint16`` (vocabularies up to 65,536) or ``uint32``.
        skip_bad: leave out files that are not UTF-8 text, with a warning, instead of
            refusing them.
        progress: progress bars on stderr.
    """

    source: str
    out: Path
    vocab_size: int = 16384
    tokenizer: Path | None = None
    sample_mb: float | None = None
    split: tuple[float, float, float] = DEFAULT_SPLIT
    dtype: str = "uint16"
    skip_bad: bool = False
    progress: bool = True


def prepare(opts: PrepareOptions) -> tuple[Path, bool]:
    """Prepare the corpus of ``opts`` (see the module's docstring).

    Returns:
        The corpus folder, and whether anything was written (False: it was up to date).

    Raises:
        ConfigError: an empty input, a file that is not UTF-8 text (without ``skip_bad``),
            a vocabulary too large for the dtype, a split left without documents, or an
            ``out`` that holds something other than this corpus. Nothing is written.
    """
    check_fractions(opts.split)
    if opts.tokenizer is None:  # a given tokenizer's vocabulary is checked once it is read
        tokenizer.check_vocab_size(opts.vocab_size)
        check_dtype(opts.vocab_size, opts.dtype)
    if opts.sample_mb is not None and opts.sample_mb <= 0:
        raise ConfigError(f"--sample-mb: {opts.sample_mb:g} must be > 0 (or left out: all documents)")
    out = Path(opts.out)
    old = _existing(out)
    check_folder(out.parent, "--out")
    root, files = find_files(opts.source)
    # A corpus folder inside its own source (or a temporary one beside it) is no document.
    files = [f for f in files if not _inside(f, out)]
    if not files:
        raise ConfigError(f"source: {opts.source} holds no files besides the corpus folder {out}")
    docs = scan(root, files, opts.progress)
    good, bad = [d for d in docs if not d.problem], [d for d in docs if d.problem]
    if bad and not opts.skip_bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ConfigError(f"source: {bad[0].file} is {bad[0].problem}{more}; pass --skip-bad to "
                          "leave such files out with a warning")
    if not good:
        raise ConfigError(f"source: none of the {len(docs)} files of {opts.source} is UTF-8 text")
    parts = by_split(good, opts.split)
    tok = None
    if opts.tokenizer is not None:
        tok = tokenizer.load_tokenizer(opts.tokenizer)
        check_dtype(tokenizer.vocab_size(tok), opts.dtype, "--tokenizer")
        asked: dict[str, Any] = {"sha256": tokenizer.json_sha256(tokenizer.to_json(tok))}
    else:
        asked = {"trained": {"vocab_size": opts.vocab_size, "sample_mb": opts.sample_mb}}
    if old is not None:
        why = manifest.same_input(old, docs, asked, opts.split, opts.dtype)
        if why:
            raise ConfigError(f"--out: {out} holds a prepared corpus of other input ({why}); give "
                              "another --out, or delete that folder to prepare it again")
        return out, False
    if bad:
        print(f"warning: left out {len(bad)} file(s) that are not UTF-8 text, e.g. {bad[0].file} "
              f"({bad[0].problem}); {manifest.MANIFEST} lists them", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        if tok is None:
            tok = _train(parts["train"], opts)
        _write(tmp, tok, parts, bad, asked, opts)
        with held():  # the rename lands whole, even on Ctrl-C
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only; a corpus is shared
            os.replace(tmp, out)  # out is absent or an empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own uniquely named folder
        raise
    return out, True


def _inside(f: Path, out: Path) -> bool:
    f, out = f.resolve(), out.resolve()
    return f.is_relative_to(out) or (f.parent.name.startswith(f".{out.name}.")
                                     and f.parent.name.endswith(".tmp")
                                     and f.parent.parent == out.parent)


def _existing(out: Path) -> dict[str, Any] | None:
    """The manifest of ``out`` when it is a prepared corpus; None when ``out`` is absent or empty."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file, not a folder; give another path")
    if not out.exists():
        return None
    m = manifest.read(out, "--out")
    if m is None and any(out.iterdir()):
        raise ConfigError(f"--out: {out} exists and is not a prepared corpus (no "
                          f"{manifest.MANIFEST}); give a new or empty folder")
    return m


def _sample(docs: Sequence[Document], sample_mb: float | None) -> list[Document]:
    """Training documents for the tokenizer: all, or a fixed pseudo-random subset of
    ``sample_mb`` MB (ordered by a hash of their names, so not one folder's files only)."""
    if sample_mb is None:
        return list(docs)
    budget, out = sample_mb * 1e6, []
    # Salted: the split hashes the same names, and unsalted the sample would be the
    # training documents nearest the validation boundary rather than any.
    for d in sorted(docs, key=lambda d: hashlib.sha256(b"tokenizer sample\0" + d.path.encode()).digest()):
        if out and budget < d.bytes:
            break
        out.append(d)
        budget -= d.bytes
    return out


def _train(docs: Sequence[Document], opts: PrepareOptions) -> Any:
    sample = _sample(docs, opts.sample_mb)
    print(f"training a byte-level BPE tokenizer of {opts.vocab_size} ids on {len(sample)} training "
          f"documents ({sum(d.bytes for d in sample) / 1e6:.1f} MB)", file=sys.stderr)
    return tokenizer.train_bpe((read_text(d) for d in sample), opts.vocab_size, len(sample),
                               opts.progress)


def _write(folder: Path, tok: Any, parts: dict[str, list[Document]], bad: list[Document],
           asked: dict[str, Any], opts: PrepareOptions) -> None:
    n_ids = tokenizer.vocab_size(tok)
    check_dtype(n_ids, opts.dtype, "--tokenizer" if opts.tokenizer else "--vocab-size")
    text = tokenizer.to_json(tok)
    (folder / manifest.TOKENIZER).write_text(text, encoding="utf-8")
    eot = tokenizer.eot_id(tok)
    counts = {}
    with progress_bar(sum(d.bytes for s in SPLITS for d in parts[s]), "encoding", opts.progress) as bar:
        for s in SPLITS:
            counts[s] = write_split(tok, parts[s], shard_path(folder, s), opts.dtype, eot, bar)
    info = {"sha256": tokenizer.json_sha256(text), "vocab_size": n_ids, "eot_id": eot,
            **tokenizer.describe(text), "trained": asked.get("trained")}
    manifest.write(folder, manifest.build(str(opts.source), parts, counts, bad, info,
                                          opts.split, opts.dtype))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
