"""``manifest.json``: what a prepared corpus was made of, and its identity.

It lists every source file (name, sha256, bytes, tokens, split) and every file left
out, the tokenizer (its hash, vocabulary, end-of-text id, how it was made), the split
fractions, the shard dtype, the totals of each split and the versions that wrote it.
Two hashes come out of it: :func:`corpus_sha256`, the identity a checkpoint records
(the documents, their tokens and split, the tokenizer, the dtype: not where the corpus
lies nor which version wrote it, so the same corpus prepared on another machine is the
same corpus), and the inputs a re-run compares to decide it has nothing to do
(:func:`same_input`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from nas.data.documents import SPLITS, Document
from nas.errors import ConfigError
from nas.outputs import write_atomic

FORMAT = "nas-corpus/1"
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
REQUIRED = ("format", "tokenizer", "split", "dtype", "totals", "files", "corpus_sha256")


def corpus_sha256(m: Mapping[str, Any]) -> str:
    """The identity of a corpus: its documents, their split and tokens, tokenizer and dtype."""
    core = {"files": [[f["path"], f["sha256"], f["split"], f["tokens"]] for f in m["files"]],
            "tokenizer": m["tokenizer"]["sha256"], "dtype": m["dtype"],
            "split": m["split"]["fractions"]}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def build(source: str, docs: Mapping[str, Sequence[Document]], tokens: Mapping[str, Sequence[int]],
          skipped: Sequence[Document], tokenizer: Mapping[str, Any],
          fractions: Sequence[float], dtype: str) -> dict[str, Any]:
    """The manifest of a corpus just encoded (``tokens[split][i]`` is ``docs[split][i]``'s count)."""
    import nas

    try:
        import tokenizers
        lib = tokenizers.__version__
    except ImportError:  # an existing corpus described without the library
        lib = None
    files = sorted(({"path": d.path, "sha256": d.sha256, "bytes": d.bytes, "tokens": n, "split": s}
                    for s in SPLITS for d, n in zip(docs[s], tokens[s], strict=True)),
                   key=lambda f: f["path"])
    totals = {s: {"documents": len(docs[s]), "bytes": sum(d.bytes for d in docs[s]),
                  # the shard's length: every document's tokens and its end-of-text token
                  "tokens": sum(tokens[s]) + len(docs[s])} for s in SPLITS}
    m: dict[str, Any] = {
        "format": FORMAT,
        "tool": {"latnas": nas.__version__, "tokenizers": lib},
        "source": source,
        "tokenizer": dict(tokenizer),
        "split": {"fractions": [float(f) for f in fractions],
                  "by": "document: sha256 of its path relative to the source"},
        "dtype": dtype,
        "totals": totals,
        "skipped": [{"path": d.path, "sha256": d.sha256, "bytes": d.bytes, "why": d.problem}
                    for d in skipped],
        "files": files,
    }
    m["corpus_sha256"] = corpus_sha256(m)
    return m


def dumps(m: Mapping[str, Any]) -> str:
    """JSON with one line per source file, so that a large corpus's manifest stays readable."""
    head = {k: v for k, v in m.items() if k != "files"}
    text = json.dumps(head, indent=2)
    rows = ",\n".join("    " + json.dumps(f) for f in m["files"])
    return text[:-2] + ',\n  "files": [\n' + rows + "\n  ]\n}\n"


def write(folder: Path, m: Mapping[str, Any]) -> Path:
    return write_atomic(Path(folder) / MANIFEST, lambda f: f.write(dumps(m).encode("utf-8")))


def read(folder: str | Path, key: str) -> dict[str, Any] | None:
    """The manifest of ``folder``; None when it has none.

    Raises:
        ConfigError: a manifest that is not one (unreadable, another format, keys missing).
    """
    p = Path(folder) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{key}: {p} is not a corpus manifest ({e.__class__.__name__})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise ConfigError(f"{key}: {p} is not a corpus manifest (expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in m]
    if missing:
        raise ConfigError(f"{key}: {p} lacks {missing}; prepare the corpus again (nas-data prepare)")
    return m


def same_input(m: Mapping[str, Any], docs: Sequence[Document], tokenizer: Mapping[str, Any],
               fractions: Sequence[float], dtype: str) -> str:
    """What differs between the corpus of ``m`` and the one these inputs would make ("" if nothing).

    Args:
        m: an existing manifest.
        docs: the scanned source files, those left out included.
        tokenizer: ``{"sha256": ...}`` for a given tokenizer, ``{"trained": {...}}`` for one
            to be trained (its settings).
        fractions, dtype: the split and shard dtype asked for.
    """
    had = {f["path"]: f["sha256"] for f in [*m["files"], *m.get("skipped", [])]}
    now = {d.path: d.sha256 for d in docs}
    if had != now:
        changed = sorted({k for k in had.keys() | now.keys() if had.get(k) != now.get(k)})
        return f"{len(changed)} source file(s) differ, e.g. {changed[0]}"
    if "sha256" in tokenizer and tokenizer["sha256"] != m["tokenizer"]["sha256"]:
        return "another tokenizer"
    if "trained" in tokenizer and tokenizer["trained"] != m["tokenizer"].get("trained"):
        return f"another tokenizer training ({tokenizer['trained']} vs {m['tokenizer'].get('trained')})"
    if [float(f) for f in fractions] != m["split"]["fractions"]:
        return f"another split ({list(fractions)} vs {m['split']['fractions']})"
    if dtype != m["dtype"]:
        return f"another dtype ({dtype} vs {m['dtype']})"
    return ""
