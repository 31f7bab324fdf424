"""Pareto plots: what is drawn on the figure (axes, the front's points, every trial) and
that it is written as a PNG."""
from __future__ import annotations

import numpy as np
import optuna
import pytest
from matplotlib.figure import Figure

from nas.search.plot import main as plot_main
from nas.search.results import pareto_frame, trials_frame


PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def drawn(monkeypatch):
    """The figures saved during the test (the plots draw on bare Figures and drop them)."""
    figures = []
    save = Figure.savefig

    def keep(fig, *args, **kwargs):
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def _points(ax, label_start: str) -> np.ndarray:
    """The (latency, loss) points of the one scatter whose label starts with ``label_start``."""
    found = [c for c in ax.collections if c.get_label().startswith(label_start)]
    assert len(found) == 1, [c.get_label() for c in ax.collections]
    return np.asarray(found[0].get_offsets())


def _rows(frame) -> np.ndarray:
    return frame[["latency_ms", "val_loss"]].to_numpy(dtype=float)


def test_pareto_plot_of_one_study(tmp_path, finished_study, drawn):
    url, name, budget = finished_study
    out = plot_main(["--storage", url, "--study", name, "--out", str(tmp_path / "p.png")])
    assert out.read_bytes()[:8] == PNG
    df = trials_frame(optuna.load_study(study_name=name, storage=url))
    (fig,) = drawn
    (ax,) = fig.axes
    assert ax.get_xlabel().startswith("predicted latency (ms)")
    assert ax.get_ylabel() == "validation loss (supernet weights)"
    assert ax.get_title() == f"{name}: 16 trials"
    front = pareto_frame(df)
    assert len(front) >= 1
    np.testing.assert_allclose(_points(ax, "Pareto front"), _rows(front))
    done = df[df["state"] == "COMPLETE"]
    within = done[done["scored"] & done["feasible"]]
    over = done[~done["feasible"] & ~done["scored"]]
    np.testing.assert_allclose(_points(ax, "within budget"), _rows(within))
    assert len(over) > 0 and len(_points(ax, "over budget")) == len(over)
    assert np.all(_points(ax, "over budget")[:, 1] > within["val_loss"].max())  # the strip above
    assert budget in [line.get_xdata()[0] for line in ax.get_lines()]  # the budget line


def test_fronts_of_several_studies_on_one_figure(tmp_path, tiny_space, tiny_table,
                                                 tiny_scorer_factory, drawn):
    from helpers import budget_between, search_in_process

    url = f"sqlite:///{tmp_path}/nas.db"
    budget = budget_between(tiny_table, tiny_space, 0.5)
    scorer = tiny_scorer_factory()
    for sampler in ("nsga2", "random"):
        search_in_process(tiny_space, tiny_table, scorer, url, sampler, 8, budget, sampler=sampler)
    out = plot_main(["--storage", url, "--study", "nsga2", "--study", "random",
                     "--out", str(tmp_path / "fronts.png")])
    assert out.read_bytes()[:8] == PNG
    (fig,) = drawn
    (ax,) = fig.axes
    assert ax.get_xlabel() == "predicted latency (ms)"
    for name in ("nsga2", "random"):
        front = pareto_frame(trials_frame(optuna.load_study(study_name=name, storage=url)))
        np.testing.assert_allclose(_points(ax, f"{name} ("), _rows(front))
