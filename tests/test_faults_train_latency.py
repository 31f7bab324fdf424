"""The fault matrix of ``python -m nas.supernet`` and ``python -m nas.latency``.

Every case is a real command run in a folder of its own holding a user's files (a
space, architectures, a corpus, a finished table, notes). A mistake must end in exit
status 2 and one line on stderr naming the key or the file, with no traceback, and
leave every file and folder of the user exactly as it was. The commands run a few at a
time, since most of their cost is starting Python and importing torch. Ctrl-C and
SIGTERM must end a training or a build with a message and 130 / 143, keeping what was
finished and writing nothing by halves.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import MICRO, TEXT
from helpers import SPACE as LAT_SPACE
from helpers import fake_table
from nas.latency import fingerprint
from nas.latency.files import json_path, read_meta
from nas.latency.resume import read_earlier

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
# A folder no one may write to, root included (chmod does not stop root).
UNWRITABLE = "/sys/nas-fault-test/out"
ARCH = {"n_layer": 1, "d_model": 16, "n_head": [1], "d_ff": [32], "precision": "fp32",
        "head_dim": 8, "vocab_size": 65, "block_size": 16}


def user_files(d: Path) -> None:
    """What a user has in the folder a command runs from."""
    group = d / "conf" / "search_space"
    group.mkdir(parents=True)
    (group / "micro.yaml").write_text(yaml.safe_dump(MICRO))
    (group / "lat_micro.yaml").write_text(yaml.safe_dump(LAT_SPACE))
    (group / "binary.yaml").write_bytes(bytes(range(256)) * 2)
    (group / "broken.yaml").write_text("name: broken\nd_model: [64, 128\n")
    (group / "listed.yaml").write_text("- 64\n- 128\n")
    archs = {"good": ARCH, "wide": {**ARCH, "d_model": 100000},
             "deep": {**ARCH, "n_layer": 3, "n_head": [1] * 3, "d_ff": [32] * 3},
             "word": {**ARCH, "n_layer": "three"}, "letters": {**ARCH, "n_head": ["a", "b", "c"]},
             "scalar": {**ARCH, "n_head": 2}, "null": {**ARCH, "d_model": None},
             "extra": {**ARCH, "colour": "red"}}
    for name, a in archs.items():
        (d / f"{name}.yaml").write_text(yaml.safe_dump({"arch": a}))
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 2)
    (d / "listed.yaml").write_text("- 1\n- 2\n")
    (group / "wide_space.yaml").write_text(yaml.safe_dump({**MICRO, "d_model": [10 ** 6]}))
    (group / "wide_ffn.yaml").write_text(yaml.safe_dump({**MICRO, "d_ff": [10 ** 8]}))
    (d / "bomb.yaml").write_text(BOMB)
    (d / "long.yaml").write_text(yaml.safe_dump({"arch": {**ARCH, "n_layer": "x" * 10 ** 6}}))
    (d / "tables").mkdir()
    table = fake_table(d / "tables")
    for name, edit in (("absurd", lambda t: t.replace(t.splitlines()[1], _absurd(t.splitlines()[1]))),
                       ("negative", lambda t: t.replace(t.splitlines()[1], _absurd(t.splitlines()[1], "-1")))):
        (d / "tables" / f"{name}.csv").write_text(edit(table.read_text()))
        meta = json.loads(json_path(table).read_text())
        (d / "tables" / f"{name}.json").write_text(json.dumps({**meta, "table": f"{name}.csv"}))
    meta = json.loads(json_path(table).read_text())
    meta["workload"]["batch_size"] = "one"
    (d / "tables" / "typed.csv").write_text(table.read_text())
    (d / "tables" / "typed.json").write_text(json.dumps(meta))
    (d / "corpus.txt").write_text(TEXT * 40)
    (d / "notes.txt").write_text("my notes\n")
    (d / "folder").mkdir()


# 408 bytes that expand to 9**7 strings: the file size of an alias bomb.
BOMB = "\n".join(["a: &a [" + ",".join(['"xxxxxxxxxx"'] * 9) + "]"] + [
    f"{n}: &{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in zip("abcdef", "bcdefg")]
    + ["arch: {n_layer: *g, d_model: 16, n_head: [1], d_ff: [32]}", ""])


def _absurd(line: str, value: str = "1e308") -> str:
    """A table row whose times are ``value`` ms (median, p10 and p90 alike)."""
    from nas.latency.files import COLUMNS

    cells = line.split(",")
    for c in ("median_ms", "p10_ms", "p90_ms"):
        cells[COLUMNS.index(c)] = value
    return ",".join(cells)


def snapshot(d: Path) -> dict[str, str]:
    """Every file and folder under ``d`` with its hash, Hydra's run folder included: a
    command's checks run before Hydra makes it."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def command(module: str, d: Path, args: list[str]) -> list[str]:
    args = [a.format(d=d) for a in args]
    common = [f"hydra.run.dir={d}/hydra", f"hydra.searchpath=[file://{d}/conf]"]
    if module == "nas.supernet":
        common += [f"out_dir={d}/out", f"train.data={d}/corpus.txt", "search_space=micro"]
    return [sys.executable, "-m", module, *common, *args]  # the case's own settings win


TRAIN = [  # (id, arguments, words the error line must hold)
    ("unknown-key", ["colour=red"], ["colour: unknown key", "allowed: out_dir", "search_space"]),
    ("unknown-train-key", ["train.stepz=3"], ["train.stepz: unknown key", "steps"]),
    ("added-key", ["+colour=red"], ["colour: unknown key"]),
    ("unknown-flag", ["--fast"], ["--fast: unknown option"]),
    ("bare-word", ["fast"], ["'fast'", "key=value"]),
    ("unknown-space", ["search_space=huge"], ["search_space: unknown option 'huge'", "tiny"]),
    ("unknown-recipe", ["train=huge"], ["train: unknown option 'huge'", "tiny"]),
    ("binary-space", ["search_space=binary"], ["binary.yaml", "not UTF-8"]),
    ("broken-space", ["search_space=broken"], ["broken.yaml, line 3", "not valid YAML"]),
    ("listed-space", ["search_space=listed"], ["search_space", "mapping"]),
    ("bad-steps", ["train.steps=abc"], ["train.steps", "'abc'", "an integer"]),
    ("unwritable-out", [f"out_dir={UNWRITABLE}"], ["out_dir", "not writable"]),
    ("file-out", ["out_dir={d}/notes.txt"], ["out_dir", "notes.txt is a file"]),
    ("under-file-out", ["out_dir={d}/notes.txt/run"], ["out_dir", "notes.txt is a file"]),
    ("arch-too-wide", ["arch={d}/wide.yaml"], ["wide.yaml", "'micro'", "d_model 100000",
                                               "allowed [16, 32]"]),
    ("arch-too-deep", ["arch={d}/deep.yaml"], ["deep.yaml", "n_layer 3 (allowed 1..2)"]),
    ("arch-word", ["arch={d}/word.yaml"], ["word.yaml", "n_layer: 'three'", "integer"]),
    ("arch-letters", ["arch={d}/letters.yaml"], ["letters.yaml", "n_head[0]: 'a'"]),
    ("arch-scalar", ["arch={d}/scalar.yaml"], ["scalar.yaml", "n_head: 2", "list"]),
    ("arch-null", ["arch={d}/null.yaml"], ["null.yaml", "d_model: None"]),
    ("arch-extra", ["arch={d}/extra.yaml"], ["extra.yaml", "unknown key(s) ['colour']"]),
    ("arch-binary", ["arch={d}/binary.yaml"], ["binary.yaml", "not UTF-8"]),
    ("arch-list", ["arch={d}/listed.yaml"], ["listed.yaml", "mapping"]),
    ("arch-missing", ["arch={d}/gone.yaml"], ["gone.yaml", "not found"]),
    ("space-huge-width", ["search_space=wide_space"], ["d_model", "1000000", "beyond", "131,072"]),
    ("space-huge-ffn", ["search_space=wide_ffn"], ["d_ff", "100000000", "beyond"]),
    ("arch-alias-bomb", ["arch={d}/bomb.yaml"], ["bomb.yaml", "aliases", "100,000"]),
    ("arch-megabyte-value", ["arch={d}/long.yaml"], ["long.yaml", "n_layer", "an integer"]),
    ("arch-unwritable-out", ["arch={d}/good.yaml", f"out_dir={UNWRITABLE}"],
     ["out_dir", "not writable"]),
]
TABLE = "latency.table={d}/tables/fake.csv"
LATENCY = [
    ("unknown-verb", ["measure"], ["'measure'", "unknown verb", "build, predict, validate"]),
    ("unknown-verb-key", ["verb=measure"], ["verb: 'measure'"]),
    ("unknown-key", ["colour=red"], ["colour: unknown key", "allowed: verb", "hardware"]),
    ("unknown-latency-key", ["latency.repeat=3"], ["latency.repeat: unknown key", "repeats"]),
    ("added-key", ["+latency.repeat=3"], ["latency.repeat: unknown key"]),
    ("unknown-flag", ["--fast"], ["--fast: unknown option"]),
    ("unknown-hardware", ["hardware=tpu"], ["hardware: unknown option 'tpu'", "cpu"]),
    ("binary-space", ["search_space=binary"], ["binary.yaml", "not UTF-8"]),
    ("broken-space", ["search_space=broken"], ["broken.yaml, line 3", "not valid YAML"]),
    ("unwritable-table", ["build", f"latency.table={UNWRITABLE}/t.csv"],
     ["latency.table", "not writable"]),
    ("table-under-file", ["build", "latency.table={d}/notes.txt/t.csv"],
     ["latency.table", "notes.txt is a file"]),
    ("table-is-folder", ["build", "latency.table={d}/folder"], ["latency.table", "folder"]),
    ("unwritable-report", ["validate", TABLE, "search_space=lat_micro", "latency.seq_len=16",
                           f"validate.out={UNWRITABLE}"], ["validate.out", "not writable"]),
    ("report-is-file", ["validate", TABLE, "search_space=lat_micro", "latency.seq_len=16",
                        "validate.out={d}/notes.txt"], ["validate.out", "notes.txt is a file"]),
    ("predict-word", ["predict", TABLE, "predict.arch={d}/word.yaml"],
     ["word.yaml", "n_layer: 'three'"]),
    ("predict-scalar", ["predict", TABLE, "predict.arch={d}/scalar.yaml"],
     ["scalar.yaml", "n_head: 2"]),
    ("predict-null", ["predict", TABLE, "predict.arch={d}/null.yaml"],
     ["null.yaml", "d_model: None"]),
    ("predict-binary", ["predict", TABLE, "predict.arch={d}/binary.yaml"],
     ["binary.yaml", "not UTF-8"]),
    ("predict-alias-bomb", ["predict", TABLE, "predict.arch={d}/bomb.yaml"],
     ["bomb.yaml", "aliases"]),
    ("predict-megabyte-value", ["predict", TABLE, "predict.arch={d}/long.yaml"],
     ["long.yaml", "n_layer", "an integer"]),
    ("predict-absurd-row", ["predict", "latency.table={d}/tables/absurd.csv", "predict.arch={d}/good.yaml"],
     ["absurd.csv", "line 2", "1e+308 ms", "rebuild"]),
    ("predict-negative-row", ["predict", "latency.table={d}/tables/negative.csv",
                              "predict.arch={d}/good.yaml"], ["negative.csv", "line 2", "positive"]),
    ("predict-mistyped-json", ["predict", "latency.table={d}/tables/typed.csv",
                               "predict.arch={d}/good.yaml"], ["typed.json", "batch_size", "'one'"]),
]
CASES = [("nas.supernet", *c) for c in TRAIN] + [("nas.latency", *c) for c in LATENCY]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Run every case, a few at a time: (case id) -> (result, files before, files after)."""

    def one(case):
        module, name, args, _ = case
        d = tmp_path_factory.mktemp(f"{module}-{name}")
        user_files(d)
        before = snapshot(d)
        r = subprocess.run(command(module, d, args), cwd=d, env=ENV, capture_output=True,
                           text=True, timeout=180)
        return r, before, snapshot(d)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip([f"{c[0]}:{c[1]}" for c in CASES], pool.map(one, CASES)))


@pytest.mark.slow
@pytest.mark.parametrize("module, name, args, words", CASES,
                         ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_a_mistake_is_refused_in_one_line_and_changes_nothing(outcomes, module, name, args,
                                                              words):
    r, before, after = outcomes[f"{module}:{name}"]
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(lines[0]) <= 600
    for w in words:
        assert w in lines[0]
    assert after == before


def test_a_resumed_build_with_other_timer_settings_is_refused(tmp_path):
    """A half-built table keeps the timer settings it was started with."""
    group = tmp_path / "conf" / "search_space"
    group.mkdir(parents=True)
    (group / "lat_micro.yaml").write_text(yaml.safe_dump(LAT_SPACE))
    path = fake_table(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:4]))  # stopped after three rows
    meta = read_meta(json_path(path))
    meta.update(complete=False, fingerprint=fingerprint.collect("cpu", 1))
    meta["timer"].update(max_inner=2000, passes=1)
    json_path(path).write_text(json.dumps(meta))
    before = snapshot(tmp_path)
    r = subprocess.run(command("nas.latency", tmp_path, [
        "build", f"latency.table={path}", "search_space=lat_micro", "latency.seq_len=16",
        "latency.precisions=[fp32,int8]", "latency.repeats=3", "latency.window_ms=2.0",
        "latency.warmup=1", "calibration.n=0", "latency.progress=false"]),
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "other timer settings" in lines[0] and "repeats 5 (now 3)" in lines[0]
    assert "window_ms 1.0 (now 2.0)" in lines[0] and "warmup" not in lines[0]
    assert snapshot(tmp_path) == before  # refused before Hydra's run folder, too


def _start(module: str, d: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command(module, d, args), cwd=d, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(cond, p: subprocess.Popen, timeout: float = 90) -> None:
    t0 = time.monotonic()
    while not cond():
        assert p.poll() is None, p.stderr.read()
        assert time.monotonic() - t0 < timeout
        time.sleep(0.05)


def _stop(p: subprocess.Popen, signals: tuple[int, ...]) -> str:
    for i, s in enumerate(signals):
        if i:
            time.sleep(0.02)
        p.send_signal(s)
    _, err = p.communicate(timeout=60)
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("stopped by "), err[-2000:]
    return last


STOPS = [((signal.SIGINT,), 130), ((signal.SIGINT, signal.SIGINT), 130),
         ((signal.SIGTERM,), 143)]
STOP_IDS = ["ctrl-c", "ctrl-c-twice", "sigterm"]


@pytest.mark.slow
@pytest.mark.parametrize("signals, code", STOPS, ids=STOP_IDS)
def test_a_stopped_training_keeps_its_last_checkpoint(tmp_path, signals, code):
    from nas.supernet.checkpoint import read_checkpoint

    user_files(tmp_path)
    out = tmp_path / "out"
    p = _start("nas.supernet", tmp_path, [
        "train.steps=100000", "train.batch_size=2", "train.eval_every=3", "train.log_every=3",
        "train.eval_batches=1", "train.n_random=0", "train.device=cpu"])
    # Stopped after the second checkpoint, so that saving is under way at times.
    _wait_for(lambda: (out / "log.csv").is_file() and len(
        (out / "log.csv").read_text().splitlines()) >= 3, p)
    last = _stop(p, signals)
    assert p.returncode == code and "checkpoint of the last evaluation" in last
    assert sorted(f.name for f in out.iterdir()) == ["log.csv", "supernet.pt"]  # no temporary file
    ckpt = read_checkpoint(out / "supernet.pt")
    log = (out / "log.csv").read_text().splitlines()
    assert ckpt["step"] % 3 == 0 and ckpt["step"] >= 6
    assert log[-1].split(",")[0] == str(ckpt["step"])


@pytest.mark.slow
@pytest.mark.parametrize("signals, code", STOPS, ids=STOP_IDS)
def test_a_stopped_build_keeps_its_rows(tmp_path, signals, code):
    table = tmp_path / "t.csv"
    p = _start("nas.latency", tmp_path, [
        "build", f"latency.table={table}", "latency.precisions=[fp32]", "latency.repeats=2",
        "latency.warmup=0", "latency.window_ms=5", "latency.passes=1", "calibration.n=0",
        "latency.progress=false"])
    _wait_for(lambda: table.is_file() and len(table.read_bytes().splitlines()) >= 3, p)
    last = _stop(p, signals)
    assert p.returncode == code and "rows already measured" in last
    assert sorted(f.name for f in tmp_path.iterdir() if f.name != "hydra") == ["t.csv", "t.json"]
    assert table.read_bytes().endswith(b"\n")  # no half-written row
    earlier = read_earlier(table, passes=False, calibration=False)
    assert len(earlier.rows) >= 2 and not earlier.partial and not earlier.complete
