"""The demonstration corpus: C sources of Debian's linux-source-6.1, pinned, as subword tokens.

One command, offline but for the Debian mirror apt already uses, every step skipped when
its output is there (so it resumes), all outputs under ``.corpus/linux/`` of the checkout
(ignored by git):

1. ``apt-get download linux-source-6.1=<VERSION>`` and check the .deb's sha256;
2. extract the ``*.c`` and ``*.h`` files of the kernel tarball inside it;
3. choose a fixed subset: the files that are UTF-8 text, in the order of a salted hash of
   their paths, until ``--target-mb`` MB (about 110 M tokens at the 2.77 bytes per token
   that a 16k BPE gives on kernel C), so that the bundle fits the 64 MiB a GPU run receives;
4. pack them as ``linux-c-<VERSION>.tar.xz`` (sorted names, fixed owners and times,
   single-threaded xz: the same bytes on every machine);
5. ``nas-data prepare`` the subset, training the byte-level BPE tokenizer (16,384 ids) on
   a sample of the training documents, timed with ``/usr/bin/time -v``;
6. copy ``tokenizer.json`` and ``manifest.json`` here;
7. ``nas-data prepare`` the subset again with that ``tokenizer.json`` (what a GPU machine
   runs), timed too, and check that it gives the same corpus; write ``summary.json``.

On a machine that receives the bundle and this folder's tokenizer (the GPU machine):

    mkdir -p .corpus/linux && tar -xJf linux-c-6.1.176-1.tar.xz -C .corpus/linux
    nas-data prepare .corpus/linux/src --out .corpus/linux/corpus \\
        --tokenizer experiments/corpus_linux/tokenizer.json

gives the corpus whose ``corpus_sha256`` is the one in ``manifest.json`` here.

    python experiments/corpus_linux/run.py
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PACKAGE = "linux-source-6.1"
VERSION = "6.1.176-1"
DEB_SHA256 = "9305d1a151b8e83dcb88aa11361e7b9513f0c252bdf7f5647e4542762d99c094"
SALT = b"corpus_linux bundle\0"  # the subset's order; salted, as the split hashes the same paths


def sh(cmd: str, **kw) -> None:
    print(f"+ {cmd}", file=sys.stderr, flush=True)
    subprocess.run(cmd, shell=True, check=True, executable="/bin/bash", **kw)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(work: Path) -> Path:
    deb = work / f"{PACKAGE}_{VERSION}_all.deb"
    if not deb.is_file():
        work.mkdir(parents=True, exist_ok=True)
        # If the mirror has moved on, the same file is at
        # https://snapshot.debian.org/package/linux/<VERSION>/ (the hash below checks it).
        sh(f"apt-get download {PACKAGE}={VERSION}", cwd=work)
    got = sha256(deb)
    if got != DEB_SHA256:
        sys.exit(f"error: {deb} has sha256 {got}, not the pinned {DEB_SHA256}")
    return deb


def extract(deb: Path, work: Path) -> Path:
    tree = work / "tree"
    if not (tree / ".done").is_file():
        shutil.rmtree(tree, ignore_errors=True)  # a half-extracted tree of an earlier run
        tree.mkdir(parents=True)
        sh(f"dpkg-deb --fsys-tarfile {deb} | tar -xO ./usr/src/{PACKAGE}.tar.xz "
           f"| xz -dc -T1 | tar -x -C {tree} --wildcards '*.c' '*.h'")
        (tree / ".done").touch()
    return tree / PACKAGE


def is_text(raw: bytes) -> bool:
    if b"\0" in raw:
        return False
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def choose(kernel: Path, target_bytes: int) -> tuple[list[str], dict]:
    names = sorted(p.relative_to(kernel).as_posix() for p in kernel.rglob("*")
                   if p.is_file() and p.suffix in (".c", ".h"))
    order = sorted(names, key=lambda n: hashlib.sha256(SALT + n.encode()).digest())
    chosen, total, not_text = [], 0, 0
    for n in order:
        raw = (kernel / n).read_bytes()
        if not is_text(raw):
            not_text += 1
            continue
        if total >= target_bytes:
            break
        chosen.append(n)
        total += len(raw)
    stats = {"files_in_package": len(names), "not_utf8_text": not_text,
             "files": len(chosen), "bytes": total}
    return sorted(chosen), stats


def bundle(kernel: Path, chosen: list[str], work: Path) -> Path:
    src = work / "src"
    out = work / f"linux-c-{VERSION}.tar.xz"
    if out.is_file() and (work / "src.list").is_file() and \
            (work / "src.list").read_text().split() == chosen:
        return out
    shutil.rmtree(src, ignore_errors=True)
    for n in chosen:
        dst = src / n
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kernel / n, dst)
    (work / "src.list").write_text("\n".join(chosen) + "\n")
    tmp = out.with_suffix(".tmp")
    # Deterministic archive: names sorted, owners and times fixed; xz on one thread (its
    # multi-threaded output depends on the thread count).
    sh(f"tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu "
       f"-C {work} -cf - src | xz -9 -T1 > {tmp}")
    os.replace(tmp, out)
    return out


def timed_prepare(work: Path, out: str, flags: str) -> dict:
    """``nas-data prepare`` of the subset into ``work/out`` under ``/usr/bin/time -v``
    (once: run again, the command only checks that the corpus is up to date)."""
    corpus, log = work / out, work / f"{out}.time.txt"
    cmd = f"{sys.executable} -m nas.data prepare {work / 'src'} --out {corpus} {flags}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if (corpus / "manifest.json").is_file():
        sh(f"{cmd} --quiet", cwd=ROOT, env=env)  # up to date, or refused: another input
    else:
        sh(f"/usr/bin/time -v -o {log} {cmd}", cwd=ROOT, env=env)
    text = log.read_text() if log.is_file() else ""

    def field(name: str) -> str:
        m = re.search(rf"{re.escape(name)}: (.+)", text)
        return m.group(1).strip() if m else ""

    m = json.loads((corpus / "manifest.json").read_text())
    return {"command": f"nas-data prepare <bundle>/src --out <corpus> {flags}",
            "wall": field("Elapsed (wall clock) time (h:mm:ss or m:ss)"),
            "peak_rss_mb": round(int(field("Maximum resident set size (kbytes)") or 0) / 1024, 1),
            "cpu_percent": field("Percent of CPU this job got"),
            "corpus_sha256": m["corpus_sha256"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".corpus" / "linux")
    ap.add_argument("--target-mb", type=float, default=310.0,
                    help="text in the bundle, MB (default 310: about 110 M tokens)")
    ap.add_argument("--vocab-size", type=int, default=16384)
    ap.add_argument("--sample-mb", type=float, default=50.0,
                    help="training documents the tokenizer learns from, MB")
    a = ap.parse_args()
    work = a.work.resolve()
    deb = download(work)
    kernel = extract(deb, work)
    chosen, stats = choose(kernel, int(a.target_mb * 1e6))
    tarball = bundle(kernel, chosen, work)
    trained = timed_prepare(work, "corpus", f"--vocab-size {a.vocab_size} --sample-mb {a.sample_mb:g}")
    shutil.copyfile(work / "corpus" / "tokenizer.json", HERE / "tokenizer.json")
    shutil.copyfile(work / "corpus" / "manifest.json", HERE / "manifest.json")
    # What the GPU machine runs: the committed tokenizer on the unpacked bundle.
    given = timed_prepare(work, "corpus_given", f"--tokenizer {(HERE / 'tokenizer.json').relative_to(ROOT)}")
    if given["corpus_sha256"] != trained["corpus_sha256"]:
        sys.exit("error: the corpus prepared with the saved tokenizer differs from the first one")
    m = json.loads((work / "corpus" / "manifest.json").read_text())
    tokens = {s: t["tokens"] for s, t in m["totals"].items()}
    summary = {
        "package": {"name": PACKAGE, "version": VERSION, "sha256": DEB_SHA256},
        "bundle": {"file": tarball.name, "bytes": tarball.stat().st_size,
                   "mib": round(tarball.stat().st_size / 2**20, 2), "sha256": sha256(tarball)},
        "subset": {**stats, "target_bytes": int(a.target_mb * 1e6)},
        "tokens": {**tokens, "total": sum(tokens.values())},
        "documents": {s: t["documents"] for s, t in m["totals"].items()},
        "bytes_per_token": round(stats["bytes"] / sum(tokens.values()), 3),
        "tokenizer": {"vocab_size": m["tokenizer"]["vocab_size"], "sha256": m["tokenizer"]["sha256"],
                      "trained": m["tokenizer"]["trained"]},
        "corpus_sha256": m["corpus_sha256"],
        "prepare": {"training_the_tokenizer": trained, "with_the_saved_tokenizer": given},
        "machine": {"cpus": os.cpu_count()},
    }
    (HERE / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
