"""Prepared corpora (``nas-data prepare``): tokenizer, shards, manifest, split by document,
re-runs, one-line refusals that leave nothing behind, and training on one."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from nas.data.__main__ import _main as nas_data
from nas.data.corpus import load_prepared
from nas.data.documents import split_of
from nas.data.manifest import corpus_sha256
from nas.data.prepare import PrepareOptions, prepare
from nas.data.tokenizer import EOT, load_tokenizer
from nas.errors import ConfigError
from nas.supernet.data import fixed_batches, get_batch, load_corpus

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("static int void return struct if else for while unsigned long char const "
         "foo bar baz qux x y z ( ) { } ; = + - * /").split()
VOCAB = 300


def _write_docs(folder: Path, n: int = 40, seed: int = 0) -> list[Path]:
    """``n`` small source-like files in two subfolders, different text each."""
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        p = folder / ("a" if i % 2 else "b") / f"f{i:02d}.c"
        p.parent.mkdir(parents=True, exist_ok=True)
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
                 for _ in range(rng.randint(20, 40))]
        p.write_text(f"/* file {i} */\n" + "\n".join(lines) + "\n", encoding="utf-8")
        paths.append(p)
    return paths


def _opts(src, out, **kw) -> PrepareOptions:
    return PrepareOptions(source=str(src), out=Path(out), vocab_size=kw.pop("vocab_size", VOCAB),
                          progress=False, **kw)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """A corpus of 40 files and its prepared folder (made once)."""
    tmp = tmp_path_factory.mktemp("prepared")
    _write_docs(tmp / "src")
    out, written = prepare(_opts(tmp / "src", tmp / "corpus"))
    assert written
    return tmp / "src", out


def _tree(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _refused(capsys, argv: list[str]) -> str:
    """Run ``nas-data`` in this process; it must exit 2 with one line on stderr."""
    with pytest.raises(SystemExit) as e:
        nas_data(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# --- what a prepared corpus holds --------------------------------------------------------

def test_tokenizer_shards_and_manifest(prepared):
    src, out = prepared
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "test.bin", "tokenizer.json",
                                                    "train.bin", "val.bin"]
    m = json.loads((out / "manifest.json").read_text())
    tok = load_tokenizer(out / "tokenizer.json")
    assert m["tokenizer"]["vocab_size"] == tok.get_vocab_size() == VOCAB
    assert m["tokenizer"]["eot_id"] == tok.token_to_id(EOT) == 0
    assert m["dtype"] == "uint16" and m["tool"]["latnas"] and m["tool"]["tokenizers"]
    assert m["corpus_sha256"] == corpus_sha256(m) and len(m["files"]) == 40
    for split in ("train", "val", "test"):
        files = [f for f in m["files"] if f["split"] == split]
        ids = np.fromfile(out / f"{split}.bin", dtype=np.uint16)
        # The shard is its documents in path order, each followed by the end-of-text token.
        assert m["totals"][split]["tokens"] == len(ids) == sum(f["tokens"] + 1 for f in files)
        assert m["totals"][split]["documents"] == len(files) == int((ids == 0).sum())
        docs = np.split(ids, np.flatnonzero(ids == 0) + 1)[:-1]
        for f, doc in zip(files, docs, strict=True):
            assert len(doc) == f["tokens"] + 1
            assert tok.decode(doc[:-1].tolist()) == (src / f["path"]).read_text()
    import hashlib
    first = m["files"][0]
    assert first["sha256"] == hashlib.sha256((src / first["path"]).read_bytes()).hexdigest()


def test_split_is_by_document_and_test_text_never_trains(prepared, tmp_path):
    src, out = prepared
    m = json.loads((out / "manifest.json").read_text())
    assert {f["split"] for f in m["files"]} == {"train", "val", "test"}
    for f in m["files"]:
        assert f["split"] == split_of(f["path"], (0.9, 0.05, 0.05))
    train = (out / "train.bin").read_bytes()
    for f in m["files"]:
        if f["split"] == "test":  # no test document's tokens appear in the training shard
            tok = load_tokenizer(out / "tokenizer.json")
            ids = np.asarray(tok.encode((src / f["path"]).read_text()).ids, dtype=np.uint16)
            assert ids.tobytes() not in train
    # A document's split depends on its name alone: more files move none of the others.
    _write_docs(tmp_path / "more", n=60)
    bigger, _ = prepare(_opts(tmp_path / "more", tmp_path / "c2"))
    m2 = {f["path"]: f["split"] for f in json.loads((bigger / "manifest.json").read_text())["files"]}
    assert all(m2[f["path"]] == f["split"] for f in m["files"])


def test_rerun_is_a_noop_and_a_given_tokenizer_gives_the_same_corpus(prepared, tmp_path, capsys):
    src, out = prepared
    before = _tree(out)
    assert nas_data(["prepare", str(src), "--out", str(out), "--vocab-size", str(VOCAB), "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert _tree(out) == before
    # The corpus folder's own tokenizer on the same files: the same corpus, anywhere.
    again, written = prepare(_opts(src, tmp_path / "again", tokenizer=out / "tokenizer.json"))
    assert written
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (out, again))
    assert a["corpus_sha256"] == b["corpus_sha256"] and b["tokenizer"]["trained"] is None
    assert (out / "train.bin").read_bytes() == (again / "train.bin").read_bytes()
    assert prepare(_opts(src, out, tokenizer=out / "tokenizer.json")) == (out, False)


def test_large_files_are_encoded_in_pieces_as_whole_files_would_be(prepared, tmp_path, monkeypatch):
    import nas.data.shards as shards
    from nas.data.documents import find_files, scan

    src, out = prepared
    tok = load_tokenizer(out / "tokenizer.json")
    monkeypatch.setattr(shards, "PIECE_CHARS", 200)  # every file cut into several pieces (lines are shorter)
    docs = scan(*find_files(str(src)), progress=False)
    counts = shards.write_split(tok, docs, tmp_path / "x.bin", "uint16", 0, chunk_bytes=500)
    whole = [tok.encode(d.file.read_text()).ids for d in docs]
    assert min(len(shards._pieces(d.file.read_text(), 200)) for d in docs) >= 4
    assert counts == [len(ids) for ids in whole]
    assert np.fromfile(tmp_path / "x.bin", dtype=np.uint16).tolist() == [i for ids in whole for i in [*ids, 0]]


def test_a_corpus_folder_inside_its_source_is_no_document(tmp_path):
    _write_docs(tmp_path / "src")
    out, _ = prepare(_opts(tmp_path / "src", tmp_path / "src" / "corpus"))
    assert len(json.loads((out / "manifest.json").read_text())["files"]) == 40
    assert prepare(_opts(tmp_path / "src", out)) == (out, False)


def test_uint32_shards_and_a_glob(tmp_path):
    _write_docs(tmp_path / "src")
    (tmp_path / "src" / "notes.txt").write_text("not matched by the glob\n")
    out, _ = prepare(_opts(f"{tmp_path}/src/**/*.c", tmp_path / "c", dtype="uint32"))
    m = json.loads((out / "manifest.json").read_text())
    assert m["dtype"] == "uint32" and len(m["files"]) == 40
    assert m["files"][0]["path"].startswith(("a/", "b/"))  # relative to the glob's fixed folders
    c = load_prepared(out, block_size=8, vocab_size=VOCAB)
    assert c.part("train").dtype == np.uint32 and len(c.part("val")) == m["totals"]["val"]["tokens"]


def test_skip_bad_leaves_files_out_with_a_warning(tmp_path, capsys):
    _write_docs(tmp_path / "src")
    (tmp_path / "src" / "a" / "blob.bin").write_bytes(b"\x7fELF\x00\x01\x02")
    out, _ = prepare(_opts(tmp_path / "src", tmp_path / "c", skip_bad=True))
    err = capsys.readouterr().err
    assert "warning: left out 1 file(s)" in err and "blob.bin" in err
    m = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in m["skipped"]] == ["a/blob.bin"] and "NUL" in m["skipped"][0]["why"]
    assert prepare(_opts(tmp_path / "src", tmp_path / "c", skip_bad=True)) == (out, False)


# --- refusals: one line, exit 2, nothing written -------------------------------------------

def _bad_binary(src: Path) -> None:
    (src / "a" / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")


def _bad_latin1(src: Path) -> None:
    (src / "b" / "legacy.c").write_bytes("/* caf\xe9 */\n".encode("latin-1"))


@pytest.mark.parametrize("case, match", [
    ("empty folder", "holds no files"),
    ("glob matching nothing", "matches no file"),
    ("binary file", "image.png is binary"),
    ("not UTF-8", "legacy.c is not UTF-8"),
    ("vocabulary too large for uint16", "70000 ids do not fit uint16 shards"),
    ("out is not a corpus", "is not a prepared corpus"),
    ("out holds another corpus", "holds a prepared corpus of other input"),
    ("a split gets no document", "no document fell into"),
    ("tokenizer without end-of-text", "has no <|endoftext|> token"),
    ("one file", "is one file"),
])
def test_refusal_is_one_line_and_leaves_nothing(tmp_path, capsys, prepared, case, match):
    src, out = tmp_path / "src", tmp_path / "out"
    _write_docs(src)
    args = ["prepare", str(src), "--out", str(out), "--vocab-size", str(VOCAB), "--quiet"]
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        args[1] = str(tmp_path / "empty")
    elif case == "glob matching nothing":
        args[1] = f"{src}/**/*.rs"
    elif case == "binary file":
        _bad_binary(src)
    elif case == "not UTF-8":
        _bad_latin1(src)
    elif case == "vocabulary too large for uint16":
        args[5] = "70000"
    elif case == "out is not a corpus":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "out holds another corpus":
        prepare(_opts(src, out))
        (src / "a" / "f01.c").write_text("changed\n")
    elif case == "a split gets no document":
        args += ["--split", "0.98", "0.01", "0.01"]
    elif case == "tokenizer without end-of-text":
        d = json.loads((prepared[1] / "tokenizer.json").read_text())
        d["added_tokens"] = []
        del d["model"]["vocab"][EOT]
        (tmp_path / "tok.json").write_text(json.dumps(d))
        args += ["--tokenizer", str(tmp_path / "tok.json")]
    elif case == "one file":
        args[1] = str(src / "a" / "f01.c")
    before = _tree(tmp_path)
    capsys.readouterr()
    line = _refused(capsys, args)
    assert match in line, line
    assert _tree(tmp_path) == before  # no corpus, no temporary folder, nothing changed


def test_cli_refusal_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    (tmp_path / "empty").mkdir()
    p = subprocess.run([sys.executable, "-m", "nas.data", "prepare", str(tmp_path / "empty"),
                        "--out", str(tmp_path / "c")], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == f"error: source: {tmp_path / 'empty'} holds no files; give a folder or glob of text files"
    assert sorted(os.listdir(tmp_path)) == ["empty"]


# --- reading a prepared corpus ---------------------------------------------------------

def test_load_corpus_picks_by_path_and_checks_the_vocabulary(prepared, tmp_path):
    _, out = prepared
    c = load_corpus(out, block_size=16, vocab_size=VOCAB)
    assert c.vocab_size == VOCAB and c.split == (0.9, 0.05, 0.05)
    assert c.decode(c.encode("static int x;")) == "static int x;"
    with pytest.raises(ConfigError, match=r"^train.data: .* vocabulary of 300 tokens .* vocab_size 65; "
                                          r"set vocab_size: 300"):
        load_corpus(out, block_size=16, vocab_size=65)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ConfigError, match="not a prepared corpus .* nas-data prepare"):
        load_corpus(tmp_path / "plain")
    with pytest.raises(ConfigError, match=r"the val and test part\(s\) hold"):
        load_corpus(out, block_size=4096, vocab_size=VOCAB)
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in out.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    (cut / "val.bin").write_bytes((out / "val.bin").read_bytes()[:-2])
    with pytest.raises(ConfigError, match="val.bin holds .* manifest says"):
        load_corpus(cut, vocab_size=VOCAB, block_size=16)


def test_batches_of_a_memory_map_equal_those_of_a_tensor(prepared):
    c = load_prepared(prepared[1], block_size=16)
    mm = c.part("train")
    t = torch.from_numpy(np.asarray(mm, dtype=np.int64))
    a = get_batch(mm, 8, 16, generator=torch.Generator().manual_seed(0))
    b = get_batch(t, 8, 16, generator=torch.Generator().manual_seed(0))
    assert all(x.dtype == torch.int64 and torch.equal(x, y) for x, y in zip(a, b))
    on = get_batch(mm, 8, 16, generator=torch.Generator().manual_seed(0), device="cpu")
    assert all(x.is_contiguous() and torch.equal(x, y) for x, y in zip(on, a))  # same windows
    assert torch.equal(a[0][:, 1:], a[1][:, :-1])
    for (x1, y1), (x2, y2) in zip(fixed_batches(c.part("val"), 2, 4, 16), fixed_batches(
            torch.from_numpy(np.asarray(c.part("val"), dtype=np.int64)), 2, 4, 16)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_checkpoint_is_refused_with_another_corpus(prepared, tmp_path, micro_corpus):
    from conftest import MICRO
    from nas.space import SearchSpace
    from nas.supernet.score import AccuracyScorer
    from nas.supernet.recipe import TrainConfig
    from nas.supernet.train import load_supernet, train_supernet

    src, out = prepared
    space = SearchSpace.from_dict({**MICRO, "vocab_size": VOCAB})
    corpus = load_corpus(out, block_size=space.block_size, vocab_size=VOCAB)
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=0, eval_batches=1, device="cpu")
    ckpt = train_supernet(space, corpus, cfg, tmp_path / "sn", progress=False)
    saved = torch.load(ckpt, weights_only=True)["corpus"]
    assert saved["kind"] == "prepared" and saved["corpus_sha256"] == corpus.sha256
    AccuracyScorer(load_supernet(ckpt, space, corpus=corpus), corpus, n_batches=1)  # its own: fine
    # The same files with a tokenizer trained otherwise: another corpus.
    other, _ = prepare(_opts(src, tmp_path / "other", sample_mb=0.02))
    with pytest.raises(ConfigError, match=r"prepared corpus .* another tokenizer"):
        load_supernet(ckpt, space, corpus=load_corpus(other, block_size=16, vocab_size=VOCAB))
    with pytest.raises(ConfigError, match="train.data is the character corpus"):
        load_supernet(ckpt, corpus=micro_corpus)
    char_ckpt = train_supernet(SearchSpace.from_dict(MICRO), micro_corpus, cfg, tmp_path / "c",
                               progress=False)
    with pytest.raises(ConfigError, match="trained on the character corpus"):
        load_supernet(char_ckpt, corpus=corpus)


def test_train_command_on_a_prepared_corpus(prepared, tmp_path):
    """``nas-train train.data=<folder>``: the tiny space with the tokenizer's vocabulary."""
    _, out = prepared
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    common = [sys.executable, "-m", "nas.supernet", f"hydra.run.dir={tmp_path}/hydra",
              f"out_dir={tmp_path}/sn", f"train.data={out}", "train.steps=3", "train.batch_size=2",
              "train.eval_every=0", "train.eval_batches=1", "train.device=cpu"]
    p = subprocess.run([*common, f"search_space.vocab_size={VOCAB}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    ckpt = torch.load(tmp_path / "sn" / "supernet.pt", weights_only=True)
    assert ckpt["step"] == 3 and ckpt["corpus"]["path"] == str(out)
    assert ckpt["space"]["vocab_size"] == VOCAB and "validation loss" in p.stdout
    p = subprocess.run(common, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: train.data: {out} has a vocabulary of {VOCAB} tokens but the search space has "
        f"vocab_size 65; set vocab_size: {VOCAB} in the space"]


def test_the_search_trains_and_scores_its_supernet_on_a_prepared_corpus(prepared, tmp_path):
    """``nas-search train.data=<folder>``: the cached supernet and the scorer read the folder."""
    from conftest import MICRO
    from nas.search.setup import cached_supernet
    from nas.space import SearchSpace
    from nas.supernet.score import AccuracyScorer
    from nas.supernet.recipe import TrainConfig
    from nas.supernet.train import load_supernet

    space = SearchSpace.from_dict({**MICRO, "vocab_size": VOCAB})
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=0, eval_batches=1, device="cpu",
                      data=str(prepared[1]))
    ckpt = cached_supernet(space, cfg, tmp_path / "cache", progress=False)
    corpus = load_corpus(cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    loss = AccuracyScorer(load_supernet(ckpt, space, corpus=corpus), corpus, n_batches=1)(space.smallest())
    assert 0 < loss < 2 * np.log(VOCAB)


def test_the_search_trains_a_new_supernet_for_another_corpus_at_the_same_path(tmp_path):
    """The supernet cache follows the corpus's contents, not its path."""
    from conftest import MICRO, TEXT
    from nas.search.setup import cached_supernet
    from nas.space import SearchSpace
    from nas.supernet.recipe import TrainConfig

    text = tmp_path / "corpus.txt"
    space = SearchSpace.from_dict(MICRO)
    cfg = TrainConfig(steps=1, batch_size=2, eval_every=0, eval_batches=1, device="cpu",
                      data=str(text))
    text.write_text(TEXT * 20)
    first = cached_supernet(space, cfg, tmp_path / "cache", progress=False)
    assert cached_supernet(space, cfg, tmp_path / "cache", progress=False) == first  # reused
    text.write_text(TEXT.lower() * 20)  # another text at the same path
    second = cached_supernet(space, cfg, tmp_path / "cache", progress=False)
    assert second.parent != first.parent and second.is_file()
