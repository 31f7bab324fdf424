"""``python -m nas.latency`` keeps a user's data safe: it refuses foreign files untouched,
leaves a finished table byte-identical when it has nothing to measure, and never
predicts an architecture outside the table's space."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import fake_table, space
from nas.errors import ConfigError
from nas.latency import Workload
from nas.latency import build as build_mod
from nas.latency.__main__ import parse, run
from nas.latency.build import build_table
from nas.latency.files import json_path
from nas.latency.measure import TimerSettings
from nas.search.setup import tables_sha256

ROOT = Path(__file__).resolve().parents[1]
FAST = TimerSettings(repeats=3, warmup=1, window_ms=1.0)
WORK = Workload("cpu", 1, 16, ("fp32", "int8"))
# A six-row slice of the tiny space, timed briefly in two passes, with a correction.
MICRO = ["search_space.d_model=[64]", "search_space.n_head=[1,2]", "search_space.d_ff=[128,256]",
         "search_space.n_layer.max=2", "search_space.baseline=null", "latency.seq_len=16",
         "latency.precisions=[fp32]", "latency.repeats=2", "latency.warmup=0",
         "latency.window_ms=0.5", "latency.passes=2", "calibration.n=4", "latency.progress=false"]


def digests(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` and its SHA-256."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def latency(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nas.latency", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
    return lines[0]


@pytest.mark.parametrize("content", [
    b"a,b\n1,2",  # a user's CSV whose last line has no line end
    bytes(range(256)) * 3,  # binary
])
def test_build_refuses_a_foreign_file_at_the_table_path_untouched(tmp_path, content):
    path = tmp_path / "u.csv"
    path.write_bytes(content)
    before = digests(tmp_path)
    r = latency("build", f"latency.table={path}", "calibration.n=0", "latency.progress=false")
    line = one_error_line(r)
    assert str(path) in line and "expected the header 'kind,d_model," in line
    assert digests(tmp_path) == before  # same bytes, and no JSON or other file beside it


@pytest.mark.parametrize("name, kwargs", [
    ("t.json", {}),
    ("t.calib.csv", {"calibration_n": 4}),
    ("t.passes.csv", {"timer": TimerSettings(repeats=3, warmup=1, window_ms=1.0, passes=2)}),
])
def test_build_refuses_a_foreign_file_beside_the_table_untouched(tmp_path, name, kwargs):
    (tmp_path / name).write_text('{"notes": "mine"}\n' if name.endswith(".json") else "x,y\n1,2")
    before = digests(tmp_path)
    timer = kwargs.pop("timer", FAST)
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")) as e:
        build_table(tmp_path / "t.csv", space(), WORK, timer, calibration_n=kwargs.get(
            "calibration_n", 0), progress=False, log=lambda s: None)
    assert "\n" not in str(e.value)
    assert digests(tmp_path) == before


def test_build_refusing_another_machines_table_leaves_its_partial_line(tmp_path):
    path = fake_table(tmp_path)  # measured on a CPU called "test"
    path.write_bytes(path.read_bytes() + b"ffn,64,0,128,fp")  # as if its build was killed
    before = digests(tmp_path)
    with pytest.raises(ConfigError, match="refusing to mix"):
        build_table(path, space(), WORK, FAST, calibration_n=0, progress=False,
                    log=lambda s: None)
    assert digests(tmp_path) == before
    assert json_path(path).exists()


@pytest.fixture(scope="module")
def cli_table(tmp_path_factory) -> Path:
    """A table built by ``python -m nas.latency build``, as a user would."""
    path = tmp_path_factory.mktemp("built") / "t.csv"
    r = latency("build", f"latency.table={path}", *MICRO)
    assert r.returncode == 0, r.stderr
    return path


def copy_of(table: Path, folder: Path) -> Path:
    for f in table.parent.glob(f"{table.stem}.*"):
        shutil.copy(f, folder / f.name)
    return folder / table.name


def in_process(path: Path, *overrides: str):
    """``python -m nas.latency build`` run in this process (to watch what it writes)."""
    root = str(ROOT / "conf")
    with initialize_config_dir(version_base="1.3", config_dir=root):
        cfg = compose(config_name="latency",
                      overrides=["verb=build", f"latency.table={path}", *MICRO, *overrides])
    return run(parse(cfg, []))


def micro_arch():
    """An architecture of the space :data:`MICRO` builds a table for."""
    from nas.space import load_space
    return load_space("tiny").make(2, 64, [2, 1], [256, 128], "fp32")


def test_build_with_nothing_to_measure_leaves_the_table_byte_identical(cli_table, tmp_path):
    path = copy_of(cli_table, tmp_path)
    before, sha = digests(tmp_path), tables_sha256(path)
    assert set(before) == {"t.csv", "t.json", "t.passes.csv", "t.calib.csv"}
    r = latency("build", f"latency.table={path}", *MICRO)
    assert r.returncode == 0, r.stderr
    assert digests(tmp_path) == before
    assert tables_sha256(path) == sha  # the hash a study checks before it resumes
    assert "nothing to measure" in r.stdout


@pytest.mark.parametrize("overrides", [
    [],
    ["latency.passes=1", "latency.repeats=5"],  # the rows stand as they were measured
])
def test_build_with_nothing_to_measure_never_marks_the_table_unfinished(
        cli_table, tmp_path, monkeypatch, overrides):
    path = copy_of(cli_table, tmp_path)
    before = digests(tmp_path)
    written = []
    monkeypatch.setattr(build_mod, "write_meta", lambda p, meta: written.append(dict(meta)))
    table = in_process(path, *overrides)
    assert written == [] and digests(tmp_path) == before
    assert table.predict_ms(micro_arch()) > 0


def test_build_asking_another_correction_of_a_finished_table_is_refused_untouched(
        cli_table, tmp_path):
    path = copy_of(cli_table, tmp_path)
    before = digests(tmp_path)
    with pytest.raises(ConfigError, match=r"calibration none of fp32 \(table: n=4 seed=1000\)"):
        in_process(path, "calibration.n=0")
    assert digests(tmp_path) == before


def test_unfinished_build_with_nothing_left_to_measure_is_finished_in_one_write(
        cli_table, tmp_path, monkeypatch):
    path = copy_of(cli_table, tmp_path)  # as if killed after its last measurement
    meta = json.loads(json_path(path).read_text())
    json_path(path).write_text(json.dumps({**meta, "complete": False}))
    rows = {f: f.read_bytes() for f in tmp_path.glob("t.*csv")}
    written = []
    real = build_mod.write_meta
    monkeypatch.setattr(build_mod, "write_meta",
                        lambda p, m: written.append(m["complete"]) or real(p, m))
    in_process(path)
    assert written == [True]
    assert json.loads(json_path(path).read_text())["complete"] is True
    assert {f: f.read_bytes() for f in tmp_path.glob("t.*csv")} == rows


@pytest.mark.parametrize("arch, meta_edit, words", [
    ((3, 64, [1, 1, 1], [64, 64, 64], "fp32"), {}, "n_layer 3"),
    ((1, 32, [1], [64], "fp32"), {"d_model": [64]}, "d_model 32"),  # its rows are there
    ((1, 32, [1], [64], "int8"), {"precisions": ["fp32"]}, "precision 'int8'"),  # and here
])
def test_predict_refuses_an_architecture_outside_the_tables_space(tmp_path, arch, meta_edit, words):
    path = fake_table(tmp_path)
    meta = json.loads(json_path(path).read_text())
    meta["workload" if "precisions" in meta_edit else "space"].update(meta_edit)
    json_path(path).write_text(json.dumps(meta))
    space().make(*arch).to_yaml(tmp_path / "a.yaml")
    r = latency("predict", f"latency.table={path}", f"predict.arch={tmp_path / 'a.yaml'}")
    line = one_error_line(r)
    assert words in line and str(path) in line and r.stdout == ""
