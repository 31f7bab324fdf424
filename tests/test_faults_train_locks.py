"""The fault matrix of what two processes could write together, of numbers that cannot be
right, and of inputs whose size alone is the attack.

In-process and on the micro space, a second or two each: a held training folder or table
is refused naming its holder; a loss that turns non-finite stops training before it is
saved; hostile checkpoint fields, table rows and table fields are refused in one line;
sizes and shown values are bounded.
"""
from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import MICRO, TEXT
from helpers import SPACE as LAT_SPACE
from helpers import fake_table
from nas.errors import MESSAGE_MAX, ConfigError, exit_on_user_error, shown
from nas.latency import LatencyTable
from nas.latency.files import COLUMNS, json_path
from nas.locks import exclusive, lock_path
from nas.space import ArchConfig, SearchSpace
from nas.supernet.checkpoint import read_checkpoint, save_atomic
from nas.supernet.data import load_corpus
from nas.supernet.recipe import TrainConfig
from nas.supernet.train import train_supernet

ROOT = Path(__file__).resolve().parents[1]


def _train(out: Path, corpus, **kw) -> Path:
    cfg = TrainConfig(**{"steps": 4, "batch_size": 2, "eval_every": 2, "log_every": 1,
                         "eval_batches": 1, "n_random": 0, "device": "cpu", **kw})
    return train_supernet(SearchSpace.from_dict(MICRO), corpus, cfg, out, progress=False)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT * 40)
    return load_corpus(p, block_size=MICRO["block_size"], vocab_size=MICRO["vocab_size"])


# --- locks ------------------------------------------------------------------------------

def test_a_held_place_is_refused_naming_its_holder(tmp_path, corpus):
    lock = tmp_path / ".t.lock"
    with exclusive(lock, "latency.table", "the table t.csv"):
        assert f"pid {os.getpid()}" in lock.read_text()
        with pytest.raises(ConfigError) as e:
            with exclusive(lock, "latency.table", "the table t.csv"):
                pass
        msg = str(e.value)
        assert msg.startswith("latency.table: the table t.csv is in use by pid ") and "\n" not in msg
        assert f"pid {os.getpid()} on " in msg and len(msg) < 400
    assert not lock.exists()  # released: nothing left behind
    with exclusive(lock, "latency.table", "the table t.csv"):
        pass

    # A training folder another run holds: refused before anything is read or written.
    out = tmp_path / "out"
    with exclusive(lock_path(out, folder=True), "out_dir", "the training folder"):
        with pytest.raises(ConfigError, match=r"out_dir: the training folder .* in use by pid"):
            _train(out, corpus)
    assert sorted(p.name for p in out.iterdir()) == []

    # A link planted at the lock's name is not followed (nor its target written).
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    os.symlink(victim, tmp_path / ".x.lock")
    with pytest.raises(ConfigError, match="cannot lock"):
        with exclusive(tmp_path / ".x.lock", "out_dir", "x"):
            pass
    assert victim.read_text() == "mine\n"


def test_a_second_build_of_a_table_is_refused(tmp_path):
    """A real ``nas.latency build`` while another process holds the table."""
    group = tmp_path / "conf" / "search_space"
    group.mkdir(parents=True)
    import yaml
    (group / "lat_micro.yaml").write_text(yaml.safe_dump(LAT_SPACE))
    table = tmp_path / "t.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    with exclusive(lock_path(table), "latency.table", f"the table {table}"):
        r = subprocess.run([sys.executable, "-m", "nas.latency", "build", f"latency.table={table}",
                            "search_space=lat_micro", f"hydra.run.dir={tmp_path}/hydra",
                            f"hydra.searchpath=[file://{tmp_path}/conf]", "latency.seq_len=16",
                            "calibration.n=0", "latency.progress=false"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "latency.table" in lines[0] and f"in use by pid {os.getpid()}" in lines[0]
    assert not table.exists() and not json_path(table).exists()


# --- numbers ----------------------------------------------------------------------------

def test_a_non_finite_loss_stops_training_and_keeps_the_last_finite_checkpoint(
        tmp_path, corpus, monkeypatch):
    # lr=1e30: refused at the first logged step, and no checkpoint at all is saved.
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(_train)(tmp_path / "big", corpus, lr=1e30, min_lr=1e29)
    assert e.value.code == 2 and not (tmp_path / "big" / "supernet.pt").exists()

    # A run that goes non-finite after two checkpoints: the one of step 4 stays.
    out = tmp_path / "out"
    _train(out, corpus)
    kept = (out / "supernet.pt").read_bytes()
    import nas.supernet.loop as loop

    real = loop.train_step

    def diverges(*args, **kw):
        losses = real(*args, **kw)
        return (losses[0] * math.inf, *losses[1:])
    monkeypatch.setattr(loop, "train_step", diverges)
    with pytest.raises(ConfigError, match=r"train: the training loss is (nan|inf) at step 5"):
        _train(out, corpus, steps=8)
    assert (out / "supernet.pt").read_bytes() == kept
    assert read_checkpoint(out / "supernet.pt")["step"] == 4


def test_a_checkpoint_that_no_longer_fits_ends_in_one_line(tmp_path, corpus, monkeypatch, capsys):
    out = tmp_path / "out"
    _train(out, corpus)
    kept = (out / "supernet.pt").read_bytes()
    import nas.supernet.checkpoint as checkpoint

    def full(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(_train)(out, corpus, steps=8)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and err[-1].startswith("error: no space left"), err
    assert "supernet.pt" in err[-1] and "continuing" in err[0] and len(err) == 2
    assert (out / "supernet.pt").read_bytes() == kept
    assert sorted(p.name for p in out.iterdir()) == ["log.csv", "supernet.pt"]  # no temporary file


def test_hostile_checkpoint_fields_are_refused_in_one_line(tmp_path, corpus):
    out = tmp_path / "out"
    path = _train(out, corpus)
    good = torch.load(path, weights_only=True)
    cases = [("step", -1, "'step'"), ("step", "4", "'step'"), ("step", 4.5, "'step'"),
             ("tokens_per_s", float("nan"), "'tokens_per_s'"), ("history", None, "'history'"),
             ("space", "tiny", "'space'"), ("train", [1], "'train'"), ("rng", {}, "'rng'"),
             ("model", [], "'model'"), ("world_size", 0, "'world_size'")]
    for key, value, needle in cases:
        bad = tmp_path / f"bad-{key}.pt"
        save_atomic({**good, key: value}, bad)
        with pytest.raises(ConfigError) as e:
            read_checkpoint(bad)
        assert needle in str(e.value) and len(str(e.value)) < 400, str(e.value)
    # Weights that do not fit the space: refused on resume, not a RuntimeError.
    save_atomic({**good, "model": {"nope": torch.zeros(1)}}, out / "supernet.pt")
    with pytest.raises(ConfigError, match="cannot be resumed"):
        _train(out, corpus, steps=6)


def test_absurd_table_rows_and_mistyped_fields_are_refused(tmp_path):
    table = fake_table(tmp_path)
    text, meta = table.read_text(), json.loads(json_path(table).read_text())
    lines = text.splitlines()

    def with_times(value: str) -> str:
        cells = lines[1].split(",")
        for c in ("median_ms", "p10_ms", "p90_ms"):
            cells[COLUMNS.index(c)] = value
        return "\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n"

    for value, needle in (("1e308", "beyond"), ("-1", "positive"), ("nan", "NaN"),
                          ("inf", "NaN"), ("abc", "not a number"), ("2e6", "beyond")):
        table.write_text(with_times(value))
        with pytest.raises(ConfigError) as e:
            LatencyTable.load(table)
        assert needle in str(e.value) and "line 2" in str(e.value), str(e.value)
    table.write_text(text)
    for section, key, value in (("workload", "batch_size", "one"), ("workload", "seq_len", -3),
                                ("workload", "precisions", "fp32"), ("space", "head_dim", 1.5),
                                ("workload", "threads", [1]), ("fingerprint", "device", None),
                                ("timer", None, "x"), ("calibration", None, [1])):
        m = json.loads(json.dumps(meta))
        if key is None:
            m[section] = value
        else:
            m[section][key] = value
        json_path(table).write_text(json.dumps(m))
        with pytest.raises(ConfigError) as e:
            LatencyTable.load(table)
        msg = str(e.value)
        assert "t.json" in msg or "fake.json" in msg, msg
        assert "\n" not in msg and len(msg) < 400, msg


# --- sizes and shown values -------------------------------------------------------------

def test_sizes_past_the_bounds_are_refused_naming_the_figure():
    arch = {"n_layer": 1, "d_model": 64, "n_head": [1], "d_ff": [64]}
    for key, value, needle in (("d_model", 10 ** 6, "1000000"), ("d_ff", [10 ** 8], "100000000"),
                               ("vocab_size", 10 ** 9, "1000000000"),
                               ("block_size", 10 ** 7, "10000000")):
        with pytest.raises(ConfigError, match=f"{key}: {needle} is beyond"):
            ArchConfig.from_dict({**arch, key: value})
    # Each dimension within bounds, the whole too big: named by its parameter count.
    wide = {"n_layer": 200, "d_model": 32768, "n_head": [1] * 200, "d_ff": [65536] * 200}
    with pytest.raises(ConfigError, match=r"parameters \(.* GiB of fp32 weights\), beyond"):
        ArchConfig.from_dict(wide)
    for key, value in (("d_model", [10 ** 6]), ("d_ff", [10 ** 8]), ("n_layer", {"min": 1, "max": 10 ** 5})):
        with pytest.raises(ConfigError, match="beyond"):
            SearchSpace.from_dict({**MICRO, key: value})
    for name in ("../x", "/abs", ".hidden", "x" * 300, "a\nb"):
        with pytest.raises(ConfigError, match="search space name"):
            SearchSpace.from_dict({**MICRO, "name": name})


def test_a_supernet_larger_than_the_device_is_refused_before_allocation(tmp_path, corpus,
                                                                         monkeypatch):
    import nas.limits

    monkeypatch.setattr(nas.limits, "device_memory", lambda device: 1 << 10)  # a 1 KiB device
    with pytest.raises(ConfigError, match=r"search space 'micro': training its .* parameters "
                                          r"needs at least .* GiB .* more than the 0.0 GiB of cpu"):
        _train(tmp_path / "out", corpus)
    assert not (tmp_path / "out" / "supernet.pt").exists()


def test_shown_values_and_messages_are_bounded(capsys):
    big = "x" * 10 ** 6
    shared = [big]
    for _ in range(30):  # 2**30 references to one string: never expanded to show it
        shared = [shared, shared]
    for value in (big, shared, {str(i): big for i in range(1000)}, 10 ** 5000, b"\0" * 10 ** 6):
        assert len(shown(value)) <= 200
    for value in (big, shared, {"k" * 10 ** 5: 1}):
        with pytest.raises(ConfigError) as e:
            ArchConfig.from_dict({"n_layer": value, "d_model": 64, "n_head": [1], "d_ff": [64]})
        assert len(str(e.value)) < 400
    with pytest.raises(ConfigError) as e:
        ArchConfig.from_dict({"n_layer": 1, "d_model": 64, "n_head": [1], "d_ff": [64], big: 1})
    assert len(str(e.value)) < 700

    def long_message():
        raise ConfigError("key: " + "y" * 10 ** 5 + "\nsecond line")
    with pytest.raises(SystemExit):
        exit_on_user_error(long_message)()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) <= MESSAGE_MAX + 10
