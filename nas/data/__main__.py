"""``nas-data`` (``python -m nas.data``): prepare a corpus for training and the search.

    nas-data prepare SOURCE --out DIR [--vocab-size 16384 | --tokenizer tokenizer.json]
        [--split 0.9 0.05 0.05] [--dtype uint16] [--sample-mb MB] [--skip-bad] [--quiet]

A mistake is one line on stderr and exit status 2, and leaves nothing written.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from nas.errors import OneLineParser, exit_on_user_error

EXAMPLES = """examples:
  nas-data prepare 'texts/**/*.txt' --out corpora/mine
  nas-data prepare src/ --out corpora/code --vocab-size 32768 --sample-mb 200
  nas-data prepare src/ --out corpora/code --tokenizer tokenizer.json
then train and search on it: nas-train train.data=corpora/mine (a space with vocab_size equal to the tokenizer's)
"""


def parser() -> OneLineParser:
    from argparse import RawDescriptionHelpFormatter

    from nas.data.documents import DEFAULT_SPLIT
    from nas.data.shards import DTYPES

    p = OneLineParser(prog="nas-data", description="Prepare text corpora for nas-train and nas-search.",
                      epilog=EXAMPLES, formatter_class=RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    q = sub.add_parser("prepare", epilog=EXAMPLES, formatter_class=RawDescriptionHelpFormatter,
                       help="text files -> tokenizer, token shards per split and a manifest",
                       description="Turn a folder or glob of UTF-8 text files (one document "
                       "each) into a corpus folder: tokenizer.json, train/val/test.bin (token "
                       "ids, memory-mapped) and manifest.json. The split is by document, from "
                       "a hash of its path. Running it again on the same input does nothing.")
    q.add_argument("source", help="a folder (every file under it, dot-files aside) or a quoted glob")
    q.add_argument("--out", required=True, type=Path, help="the corpus folder to create")
    q.add_argument("--vocab-size", type=int, default=16384,
                   help="ids of the byte-level BPE tokenizer trained on the training documents "
                   "(default 16384)")
    q.add_argument("--tokenizer", type=Path, default=None,
                   help="use this tokenizer.json instead of training one (it must define <|endoftext|>)")
    q.add_argument("--sample-mb", type=float, default=None,
                   help="train the tokenizer on at most this many MB of training documents (default: all)")
    q.add_argument("--split", type=float, nargs=3, default=list(DEFAULT_SPLIT),
                   metavar=("TRAIN", "VAL", "TEST"), help="fractions of the documents (default 0.9 0.05 0.05)")
    q.add_argument("--dtype", choices=list(DTYPES), default="uint16",
                   help="of the shards: uint16 holds up to 65536 ids (default), uint32 more")
    q.add_argument("--skip-bad", action="store_true",
                   help="leave out files that are not UTF-8 text (binary, another encoding) with a "
                   "warning, instead of refusing them")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@exit_on_user_error
def _main(argv: list[str]) -> int:
    from nas.data.prepare import PrepareOptions, prepare

    a = parser().parse_args(argv)
    t0 = time.perf_counter()
    opts = PrepareOptions(source=a.source, out=a.out, vocab_size=a.vocab_size, tokenizer=a.tokenizer,
                          sample_mb=a.sample_mb, split=tuple(a.split), dtype=a.dtype,
                          skip_bad=a.skip_bad, progress=not a.quiet)
    out, written = prepare(opts)
    if not written:
        print(f"{out}: up to date (same files, tokenizer and settings); nothing to do")
        return 0
    from nas.data.manifest import read

    m = read(out, "--out")
    totals = ", ".join(f"{s} {t['tokens']:,} tokens ({t['documents']} documents)"
                       for s, t in m["totals"].items())
    print(f"{out}: {totals}; vocabulary {m['tokenizer']['vocab_size']}, {m['dtype']} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def main() -> None:
    """The console script ``nas-data``."""
    from nas.signals import stop_cleanly

    with stop_cleanly("nothing was written; run the command again"):
        sys.exit(_main(sys.argv[1:]))


if __name__ == "__main__":
    main()
