"""Pareto front, winner and hypervolume on hand-made numbers."""
from __future__ import annotations

import pandas as pd
import pytest

from nas.results import choose_winner, hypervolume


@pytest.mark.parametrize("points, ref, expected", [
    ([(1.0, 1.0)], (2.0, 2.0), 1.0),
    ([(1.0, 2.0), (2.0, 1.0)], (3.0, 3.0), 3.0),
    ([(1.0, 2.0), (2.0, 1.0), (2.5, 2.5)], (3.0, 3.0), 3.0),  # a dominated point adds nothing
    ([(4.0, 1.0), (1.0, 1.0)], (3.0, 3.0), 4.0),              # beyond the reference: dropped
    ([], (3.0, 3.0), 0.0),
    ([(float("inf"), 1.0)], (3.0, 3.0), 0.0),                 # an unscored trial
])
def test_hypervolume(points, ref, expected):
    assert hypervolume(points, ref) == pytest.approx(expected)


def test_winner_is_lowest_loss_within_budget():
    front = pd.DataFrame({"latency_ms": [1.0, 2.0, 3.0], "val_loss": [3.0, 2.0, 1.0],
                          "number": [0, 1, 2]})
    assert choose_winner(front, 2.5)["number"] == 1
    assert choose_winner(front, None)["number"] == 2
    assert choose_winner(front, 0.5) is None
