"""One ``hydra.compose`` test per config group of ``conf/config.yaml``, and the error lines."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nas.hydra_cli import compose_config, error_line, register_schema
from nas.paths import CONF_DIR, DATA_ROOT
from nas.search.samplers import SamplerConfig, make_sampler
from nas.search.config import HardwareConfig, ScoreConfig, SearchConfig, SupernetConfig
from nas.search.config import typed as _typed
from nas.space import SearchSpace


def _compose(*overrides: str):
    return compose_config(list(overrides))


def test_defaults_are_the_make_run_search():
    cfg = _compose("search.study_name=x")
    search = _typed(SearchConfig, cfg.search, "search")
    assert search.storage == "sqlite:///outputs/nas.db" and search.n_trials >= 100
    assert _typed(SupernetConfig, cfg.supernet, "supernet").checkpoint is None
    assert _typed(ScoreConfig, cfg.score, "score").n_batches >= 1
    assert cfg.search_space.name == "tiny" and cfg.sampler.name == "nsga2"
    assert cfg.train.steps < 1500  # a short supernet training for `make run`


@pytest.mark.parametrize("name", ["tiny", "shakespeare"])
def test_search_space_group(name):
    cfg = _compose(f"search_space={name}", "search.study_name=x")
    space = SearchSpace.from_dict(OmegaConf.to_container(cfg.search_space))
    assert space.name == name and space.baseline_arch() is not None


@pytest.mark.parametrize("name, device", [("cpu", "cpu"), ("h100", "cuda"), ("h100-graph", "cuda")])
def test_hardware_group(name, device):
    cfg = _compose(f"hardware={name}", "search.study_name=x")
    hw = _typed(HardwareConfig, cfg.hardware, "hardware")
    assert hw.device == device and hw.table.endswith(".csv")
    from nas.latency import LatencyTable  # the committed table loads for its device
    assert LatencyTable.load(DATA_ROOT / hw.table, device=hw.device).device == device


@pytest.mark.parametrize("name, workload", [
    ("cpu", (1, 32, 32, 64, "eager")), ("h100-graph", (1, 128, 128, 256, "graph")),
    ("h200-fused", (32, 512, 256, 1024, "fused"))])
def test_hardware_group_carries_its_workload(name, workload):
    hw = _typed(HardwareConfig, _compose(f"hardware={name}", "search.study_name=x").hardware, "hardware")
    w = hw.workload
    assert (w.batch_size, w.prompt_len, w.new_tokens, w.context, w.mode) == workload
    hw = _typed(HardwareConfig, _compose(f"hardware={name}", "search.study_name=x",
                                         "hardware.workload.batch_size=8").hardware, "hardware")
    assert hw.workload.batch_size == 8 and hw.workload.mode == workload[-1]


@pytest.mark.parametrize("override, expected", [
    ("hardware.workload.batch_size=abc",
     "hardware.workload.batch_size: 'abc' is not allowed; it must be an integer"),
    ("hardware.workload.batch=2",
     "hardware.workload.batch: unknown key; allowed: batch_size, prompt_len, new_tokens, context, mode"),
])
def test_a_bad_workload_override_reads_as_one_line(override, expected):
    with pytest.raises(Exception) as e:
        _compose(override)
    assert error_line(e.value) == expected


@pytest.mark.parametrize("override, expected", [
    ("hardware.workload.batch_size=0", "hardware.workload.batch_size: 0 must be a positive integer"),
    ("hardware.workload.mode=bogus", "hardware.workload.mode: 'bogus' is unknown; allowed: "),
])
def test_a_workload_out_of_range_is_refused_naming_its_key(override, expected):
    from nas.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        _typed(HardwareConfig, _compose(override, "search.study_name=x").hardware, "hardware (cpu)")
    assert str(e.value).startswith(expected)


@pytest.mark.parametrize("name, cls", [("nsga2", "NSGAIISampler"), ("tpe", "TPESampler"),
                                       ("random", "RandomSampler")])
def test_sampler_group(name, cls):
    cfg = _compose(f"sampler={name}", "search.study_name=x")
    sampler = _typed(SamplerConfig, cfg.sampler, "sampler")
    assert sampler.name == name
    assert type(make_sampler(sampler, seed=0)).__name__ == cls


def test_study_name_follows_space_and_hardware():
    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hardware=h100", "search_space=shakespeare"],
                      return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig
    HydraConfig.instance().set_config(cfg)
    assert cfg.search.study_name == "shakespeare-h100"


@pytest.mark.parametrize("override, expected", [
    ("search.seed=abc", "search.seed: 'abc' is not allowed; it must be an integer"),
    ("hardware=nope", "hardware: unknown option 'nope'; available: cpu, h100, h100-fused, h100-graph, h200-fused"),
    ("search.progress=perhaps", "search.progress: 'perhaps' is not allowed; it must be true or false"),
])
def test_composition_errors_read_as_one_line(override, expected):
    with pytest.raises(Exception) as e:
        _compose(override)
    assert error_line(e.value) == expected


def test_broken_yaml_in_a_group_reads_as_one_line(tmp_path):
    (tmp_path / "search_space").mkdir()
    (tmp_path / "search_space" / "bad.yaml").write_text("name: bad\nn_layer: {min: 1\nd_model: [64]\n")
    with pytest.raises(Exception) as e:
        _compose(f"hydra.searchpath=[file://{tmp_path}]", "search_space=bad")
    line = error_line(e.value)
    assert line.startswith(f"{tmp_path}/search_space/bad.yaml, line 3: not valid YAML")
