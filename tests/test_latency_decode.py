"""Decode tables, peak memory and whole requests: real (tiny) measurements on this CPU."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from helpers import space
from nas.errors import ConfigError
from nas.latency import CostModel, LatencyTable, Workload
from nas.latency.__main__ import _main
from nas.latency.build import build_table
from nas.latency.check import check
from nas.latency.files import json_path, memory_path
from nas.latency.measure import TimerSettings
from nas.latency.memory_measure import measure_peak
from nas.latency.validate import validate

ROOT = Path(__file__).resolve().parents[1]
FAST = TimerSettings(repeats=2, warmup=1, window_ms=0.5)
PRECS = ("fp32", "int8")
# The tiny space cut down to the micro space of helpers.SPACE, for the command line.
MICRO = ["search_space.block_size=16", "search_space.d_model=[32,64]", "search_space.n_head=[1,2]",
         "search_space.d_ff=[64,128]", "search_space.n_layer.max=2", "search_space.baseline=null"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """A prefill table of 8-token prompts and a decode table at context 16 (micro space)."""
    d = tmp_path_factory.mktemp("decode")
    kw = dict(calibration_n=4, calibration_seed=11, command="pytest", progress=False,
              log=lambda s: None)
    pre = build_table(d / "m-b1-t8.csv", space(), Workload("cpu", 1, 8, PRECS), FAST, **kw)
    dec = build_table(d / "m-decode-b1-c16.csv", space(),
                      Workload("cpu", 1, 16, PRECS, phase="decode", prompt_len=8), FAST, **kw)
    return pre, dec


def test_decode_table_records_its_phase_and_a_memory_model(tables):
    _, dec = tables
    meta = json.loads(json_path(dec.path).read_text())
    assert meta["workload"]["phase"] == "decode" and meta["workload"]["prompt_len"] == 8
    assert set(meta["memory"]["fit"]) == set(PRECS)
    rows = pd.read_csv(memory_path(dec.path))
    assert len(rows) == 8 and (rows["peak_bytes"] > rows["weights_bytes"]).all()
    again = LatencyTable.load(dec.path, space=space(), phase="decode", seq_len=16)
    assert again.phase == "decode" and again.memory is not None
    arch = space().largest("int8")
    assert again.predict_ms(arch) > 0 and again.memory.peak_bytes(arch) > 0


def test_a_table_of_another_phase_is_refused_with_the_command_that_builds_it(tables):
    pre, dec = tables
    with pytest.raises(ConfigError, match="phase decode .asked prefill.") as e:
        LatencyTable.load(dec.path, phase="prefill")
    assert "python -m nas.latency build" in str(e.value)
    with pytest.raises(ConfigError, match="latency.phase=decode.*latency.batch_size=16"):
        LatencyTable.load(pre.path, phase="decode", batch_size=16, seq_len=16)
    with pytest.raises(ConfigError, match="a prefill table given as the decode table"):
        CostModel(prefill=pre, decode=pre)


def test_cost_model_composes_a_request(tables):
    pre, dec = tables
    costs = CostModel(prefill=pre, decode=dec)
    arch = space().make(2, 64, [2, 1], [128, 64], "fp32")
    assert math.isclose(costs.request_ms(arch, 8, 9), pre.predict_ms(arch) + 8 * dec.predict_ms(arch))
    assert costs.ttft_ms(arch) == costs.prefill_ms(arch) == pre.predict_ms(arch)
    assert costs.peak_memory_mb(arch) == pytest.approx(dec.memory.peak_bytes(arch) / 2**20)
    assert set(costs.costs(arch)) == {"prefill_ms", "decode_ms", "peak_memory_mb"}
    with pytest.raises(ConfigError, match="needs a KV cache of 17"):
        costs.request_ms(arch, 8, 10)  # 8 + 10 - 1 tokens in a cache of 16
    with pytest.raises(ConfigError, match="prompts of 8 tokens, not 4.*latency.seq_len=4"):
        costs.ttft_ms(arch, 4)
    # Deeper and wider costs more per token and more memory.
    big, small = space().largest("fp32"), space().smallest("fp32")
    assert costs.decode_ms(big) > costs.decode_ms(small)
    assert costs.peak_memory_mb(big) > costs.peak_memory_mb(small)


def test_validate_reports_memory_and_requests(tables, tmp_path):
    pre, dec = tables
    s = validate(dec, space(), PRECS, n=4, seed=12, timer=FAST, out_dir=tmp_path, noise_models=0,
                 progress=False, log=lambda s: None, prefill=pre, requests=2, new_tokens=9)
    mem = pd.read_csv(tmp_path / "memory.csv")
    req = pd.read_csv(tmp_path / "requests.csv")
    assert len(mem) == 8 and len(req) == 4
    assert (req["measured_ms"] > req["measured_ttft_ms"]).all()  # a request outlasts its prefill
    assert set(s["memory"]["precisions"]) == set(PRECS) and "goal_met" in s["request"]["precisions"]["fp32"]
    assert s["goal"]["within_5"] == 0.80  # decode tables are held to the share within 5% too
    text = (tmp_path / "summary.md").read_text()
    assert "Peak memory" in text and "Whole requests" in text


def test_peak_memory_grows_with_the_cache_it_holds():
    arch = space().make(2, 64, [2, 2], [128, 128], "fp32")
    small = measure_peak(arch, batch_size=1, prompt_len=4, context=8, device="cpu")
    large = measure_peak(arch, batch_size=4, prompt_len=4, context=16, device="cpu")
    cache_gain = 2 * 2 * 2 * 32 * 4 * (4 * 16 - 8)  # k and v, 2 layers, 2 heads x 32, fp32
    assert small["peak_bytes"] > small["weights_bytes"] > 0
    assert large["peak_bytes"] - small["peak_bytes"] >= cache_gain


def test_check_measures_here_and_says_whether_the_table_holds(tables, tmp_path):
    _, dec = tables
    out = tmp_path / "check.json"
    s = check(dec, space(), n=5, timer=FAST, progress=False, out=out, log=lambda s: None)
    assert s["n"] == 5 and set(s["precisions"]) == set(PRECS)
    assert s["holds"] == (s["overall"]["within_10"] >= 0.95)
    assert json.loads(out.read_text())["machine"]["cpu_count"] > 0


def test_check_exits_non_zero_when_a_table_does_not_hold(tables, tmp_path, capsys):
    _, dec = tables
    # The same table, its predictions made three times too slow.
    for src in (dec.path, json_path(dec.path), memory_path(dec.path)):
        (tmp_path / src.name).write_bytes(src.read_bytes())
    meta = json.loads(json_path(dec.path).read_text())
    for c in meta["calibration"].values():
        c.update(a=3 * c["a"], b=3 * c["b"], c=3 * c["c"])
    json_path(tmp_path / dec.path.name).write_text(json.dumps(meta))
    overrides = ["verb=check", "latency.phase=decode", f"latency.table={tmp_path / dec.path.name}",
                 "latency.seq_len=16", *MICRO, "check.n=4", "latency.progress=false"]
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="latency", overrides=overrides)
    with pytest.raises(SystemExit) as e:
        _main(cfg)
    assert e.value.code == 1  # 2 is a user mistake
    assert "does NOT hold here" in capsys.readouterr().out
