"""Building a real (tiny) table on this CPU, resuming an interrupted build, validating it."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pandas as pd
import pytest

from helpers import SPACE, space
from nas.errors import ConfigError
from nas.latency import LatencyTable, Workload, space_blocks
from nas.latency import blocks as blocks_mod
from nas.latency.build import build_table, passes_path
from nas.latency.measure import TimerSettings
from nas.latency.files import calibration_path, json_path
from nas.latency.validate import validate
from nas.space import SearchSpace

FAST = TimerSettings(repeats=3, warmup=1, window_ms=1.0)
WORK = Workload("cpu", 1, 16, ("fp32", "int8"))


def _build(path, **kw):
    args = dict(calibration_n=6, calibration_seed=11, command="pytest", progress=False,
                log=lambda s: None)
    args.update(kw)
    return build_table(path, space(), WORK, FAST, **args)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("lat") / "micro.csv"
    return _build(path)


def test_build_measures_every_block_and_fits_a_correction(built):
    keys = space_blocks(space(), WORK.precisions)
    assert len(built.rows) == len(keys)
    assert (built.rows["median_ms"] > 0).all()
    assert (built.rows["p10_ms"] <= built.rows["median_ms"]).all()
    meta = json.loads(json_path(built.path).read_text())
    assert meta["complete"] and meta["workload"]["threads"] == 1
    assert meta["fingerprint"]["device"] == "cpu" and meta["fingerprint"]["threads"] == 1
    assert meta["fingerprint"]["torch"]
    assert set(meta["calibration"]) == {"fp32", "int8"}
    assert meta["calibration"]["fp32"]["seed"] == 11 and meta["calibration"]["fp32"]["n"] == 6
    assert len(pd.read_csv(calibration_path(built.path))) == 12
    again = LatencyTable.load(built.path, space=space(), device="cpu", batch_size=1, seq_len=16)
    assert again.predict_ms(space().largest("int8")) > 0


def test_interrupted_build_resumes_measuring_only_missing_rows(built, tmp_path, monkeypatch):
    path = tmp_path / "micro.csv"
    for src in (built.path, json_path(built.path), calibration_path(built.path)):
        shutil.copy(src, tmp_path / src.name)
    lines = path.read_text().splitlines(keepends=True)
    # As if killed mid-way: 5 rows gone and the last one half written.
    path.write_text("".join(lines[:-6]) + lines[-6][:7])
    meta = json.loads(json_path(path).read_text())
    meta["complete"] = False
    json_path(path).write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="did not finish"):
        LatencyTable.load(path)

    measured = []
    real = blocks_mod.time_block
    monkeypatch.setattr(blocks_mod, "time_block",
                        lambda key, *a, **k: measured.append(key) or real(key, *a, **k))
    calls = []
    real_model = blocks_mod.time_model
    monkeypatch.setattr(blocks_mod, "time_model",
                        lambda arch, *a, **k: calls.append(arch) or real_model(arch, *a, **k))
    table = _build(path)
    assert len(measured) == 6  # the 5 lost rows and the half-written one
    assert calls == []  # the calibration models were all measured already
    assert len(table.rows) == len(built.rows)
    lost = pd.read_csv(built.path).tail(6)
    assert {(k.kind, k.d_model, k.n_head, k.d_ff, k.precision) for k in measured} == set(
        lost[["kind", "d_model", "n_head", "d_ff", "precision"]].itertuples(index=False, name=None))


def test_resume_refuses_to_mix_workloads(built, tmp_path):
    path = tmp_path / "micro.csv"
    for src in (built.path, json_path(built.path)):
        shutil.copy(src, tmp_path / src.name)
    other = Workload("cpu", 1, 8, ("fp32", "int8"))
    with pytest.raises(ConfigError, match="seq_len 16 .now 8.; refusing to mix"):
        build_table(path, space(), other, FAST, calibration_n=0, progress=False, log=lambda s: None)


def test_validate_writes_the_report(built, tmp_path):
    out = tmp_path / "report"
    s = validate(built, space(), ["fp32", "int8"], n=5, seed=12, timer=FAST, out_dir=out,
                 command="pytest", noise_models=2, noise_repeats=2, progress=False,
                 log=lambda s: None)
    for f in ("report.csv", "scatter.png", "summary.json", "summary.md"):
        assert (out / f).stat().st_size > 0
    df = pd.read_csv(out / "report.csv")
    assert len(df) == 10 and {"predicted_ms", "measured_ms", "error_pct"} <= set(df.columns)
    assert not set(df["arch_id"]) & set(pd.read_csv(calibration_path(built.path))["arch_id"])
    fp32 = s["precisions"]["fp32"]
    assert 0 <= fp32["within_10"] <= 1 and -1 <= fp32["spearman"] <= 1
    assert fp32["noise"]["models"][0]["medians_ms"] and "goal_met" in fp32
    assert s["validation_seed"] == 12 and s["calibration_seeds"]["fp32"] == 11
    assert "pytest" in (out / "summary.md").read_text()


def test_validate_refuses_the_calibration_seed(built, tmp_path):
    with pytest.raises(ConfigError, match="seed that fitted"):
        validate(built, space(), ["fp32"], n=2, seed=11, timer=FAST, out_dir=tmp_path,
                 progress=False, log=lambda s: None)


def test_cuda_build_without_gpu_is_a_user_error(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cuda = Workload("cuda", 1, 16, ("fp32",))
    with pytest.raises(ConfigError, match="no GPU"):
        build_table(tmp_path / "x.csv", SearchSpace.from_dict(SPACE), cuda, FAST, progress=False,
                    log=lambda s: None)


def test_passes_keep_the_lowest_median_and_resume(tmp_path, monkeypatch):
    timer = dataclasses.replace(FAST, passes=2)
    work = Workload("cpu", 1, 16, ("fp32",))
    path = tmp_path / "p.csv"
    t = build_table(path, space(), work, timer, calibration_n=0, progress=False,
                    log=lambda s: None)
    keys = ["kind", "d_model", "n_head", "d_ff", "precision"]
    passes = pd.read_csv(passes_path(path))
    assert len(passes) == 2 * len(t.rows) and set(passes["pass"]) == {0, 1}
    lowest = passes.groupby(keys)["median_ms"].min()
    assert (t.rows.set_index(keys)["median_ms"] == lowest.loc[t.rows.set_index(keys).index]).all()

    # Killed during the second pass: its last 3 measurements and their rows never written.
    for f in (path, passes_path(path)):
        lines = f.read_text().splitlines(keepends=True)
        f.write_text("".join(lines[:-3]))
    measured = []
    real = blocks_mod.time_block
    monkeypatch.setattr(blocks_mod, "time_block",
                        lambda key, *a, **k: measured.append(key) or real(key, *a, **k))
    again = build_table(path, space(), work, timer, calibration_n=0, progress=False,
                        log=lambda s: None)
    assert len(measured) == 3 and len(again.rows) == len(t.rows)
    assert len(pd.read_csv(passes_path(path))) == 2 * len(t.rows)
