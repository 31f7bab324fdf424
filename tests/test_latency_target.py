"""A hardware target's workload (hardware.workload), the names of its tables, and the CLI's defaults."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nas.errors import ConfigError
from nas.latency.__main__ import parse
from nas.latency.naming import table_path
from nas.latency.target import Target

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("phase, batch, seq, name", [
    ("prefill", 1, 256, "h100-shakespeare-graph.csv"),     # the target's own table
    ("prefill", 1, 128, "h100-shakespeare-graph-b1-t128.csv"),
    ("prefill", 16, 256, "h100-shakespeare-graph-b16-t256.csv"),
    ("decode", 16, 256, "h100-shakespeare-graph-decode-b16-c256.csv"),
])
def test_tables_are_named_by_their_workload(phase, batch, seq, name):
    base = Path("latency_tables/h100-shakespeare-graph.csv")
    assert table_path(base, phase, batch, seq, context=256) == base.with_name(name)
    # From a table of another workload, the same name (its suffix is replaced, not stacked).
    other = base.with_name("h100-shakespeare-graph-decode-b1-c256.csv")
    assert table_path(other, phase, batch, seq, context=-1) == base.with_name(
        name.replace("graph.csv", "graph-b1-t256.csv"))


def test_committed_targets_name_their_workload():
    t = Target.load("h100-graph").resolved(256)
    assert (t.device, t.mode, t.batch_size, t.prompt_len, t.new_tokens, t.context) == (
        "cuda", "graph", 1, 128, 128, 256)
    assert t.table_of("decode", 256, batch_size=16).name == "h100-shakespeare-graph-decode-b16-c256.csv"
    cpu = Target.load("cpu").resolved(64)
    assert cpu.table_of("prefill", 64).name == "cpu-tiny-b1-t32.csv"
    assert cpu.table_of("decode", 64).name == "cpu-tiny-decode-b1-c64.csv"


@pytest.mark.parametrize("workload, words", [
    ({"context": 512}, "context: 512 .* exceeds the search space's context 256"),
    ({"prompt_len": 200, "new_tokens": 100}, "prompt_len 200 .* exceeds the context 256"),
    ({"mode": "jit"}, "mode: 'jit' is unknown"),
    ({"batch_size": 0}, "batch_size: 0 must be a positive integer"),
    ({"batch_size": "one"}, "batch_size: 'one' must be an integer"),
    ({"batch": 2}, "batch: unknown key"),
])
def test_a_bad_workload_names_the_key(workload, words):
    hw = {"device": "cuda", "table": "latency_tables/x.csv", "workload": workload}
    with pytest.raises(ConfigError, match=words) as e:
        Target.from_dict("mine", hw).resolved(256)
    assert str(e.value).startswith("hardware.workload.") and "\n" not in str(e.value)


def test_a_bad_workload_in_a_file_names_the_file(tmp_path):
    (tmp_path / "hardware").mkdir()
    (tmp_path / "hardware" / "mine.yaml").write_text(
        "device: cuda\ntable: latency_tables/x.csv\nworkload:\n  mode: jit\n")
    with pytest.raises(ConfigError, match=r"^conf/hardware/mine.yaml: workload.mode: 'jit'"):
        Target.load("mine", conf_dir=tmp_path)
    (tmp_path / "hardware" / "mine.yaml").write_text("device: cuda\ntable: latency_tables/x.csv\n")
    t = Target.load("mine", conf_dir=tmp_path).resolved(64)  # no workload: the defaults
    assert (t.batch_size, t.mode, t.context, t.prompt_len, t.new_tokens) == (1, "eager", 64, 32, 33)


def test_the_file_and_the_composed_node_give_one_target():
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="latency", overrides=["hardware=h200-fused"])
    node = OmegaConf.to_container(cfg.hardware, resolve=True)
    assert Target.from_dict("h200-fused", node) == Target.load("h200-fused")


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: .*h100-graph"):
        Target.load("tpu")


def _parse(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return parse(compose(config_name="latency", overrides=list(overrides)), [])


def test_the_cli_takes_its_defaults_from_the_targets_workload():
    c = _parse("hardware=h100-graph", "search_space=shakespeare", "latency.phase=decode")
    w = c.workload
    assert (w.mode, w.batch_size, w.seq_len, w.prompt_len, c.new_tokens) == ("graph", 1, 256, 128, 128)
    assert c.table == Path("latency_tables/h100-shakespeare-graph-decode-b1-c256.csv")
    # The eager target's graph tables sit beside its own, as before.
    g = _parse("hardware=h100", "search_space=shakespeare", "latency.mode=graph")
    assert g.table == Path("latency_tables/h100-shakespeare-graph.csv")
    with pytest.raises(ConfigError, match=r"latency.prompt_len: 64 must be .* \(63\)"):
        _parse("latency.phase=decode", "latency.prompt_len=64")


def test_a_missing_table_of_the_target_names_the_command_that_builds_it():
    from nas.latency import CostModel
    from nas.space import load_space

    space = load_space("shakespeare")
    with pytest.raises(ConfigError, match="python -m nas.latency build hardware=h100-graph") as e:
        CostModel.for_target("h100-graph", space, batch_size=4)
    path, cmd = str(e.value).split(":")[0], str(e.value).split("with: ")[1]
    overrides = cmd.split()[4:]  # after "python -m nas.latency build"
    assert _parse(*overrides).table == Path(path)  # the command builds the very table asked for
