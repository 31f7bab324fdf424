"""The table of the machine at hand (nas.latency.local): a CPU target's table measured on
another CPU is replaced by this machine's, cached by its fingerprint; one named explicitly
is used with a warning."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nas.latency.local import local_table, machine_key
from nas.paths import TABLES_DIR
from nas.space import load_space


def _copy(src: Path, dst: Path, cpu_model: str | None = None) -> Path:
    """The committed cpu-tiny table at ``dst``, its fingerprint's CPU renamed if asked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    meta = json.loads(src.with_suffix(".json").read_text())
    if cpu_model is not None:
        meta["fingerprint"]["cpu_model"] = cpu_model
    dst.with_suffix(".json").write_text(json.dumps(meta))
    return dst


@pytest.fixture
def space():
    return load_space("tiny")


def test_a_table_of_this_machine_is_used_as_it_is(tmp_path, space):
    mine = _copy(TABLES_DIR / "cpu-tiny.csv", tmp_path / "t" / "cpu-tiny.csv")
    from nas.latency.fingerprint import cpu_model
    meta = json.loads(mine.with_suffix(".json").read_text())
    meta["fingerprint"]["cpu_model"] = cpu_model()
    mine.with_suffix(".json").write_text(json.dumps(meta))
    got = local_table(mine, local=True, default=mine, space=space, cache_dir=tmp_path / "cache")
    assert got.path == mine and got.note is None


def test_the_default_table_of_another_cpu_gives_way_to_this_machines_cached_one(tmp_path, space):
    other = _copy(TABLES_DIR / "cpu-tiny.csv", tmp_path / "t" / "cpu-tiny.csv", "Another CPU")
    cached = tmp_path / "cache" / machine_key("cpu", 1) / "cpu-tiny.csv"
    _copy(TABLES_DIR / "cpu-tiny.csv", cached)
    got = local_table(other, local=True, default=other, space=space, cache_dir=tmp_path / "cache")
    assert got.path == cached and str(cached) in got.note


def test_a_table_of_another_cpu_named_explicitly_is_used_with_a_warning(tmp_path, space):
    other = _copy(TABLES_DIR / "cpu-tiny.csv", tmp_path / "t" / "theirs.csv", "Another CPU")
    default = tmp_path / "t" / "cpu-tiny.csv"
    for local in (True, False):
        got = local_table(other, local=local, default=default, space=space,
                          cache_dir=tmp_path / "cache")
        assert got.path == other
        assert got.note.startswith("warning: ") and "nas-latency check" in got.note
        assert "'Another CPU'" in got.note and "\n" not in got.note
    assert not (tmp_path / "cache").exists()  # nothing measured
