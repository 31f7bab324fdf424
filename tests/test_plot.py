"""Pareto plots: files exist, are PNGs and are not empty."""
from __future__ import annotations

from nas.plot import main as plot_main
pytest_plugins = ["search_support"]  # its session fixtures: a tiny supernet, a finished study

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.stat().st_size > 10_000 and path.read_bytes()[:8] == PNG


def test_pareto_plot_of_one_study(tmp_path, finished_study):
    url, name, _ = finished_study
    out = plot_main(["--storage", url, "--study", name, "--out", str(tmp_path / "p.png")])
    assert _is_png(out)


def test_fronts_of_several_studies_on_one_figure(tmp_path, tiny_space, tiny_table,
                                                 tiny_scorer_factory):
    from search_helpers import budget_between, search_in_process

    url = f"sqlite:///{tmp_path}/nas.db"
    budget = budget_between(tiny_table, tiny_space, 0.5)
    scorer = tiny_scorer_factory()
    for sampler in ("nsga2", "random"):
        search_in_process(tiny_space, tiny_table, scorer, url, sampler, 8, budget, sampler=sampler)
    out = plot_main(["--storage", url, "--study", "nsga2", "--study", "random",
                     "--out", str(tmp_path / "fronts.png")])
    assert _is_png(out)
