"""search.objectives: the registry, a three-objective search read back as tables, plots
and exports, budgets on an objective other than latency, and lists that are refused."""
from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure
from optuna.trial import TrialState

from nas.errors import ConfigError
from nas.search import objectives as objs
from nas.search.config import SearchConfig
from nas.search.export import main as export_main
from nas.search.plot import main as plot_main
from nas.search.results import pareto_frame, trials_frame
from nas.search.study import check_compatible, open_storage, open_study
from nas.space import ArchConfig

pytest_plugins = ["search_support"]  # its session fixtures: a tiny supernet, finished studies

THREE = ("val_loss", "latency_ms", "params")


@pytest.mark.parametrize("names, needles", [
    (["val_loss", "latency"], ["'latency' is not an objective", "allowed: val_loss, latency_ms"]),
    (["latency_ms", "params"], ["must hold val_loss"]),
    (["val_loss"], ["at least one of latency_ms"]),
    (["val_loss", "params", "params"], ["params twice"]),
])
def test_bad_lists_are_refused_naming_the_key(names, needles):
    with pytest.raises(ConfigError) as e:
        SearchConfig(objectives=names)
    msg = str(e.value)
    assert msg.startswith("search.objectives: ") and "\n" not in msg
    for n in needles:
        assert n in msg, msg


@pytest.mark.parametrize("budgets, needles", [
    ({"peak_mem_mb": 2.0}, ["search.budgets.peak_mem_mb", "not in search.objectives",
                            "allowed on latency_ms"]),
    ({"val_loss": 2.0}, ["search.budgets.val_loss", "cannot have a budget"]),
    ({"latency_ms": -1.0}, ["search.budgets.latency_ms", "positive"]),
])
def test_bad_budgets_are_refused_naming_the_key(budgets, needles):
    with pytest.raises(ConfigError) as e:
        SearchConfig(budgets=budgets)
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_budgets_and_the_latency_budget():
    cfg = SearchConfig(objectives=THREE, latency_budget_ms=1.0, budgets={"params": 5e4, "latency_ms": None})
    assert cfg.budget_map() == {"latency_ms": 1.0, "params": 5e4}
    assert SearchConfig(latency_budget_ms=1.0, budgets={"latency_ms": 0.5}).budget_map() == {"latency_ms": 0.5}
    with pytest.raises(ConfigError, match="search.latency_budget_ms: 1 is a budget on latency_ms"):
        SearchConfig(objectives=("val_loss", "params"), latency_budget_ms=1.0).budget_map()


def test_every_predicted_objective_names_its_constraint():
    assert objs.REGISTRY["latency_ms"].constraint == "latency_over_budget_ms"  # as stored studies have it
    assert objs.REGISTRY["peak_mem_mb"].constraint == "peak_mem_over_budget_mb"
    assert objs.REGISTRY["params"].constraint == "params_over_budget"
    assert [n for n, o in objs.REGISTRY.items() if not o.can_budget] == ["val_loss"]


def test_an_objective_without_its_table_is_refused(tiny_table):
    from nas.search.config import HardwareConfig

    with pytest.raises(ConfigError) as e:
        objs.load_tables(("val_loss", "decode_ms"), HardwareConfig(), "cpu", tiny_table)
    msg = str(e.value)
    assert msg.startswith("search.objectives: decode_ms needs a decode table") and "'cpu'" in msg
    assert objs.load_tables(THREE, HardwareConfig(), "cpu", tiny_table) == {"prefill": tiny_table}


def test_three_objective_search_records_and_constrains(three_objective_study, tiny_table):
    url, name, budget = three_objective_study
    study = optuna.load_study(study_name=name, storage=url)
    assert study.metric_names == list(THREE) and len(study.directions) == 3
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 16
    for t in trials:
        arch = ArchConfig.from_dict(t.user_attrs["arch"])
        assert t.values[1] == pytest.approx(tiny_table.predict_ms(arch))
        assert t.values[2] == arch.n_params
        assert set(t.constraints) >= {"params_over_budget"}  # and no latency budget
        assert "latency_over_budget_ms" not in t.constraints
        over = t.constraints["params_over_budget"] > 0
        assert over == (arch.n_params > budget)
        if over and not t.user_attrs.get("baseline"):
            assert not t.user_attrs["scored"] and math.isinf(t.values[0])
    df = trials_frame(study)
    assert list(df.columns[:5]) == ["number", "state", *THREE]
    assert list(df.columns).count("params") == 1
    front = pareto_frame(df)
    assert len(front) >= 1 and (front["params"] <= budget).all()
    assert front["latency_ms"].is_monotonic_increasing


def test_export_under_a_budget_on_parameters(tmp_path, three_objective_study):
    url, name, budget = three_objective_study
    res = export_main(["--storage", url, "--study", name, "--out", str(tmp_path)])
    front = pd.read_csv(res.pareto_csv)
    assert list(front.columns[2:5]) == list(THREE)
    assert res.budgets == {"params": budget}
    win = front[front["params"] <= budget].sort_values("val_loss").iloc[0]
    assert win["arch_id"] in res.winner.name and "_p" in res.winner.name
    # A tighter budget on parameters picks a smaller winner.
    tight = front.sort_values("params").iloc[0]["params"]
    res = export_main(["--storage", url, "--study", name, "--out", str(tmp_path),
                       "--budget", f"params={tight}"])
    meta = yaml.safe_load(res.winner.read_text())["meta"]
    assert meta["params"] <= tight and meta["budgets"] == {"params": tight}
    assert "predicted_latency_ms" in meta
    assert len(list(tmp_path.glob("winner_*.yaml"))) == 1


def test_export_refuses_a_budget_on_an_objective_the_study_lacks(tmp_path, finished_study, capsys):
    url, name, _ = finished_study
    with pytest.raises(SystemExit) as e:
        export_main(["--storage", url, "--study", name, "--out", str(tmp_path),
                     "--budget", "params=1000"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: --budget.params:") and "latency_ms" in err


def test_plot_of_three_objectives_is_a_grid_of_pairs(tmp_path, three_objective_study, monkeypatch):
    url, name, budget = three_objective_study
    figures = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k)))
    out = plot_main(["--storage", url, "--study", name, "--out", str(tmp_path / "p.png")])
    assert out.stat().st_size > 0
    (fig,) = figures
    pairs = [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]
    lat, loss, par = "predicted latency (ms) on cpu", "validation loss (supernet weights)", "parameters"
    assert pairs == [(lat, par), (lat, loss), (par, loss)]
    front = pareto_frame(trials_frame(optuna.load_study(study_name=name, storage=url)))
    for ax, (x, y) in zip(fig.axes, [("latency_ms", "params"), ("latency_ms", "val_loss"),
                                     ("params", "val_loss")]):
        (pts,) = [c.get_offsets() for c in ax.collections if c.get_label().startswith("Pareto front")]
        np.testing.assert_allclose(np.asarray(pts), front[[x, y]].to_numpy(dtype=float))
    # The parameter budget is drawn on the parameter axes.
    assert budget in [ln.get_ydata()[0] for ln in fig.axes[0].get_lines()]
    assert budget in [ln.get_xdata()[0] for ln in fig.axes[2].get_lines()]


def test_resume_with_another_list_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/nas.db"
    attrs = {"space": {"name": "tiny"}}
    study = open_study(open_storage(url), "s", optuna.samplers.RandomSampler(), attrs, url, THREE)
    check_compatible(study, attrs, url, THREE)
    with pytest.raises(ConfigError) as e:
        check_compatible(study, attrs, url, objs.DEFAULT)
    msg = str(e.value)
    assert msg.startswith("search.objectives: [val_loss,latency_ms]") and "\n" not in msg
    assert "search.objectives=[val_loss,latency_ms,params]" in msg
