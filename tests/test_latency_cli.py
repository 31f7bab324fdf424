"""``python -m nas.latency``: the Hydra config, and one-line errors for bad input."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from helpers import fake_table
from nas.errors import ConfigError
from nas.latency.__main__ import _bare_verb, parse, run

ROOT = Path(__file__).resolve().parents[1]


def _compose(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="latency", overrides=list(overrides))


def test_latency_config_composes_into_a_typed_command():
    c = parse(_compose(), ["build"])
    assert (c.verb, c.workload.device, c.workload.seq_len, c.workload.batch_size) == (
        "build", "cpu", 64, 1)
    assert c.table == Path("latency_tables/cpu-tiny.csv") and c.space.name == "tiny"
    assert c.workload.precisions == ("fp32", "bf16", "int8") and c.timer.cpu_clock == "thread"
    assert c.validate_out == Path("experiments/latency_cpu_tiny")
    assert c.calibration_seed != c.validate_seed
    g = parse(_compose("hardware=h100", "search_space=shakespeare", "latency.mode=graph",
                       "verb=validate"), [])
    assert (g.workload.device, g.workload.seq_len, g.workload.mode) == ("cuda", 256, "graph")
    assert g.table == Path("latency_tables/h100-shakespeare-graph.csv")
    assert g.workload.precisions == ("fp32", "bf16", "fp16")


@pytest.mark.parametrize("overrides, words", [
    (["latency.mode=graph"], "graph"),
    (["latency.precisions=[fp16]"], "fp16"),
    (["latency.seq_len=512"], "exceeds the context"),
    (["latency.threads=2"], "cpu_clock"),
    (["verb=validate", "validate.seed=1000"], "equals calibration.seed"),
    (["calibration.n=2"], "calibration.n"),
    (["latency.batch_size=0"], "latency.batch_size"),
])
def test_bad_settings_name_the_key(overrides, words):
    with pytest.raises(ConfigError, match=words):
        parse(_compose(*overrides), [])


def test_a_workload_override_names_the_decode_table():
    c = parse(_compose("latency.phase=decode", "hardware.workload.batch_size=8"), [])
    assert c.workload.batch_size == 8 and c.target.batch_size == 8
    assert c.table == Path("latency_tables/cpu-tiny-decode-b8-c64.csv")
    g = parse(_compose("hardware=h100-graph", "search_space=shakespeare", "latency.phase=decode",
                       "hardware.workload.context=128", "hardware.workload.prompt_len=64"), [])
    assert (g.workload.seq_len, g.workload.prompt_len, g.workload.mode) == (128, 64, "graph")
    assert g.table == Path("latency_tables/h100-shakespeare-graph-decode-b1-c128.csv")


@pytest.mark.parametrize("override, words", [
    ("hardware.workload.mode=bogus", r"^hardware\.workload\.mode: 'bogus' is unknown; allowed: "),
    ("hardware.workload.batch_size=0", r"^hardware\.workload\.batch_size: 0 must be a positive"),
    ("hardware.workload.context=128", r"^hardware\.workload\.context: 128 exceeds the context of search space 'tiny'"),
])
def test_a_bad_workload_override_is_refused_naming_its_key(override, words):
    with pytest.raises(ConfigError, match=words) as e:
        parse(_compose("latency.phase=decode", override), [])
    assert "\n" not in str(e.value)


def test_predict_prints_the_latency(tmp_path, capsys):
    path = fake_table(tmp_path)
    from helpers import space
    space().make(2, 64, [2, 1], [128, 64], "fp32").to_yaml(tmp_path / "a.yaml")
    c = parse(_compose("verb=predict", f"latency.table={path}", f"predict.arch={tmp_path / 'a.yaml'}"),
              [])
    ms = run(c)
    assert ms > 0 and f"{ms:.4f} ms" in capsys.readouterr().out


def test_bare_verb():
    assert _bare_verb(["validate", "validate.n=5"]) == ["verb=validate", "validate.n=5"]


@pytest.mark.slow
def test_bad_input_exits_non_zero_with_one_line(tmp_path):
    path = fake_table(tmp_path)
    path.write_text(path.read_text().replace("median_ms", "median"))  # a hand-edited header
    arch = tmp_path / "a.yaml"
    arch.write_text("arch: {n_layer: 1, d_model: 32, n_head: [1], d_ff: [64], head_dim: 32, "
                    "block_size: 16}\n")
    cases = [[f"latency.table={tmp_path / 'missing.csv'}"], [f"latency.table={path}"],
             [f"latency.table={path}", "hardware=h100"]]
    for extra in cases:
        r = subprocess.run([sys.executable, "-m", "nas.latency", "predict",
                            f"predict.arch={arch}", *extra], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr
        assert ("missing.csv" in lines[0]) or ("fake.csv" in lines[0])
