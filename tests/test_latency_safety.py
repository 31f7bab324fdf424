"""``python -m nas.latency`` never damages a user's files: it refuses foreign files untouched."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from latency_support import fake_table, space
from nas.errors import ConfigError
from nas.latency import Workload
from nas.latency.build import build_table
from nas.latency.files import json_path
from nas.latency.measure import TimerSettings

ROOT = Path(__file__).resolve().parents[1]
FAST = TimerSettings(repeats=3, warmup=1, window_ms=1.0)
WORK = Workload("cpu", 1, 16, ("fp32", "int8"))


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
