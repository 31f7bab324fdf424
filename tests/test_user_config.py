"""A user's own config folder, outside the checkout or the installed package, found through
Hydra's search path (``hydra.searchpath=[file://...]``)."""
from __future__ import annotations

import pytest

from helpers import FAST_SCORE, run_cli, search_cmd


@pytest.mark.slow
def test_a_hardware_target_of_ones_own_folder_is_searched(tmp_path, tiny_supernet):
    hw = tmp_path / "my-conf" / "hardware"
    hw.mkdir(parents=True)
    (hw / "mine.yaml").write_text("device: cpu\ntable: latency_tables/cpu-tiny.csv\n"
                                  "latency_budget_ms: 1.0\n")
    r = run_cli(search_cmd(f"hydra.searchpath=[file://{tmp_path}/my-conf]", "hardware=mine",
                           "search.n_trials=3", f"supernet.checkpoint={tiny_supernet}",
                           "search.progress=false", *FAST_SCORE), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "outputs" / "tiny-mine" / "pareto.csv").is_file()
    assert "Pareto front on mine" in r.stdout


def test_without_the_search_path_the_target_is_unknown(tmp_path):
    (tmp_path / "conf" / "hardware").mkdir(parents=True)
    (tmp_path / "conf" / "hardware" / "mine.yaml").write_text("device: cpu\n")
    r = run_cli(search_cmd("hardware=mine"), cwd=tmp_path)
    assert r.returncode == 2 and "'mine'" in r.stderr and "Traceback" not in r.stderr
