"""The documents of a corpus: which files, their checks, and the split each one is in.

Every source file is one document, named by its path relative to the input (a folder,
or the fixed leading folders of a glob). A document's split is a function of that name
alone (a hash of it), so adding or removing other files never moves it, and the same
files give the same split on any machine. Whole documents go to one split: no file is
cut between training and test.
"""
from __future__ import annotations

import glob
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from nas.errors import ConfigError

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT = (0.90, 0.05, 0.05)
READ_CHUNK = 1 << 20


@dataclass(frozen=True)
class Document:
    """One source file as scanned: its name in the corpus, size, hash, and whether it is text."""

    path: str          # relative to the input, with / separators
    file: Path         # where it is read from
    bytes: int
    sha256: str
    problem: str = ""  # why it is not UTF-8 text ("" when it is)


def find_files(source: str) -> tuple[Path, list[Path]]:
    """The input's root folder and its files, in a stable order.

    A folder gives every file under it; a glob (``data/**/*.txt``) the files it matches.
    Names starting with a dot (``.git``, editor files) are skipped in a folder.

    Raises:
        ConfigError: nothing there, or nothing matches.
    """
    p = Path(source)
    if p.is_dir():
        root, files = p, []
        for d, dirs, names in os.walk(p):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            files += [Path(d) / f for f in names if not f.startswith(".")]
        if not files:
            raise ConfigError(f"source: {p} holds no files; give a folder or glob of text files")
    elif glob.has_magic(source):
        parts = Path(source).parts
        fixed = parts[:next(i for i, x in enumerate(parts) if glob.has_magic(x))]
        root = Path(*fixed) if fixed else Path(".")
        files = [Path(f) for f in glob.glob(source, recursive=True) if Path(f).is_file()]
        if not files:
            raise ConfigError(f"source: {source!r} matches no file; give a folder or a glob of text files")
    elif p.is_file():
        raise ConfigError(f"source: {p} is one file; the split is by document (one file each), "
                          "so give the folder or a glob of several files")
    else:
        raise ConfigError(f"source: {p} not found; give a folder or a glob of text files")
    return root, sorted(files, key=lambda f: f.relative_to(root).as_posix())


def scan(root: Path, files: list[Path], progress: bool = True) -> list[Document]:
    """Hash every file and check that it is UTF-8 text (no NUL byte), reading it in chunks."""
    docs = []
    with progress_bar(sum(f.stat().st_size for f in files), "checking files", progress) as b:
        for f in files:
            h, n, problem = hashlib.sha256(), 0, ""
            decoder = _utf8()
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(READ_CHUNK), b""):
                    h.update(chunk)
                    if not problem:
                        problem = _check(chunk, n, decoder)
                    n += len(chunk)
                    b.update(len(chunk))
            if not problem:
                problem = _check(b"", n, decoder, final=True)
            docs.append(Document(f.relative_to(root).as_posix(), f, n, h.hexdigest(), problem))
    return docs


class _Silent:
    """Stands in for a tqdm bar where tqdm is not installed."""

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def progress_bar(total: int, desc: str, progress: bool) -> Any:
    """A tqdm bar of bytes on stderr (a silent one without ``progress``, or without tqdm)."""
    try:  # optional: a GPU machine that prepares the corpus may have only torch and tokenizers
        from tqdm import tqdm
    except ImportError:
        return _Silent()
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=not progress,
                file=sys.stderr, dynamic_ncols=True)


def _utf8():
    import codecs
    return codecs.getincrementaldecoder("utf-8")()


def _check(chunk: bytes, offset: int, decoder, final: bool = False) -> str:
    zero = chunk.find(b"\0")
    if zero >= 0:
        return f"binary (a NUL byte at offset {offset + zero})"
    try:
        decoder.decode(chunk, final=final)
    except UnicodeDecodeError as e:
        return f"not UTF-8 (a bad byte near offset {max(0, offset + e.start)})"
    return ""


def read_text(doc: Document) -> str:
    """The document's text; refused when the file changed since it was scanned."""
    raw = doc.file.read_bytes()
    if len(raw) != doc.bytes or hashlib.sha256(raw).hexdigest() != doc.sha256:
        raise ConfigError(f"source: {doc.file} changed while the corpus was being prepared; "
                          "run the command again")
    return raw.decode("utf-8")


def split_of(path: str, fractions: tuple[float, float, float]) -> str:
    """The split of the document named ``path``: where a hash of the name falls in [0, 1)."""
    u = int.from_bytes(hashlib.sha256(path.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


def check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(s <= 0 for s in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ConfigError(f"--split: {list(fractions)} must be three positive fractions "
                          "(train, validation, test) that sum to 1")


def by_split(docs: list[Document], fractions: tuple[float, float, float]) -> dict[str, list[Document]]:
    """The documents of each split, in the stable order; refused when a split gets none."""
    out: dict[str, list[Document]] = {s: [] for s in SPLITS}
    for d in docs:
        out[split_of(d.path, fractions)].append(d)
    empty = [s for s in SPLITS if not out[s]]
    if empty:
        raise ConfigError(
            f"--split: no document fell into {' and '.join(empty)} ({len(docs)} documents, "
            f"fractions {'/'.join(f'{f:g}' for f in fractions)}); the split is by whole file, "
            "so give more files or larger fractions")
    return out
