"""Pareto front, winner and hypervolume on hand-made numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nas.search.results import choose_winner, hypervolume


@pytest.mark.parametrize("points, ref, expected", [
    ([(1.0, 1.0)], (2.0, 2.0), 1.0),
    ([(1.0, 2.0), (2.0, 1.0)], (3.0, 3.0), 3.0),
    ([(1.0, 2.0), (2.0, 1.0), (2.5, 2.5)], (3.0, 3.0), 3.0),  # a dominated point adds nothing
    ([(4.0, 1.0), (1.0, 1.0)], (3.0, 3.0), 4.0),              # beyond the reference: dropped
    ([], (3.0, 3.0), 0.0),
    ([(float("inf"), 1.0)], (3.0, 3.0), 0.0),                 # an unscored trial
    ([(1.0, 4.0), (2.0, 2.0)], (3.0, 3.0), 1.0),              # beyond in the second objective
    ([(1.0, 2.0), (1.0, 2.0), (2.0, 1.0), (2.0, 1.0)], (3.0, 3.0), 3.0),  # duplicates count once
    ([(1.0, 2.0), (1.0, 2.5)], (3.0, 3.0), 2.0),              # same first objective
    ([(3.0, 1.0), (1.0, 3.0)], (3.0, 3.0), 0.0),              # on the reference: no area
    ([(3.0, 1.0), (2.0, 3.0), (3.0, 2.0)], (4.0, 4.0), 4.0),  # unsorted, one dominated: 3 + 2 - 1
    ([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)], (4.0, 4.0), 6.0),  # staircase: 3 + 2 + 1
    ([(2.0, 0.5), (0.5, 2.0)], (2.5, 2.5), 1.75),             # 1 + 1 - 0.25 overlap
])
def test_hypervolume(points, ref, expected):
    assert hypervolume(points, ref) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_hypervolume_equals_the_dominated_cells_counted_on_a_grid(seed):
    rng = np.random.default_rng(seed)
    points = rng.integers(0, 12, size=(8, 2)).astype(float)  # some beyond the reference (10, 10)
    cells = np.stack(np.meshgrid(np.arange(10), np.arange(10), indexing="ij"), -1).reshape(-1, 2)
    dominated = (cells[:, None, :] >= points[None, :, :]).all(-1).any(-1)
    assert hypervolume(points, (10.0, 10.0)) == pytest.approx(dominated.sum())


def test_winner_is_lowest_loss_within_budget():
    front = pd.DataFrame({"latency_ms": [1.0, 2.0, 3.0], "val_loss": [3.0, 2.0, 1.0],
                          "number": [0, 1, 2]})
    assert choose_winner(front, {"latency_ms": 2.5})["number"] == 1
    assert choose_winner(front, None)["number"] == 2
    assert choose_winner(front, {"latency_ms": 0.5}) is None
