"""LatencyTable: loading, checks and the predictor, on a synthetic table (no timing)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from helpers import SPACE, block_ms, fake_table, space
from nas.errors import ConfigError
from nas.latency import BlockKey, LatencyTable, arch_blocks
from nas.latency.files import json_path
from nas.space import SearchSpace


def test_load_and_predict_applies_the_calibration(tmp_path):
    path = fake_table(tmp_path)
    t = LatencyTable.load(path, space=space(), device="cpu", batch_size=1, seq_len=16)
    assert (t.device, t.batch_size, t.seq_len, t.precisions) == ("cpu", 1, 16, ("fp32", "int8"))
    arch = space().make(2, 64, [2, 1], [128, 64], "int8")
    raw = sum(block_ms(k.kind, k.d_model, k.n_head, k.d_ff, k.precision) for k in arch_blocks(arch))
    assert t.raw_sum_ms(arch) == pytest.approx(raw, rel=1e-5)
    assert t.predict_ms(arch) == pytest.approx(1.1 * raw + 0.01 * 2 + 0.02, rel=1e-5)
    assert t.block_ms(BlockKey("layernorm", 32, precision="fp32")) > 0


def test_bigger_architecture_predicts_slower(tmp_path):
    t = LatencyTable.load(fake_table(tmp_path))
    small, big = space().smallest(), space().largest()
    assert t.predict_ms(big) > t.predict_ms(small) > 0


def test_relative_path_is_found_under_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the committed tables resolve from any working directory
    assert LatencyTable.load("latency_tables/cpu-tiny.csv").device == "cpu"


def _edit(path, fn):
    df = pd.read_csv(path)
    df = fn(df)
    df.to_csv(path, index=False)


@pytest.mark.parametrize("edit, words", [
    (lambda df: df.drop(columns=["p90_ms"]), "missing column"),
    (lambda df: df.assign(median_ms=df["median_ms"].where(df.index != 3)), "NaN"),
    (lambda df: df.assign(median_ms=df["median_ms"].where(df.index != 2, -0.5),
                          p10_ms=df["p10_ms"].where(df.index != 2, -0.6)), "positive"),
    (lambda df: df.assign(p10_ms=df["p10_ms"].where(df.index != 0, 0.0)), "positive"),
    (lambda df: df.assign(median_ms=df["median_ms"].astype(object).where(df.index != 1, "fast")),
     "not a number"),
    (lambda df: df.assign(p90_ms=df["p90_ms"].where(df.index != 4, 1e-6)), "p10_ms <= median_ms"),
    (lambda df: pd.concat([df, df.iloc[[0]]]), "duplicate"),
    (lambda df: df.assign(kind=df["kind"].where(df.index != 0, "conv")), "unknown kind"),
    (lambda df: df.assign(seq_len=df["seq_len"].where(df.index != 5, 32)), "hand-edited"),
    (lambda df: df.iloc[:0], "no rows"),
])
def test_hand_edited_csv_is_refused(tmp_path, edit, words):
    path = fake_table(tmp_path)
    _edit(path, edit)
    with pytest.raises(ConfigError, match=words) as e:
        LatencyTable.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("cut, words", [
    (lambda text: text[: len(text) // 2], "no line end"),  # cut mid-row
    (lambda text: text[:-3], "no line end"),  # cut in the last number: it would still parse
    (lambda text: "".join(text.splitlines(keepends=True)[:-2]), "fingerprint says"),  # whole rows
])
def test_truncated_csv_is_refused(tmp_path, cut, words):
    path = fake_table(tmp_path)
    meta = json.loads(json_path(path).read_text())
    meta["n_rows"] = len(pd.read_csv(path))
    json_path(path).write_text(json.dumps(meta))
    path.write_text(cut(path.read_text()))
    with pytest.raises(ConfigError, match=words) as e:
        LatencyTable.load(path)
    assert "fake.csv" in str(e.value)


@pytest.mark.parametrize("kwargs, words", [
    ({"device": "cuda"}, "device cpu"),
    ({"batch_size": 4}, "batch_size 1"),
    ({"seq_len": 64}, "seq_len 16"),
    ({"mode": "graph"}, "mode eager"),
    ({"gpu_name": "H100"}, "GPU"),
])
def test_another_device_or_workload_is_refused_with_a_rebuild_command(tmp_path, kwargs, words):
    path = fake_table(tmp_path)
    with pytest.raises(ConfigError, match=words) as e:
        LatencyTable.load(path, **kwargs)
    assert "fake.csv" in str(e.value) and "python -m nas.latency build" in str(e.value)


def test_gpu_name_match(tmp_path):
    path = fake_table(tmp_path, device="cuda")
    assert LatencyTable.load(path, gpu_name="h100", device="cuda").device == "cuda"


def test_missing_files(tmp_path):
    with pytest.raises(ConfigError, match="not found.*python -m nas.latency build"):
        LatencyTable.load(tmp_path / "none.csv", device="cpu", batch_size=1, seq_len=16)
    path = fake_table(tmp_path)
    json_path(path).unlink()
    with pytest.raises(ConfigError, match="fake.json: fingerprint file not found"):
        LatencyTable.load(path)


@pytest.mark.parametrize("mutate, words", [
    (lambda m: m.update(complete=False), "did not finish"),
    (lambda m: m["workload"].pop("seq_len"), "workload.seq_len"),
    (lambda m: m.update(format=99), "format"),
    (lambda m: m["calibration"]["fp32"].update(a=float("nan")), "not a finite number"),
    (lambda m: m["calibration"]["fp32"].pop("c"), "malformed"),
])
def test_damaged_json_is_refused(tmp_path, mutate, words):
    path = fake_table(tmp_path)
    meta = json.loads(json_path(path).read_text())
    mutate(meta)
    json_path(path).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=words):
        LatencyTable.load(path)


def test_invalid_json_is_refused(tmp_path):
    path = fake_table(tmp_path)
    json_path(path).write_text("{not json")
    with pytest.raises(ConfigError, match="fake.json: not valid JSON"):
        LatencyTable.load(path)


def test_architecture_outside_coverage_is_an_error_not_a_guess(tmp_path):
    t = LatencyTable.load(fake_table(tmp_path))
    wider = SearchSpace.from_dict({**SPACE, "d_model": [32, 64, 96]}).make(1, 96, [1], [64])
    with pytest.raises(ConfigError, match="outside the table's coverage.*d96") as e:
        t.predict_ms(wider)
    assert "fake.csv" in str(e.value)
    with pytest.raises(ConfigError, match="precision 'bf16'"):
        t.predict_ms(space().make(1, 32, [1], [64], "bf16"))
    other_heads = SearchSpace.from_dict({**SPACE, "head_dim": 16}).make(1, 32, [1], [64])
    with pytest.raises(ConfigError, match="head_dim"):
        t.predict_ms(other_heads)


def test_space_not_covered_is_refused_at_load(tmp_path):
    path = fake_table(tmp_path)
    wider = SearchSpace.from_dict({**SPACE, "d_ff": [64, 128, 256]})
    with pytest.raises(ConfigError, match="does not cover search space.*ffn d32 f256"):
        LatencyTable.load(path, space=wider)
    bf16 = SearchSpace.from_dict({**SPACE, "precision": {"cpu": ["fp32", "bf16", "int8"]}})
    with pytest.raises(ConfigError, match=r"precision\(s\) \['bf16'\]"):
        LatencyTable.load(path, space=bf16)


def test_missing_calibration_is_refused_when_required(tmp_path):
    path = fake_table(tmp_path, calibration={})
    with pytest.raises(ConfigError, match="no calibration"):
        LatencyTable.load(path, space=space())
    t = LatencyTable.load(path, space=space(), require_calibration=False)
    arch = space().smallest()
    assert t.predict_ms(arch) == t.raw_sum_ms(arch)  # the plain sum, said so by the caller


def _rewrite_meta(path, fn):
    meta = json.loads(json_path(path).read_text())
    fn(meta)
    json_path(path).write_text(json.dumps(meta))


@pytest.mark.parametrize("space_edit, arch, words", [
    ({}, (3, 64, [2, 1, 1], [128, 64, 64], "fp32"), r"n_layer 3 \(allowed 1\.\.2\)"),
    # Rows for these shapes exist, but the space the table was built for has none of them.
    ({"d_model": [64]}, (1, 32, [1], [64], "fp32"), r"d_model 32 \(allowed \[64\]\)"),
    ({"n_head": [1]}, (1, 64, [2], [64], "fp32"), r"n_head \[2\] \(allowed \[1\]\)"),
    ({"d_ff": [128]}, (2, 64, [1, 1], [64, 128], "int8"), r"d_ff \[64\] \(allowed \[128\]\)"),
])
def test_architecture_outside_the_tables_space_is_refused_though_its_blocks_have_rows(
        tmp_path, space_edit, arch, words):
    path = fake_table(tmp_path)
    _rewrite_meta(path, lambda m: m["space"].update(space_edit))
    t = LatencyTable.load(path)
    a = space().make(*arch)
    assert all(k in t._ms for k in arch_blocks(a))  # a plain sum would give a number
    with pytest.raises(ConfigError, match=words) as e:
        t.predict_ms(a)
    assert "fake.csv" in str(e.value) and "lat_micro" in str(e.value) and "\n" not in str(e.value)


def test_precision_the_table_was_not_built_for_is_refused_though_it_has_rows(tmp_path):
    path = fake_table(tmp_path)
    _rewrite_meta(path, lambda m: m["workload"].update(precisions=["fp32"]))
    t = LatencyTable.load(path)
    assert t.precisions == ("fp32",)
    with pytest.raises(ConfigError, match="precision 'int8'"):
        t.predict_ms(space().make(1, 32, [1], [64], "int8"))
    with pytest.raises(ConfigError, match=r"precision\(s\) \['int8'\]"):
        LatencyTable.load(path, space=space())


def test_only_the_context_of_an_architecture_may_differ_from_the_tables_space(tmp_path):
    t = LatencyTable.load(fake_table(tmp_path))  # measured at seq_len 16 = the space's context
    longer = SearchSpace.from_dict({**SPACE, "block_size": 32}).make(2, 64, [2, 1], [128, 64])
    assert t.predict_ms(longer) == t.predict_ms(space().make(2, 64, [2, 1], [128, 64]))


def test_a_table_that_does_not_record_its_whole_space_predicts_what_it_has_rows_for(tmp_path):
    path = fake_table(tmp_path)
    _rewrite_meta(path, lambda m: m["space"].pop("n_layer"))
    assert LatencyTable.load(path).predict_ms(space().make(3, 32, [1] * 3, [64] * 3)) > 0


def test_space_beyond_the_tables_is_refused_at_load(tmp_path):
    path = fake_table(tmp_path)
    deeper = SearchSpace.from_dict({**SPACE, "n_layer": {"min": 1, "max": 3}})
    with pytest.raises(ConfigError, match=r"reaches beyond.*n_layer 1\.\.3 \(table: 1\.\.2\)"):
        LatencyTable.load(path, space=deeper)
    _rewrite_meta(path, lambda m: m["space"].update(d_ff=[128]))
    with pytest.raises(ConfigError, match=r"d_ff \[64\] \(table: \[128\]\).*nas.latency build"):
        LatencyTable.load(path, space=space())
