"""``nas.paths``: the one place that finds configs, search spaces and tables."""
from __future__ import annotations

from pathlib import Path

from nas import paths


def test_a_checkout_uses_its_own_folders():
    root = Path(__file__).resolve().parents[1]
    assert paths.CHECKOUT == root == paths.DATA_ROOT
    assert paths.CONF_DIR == root / "conf" and paths.SPACES_DIR == root / "search_spaces"
    assert paths.TABLES_DIR == root / "latency_tables"


def test_relative_paths_prefer_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    committed = Path("latency_tables/cpu-tiny.csv")
    assert paths.resolve(committed) == paths.DATA_ROOT / committed
    (tmp_path / "latency_tables").mkdir()
    (tmp_path / committed).write_text("mine")
    assert paths.resolve(committed) == committed  # a file here wins over the committed one
    assert paths.resolve("latency_tables/none.csv") == Path("latency_tables/none.csv")
    assert paths.resolve(tmp_path / "x.csv") == tmp_path / "x.csv"
