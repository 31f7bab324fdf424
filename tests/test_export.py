"""Export from the storage alone: Pareto configs and the winner for a budget."""
from __future__ import annotations

import re

import pandas as pd
import yaml

from nas.search.export import main as export_main
from nas.model import build_model
from nas.space import ArchConfig

NAME = re.compile(r"^(\d\d_)?L\d-d\d+-\w+_[0-9a-f]{12}_lat\d+\.\d{3}ms_loss\d+\.\d{3}\.yaml$")


def test_export_writes_front_and_winner_from_storage_alone(tmp_path, finished_study):
    url, name, budget = finished_study
    res = export_main(["--storage", url, "--study", name, "--out", str(tmp_path)])
    front = pd.read_csv(res.pareto_csv)
    assert len(front) == len(res.pareto_yamls) >= 1
    assert front["latency_ms"].is_monotonic_increasing
    assert front["val_loss"].is_monotonic_decreasing  # a front: slower only if better
    assert (front["latency_ms"] <= budget).all() and front["feasible"].all()
    for path in res.pareto_yamls:
        assert NAME.match(path.name), path.name
        doc = yaml.safe_load(path.read_text())
        arch = ArchConfig.from_yaml(path)
        assert doc["meta"]["arch_id"] == arch.arch_id and doc["meta"]["study"] == name
        assert f"lat{doc['meta']['predicted_latency_ms']:.3f}ms" in path.name
        assert f"loss{doc['meta']['val_loss']:.3f}" in path.name
    # The winner: the lowest loss within the study's budget.
    assert res.winner is not None and res.winner.name.startswith("winner_")
    within = front[front["latency_ms"] <= budget]
    best = within.sort_values("val_loss").iloc[0]
    assert best["arch_id"] in res.winner.name
    build_model(ArchConfig.from_yaml(res.winner))


def test_tighter_budget_picks_a_faster_winner_and_replaces_old_files(tmp_path, finished_study):
    url, name, _ = finished_study
    export_main(["--storage", url, "--study", name, "--out", str(tmp_path)])
    front = pd.read_csv(tmp_path / "pareto.csv")
    fastest = front.iloc[0]
    res = export_main(["--storage", url, "--study", name, "--out", str(tmp_path),
                       "--budget-ms", str(fastest["latency_ms"] + 1e-9)])
    assert fastest["arch_id"] in res.winner.name
    assert len(list(tmp_path.glob("winner_*.yaml"))) == 1


def test_export_errors_are_one_line(tmp_path, finished_study, capsys):
    url, _, _ = finished_study
    import pytest
    with pytest.raises(SystemExit) as e:
        export_main(["--storage", url, "--study", "nope", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no study 'nope'" in err and "done" in err
