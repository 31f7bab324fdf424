"""The LLM-shaped path end to end on a CPU: text files -> subword corpus -> a grouped-query,
attention-free space -> its latency table, measured here -> supernet -> search -> export."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from nas.data.prepare import PrepareOptions, prepare
from nas.space import ArchConfig
from tests.helpers import run_cli
from tests.test_data_prepare import _write_docs

VOCAB = 260


@pytest.mark.slow
def test_subword_corpus_through_a_grouped_query_search(tmp_path: Path):
    _write_docs(tmp_path / "src", n=30)
    corpus, _ = prepare(PrepareOptions(source=str(tmp_path / "src"), out=tmp_path / "corpus",
                                       vocab_size=VOCAB, progress=False))
    space = ["search_space=tiny_gqa", f"search_space.vocab_size={VOCAB}"]
    table = tmp_path / "gqa.csv"
    p = run_cli([*_cmd("nas.latency"), "build", *space, f"latency.table={table}",
                 "latency.repeats=3", "latency.warmup=1", "latency.window_ms=1",
                 "latency.passes=1", "calibration.n=4", "latency.progress=false"], tmp_path)
    assert p.returncode == 0, p.stderr
    rows = pd.read_csv(table)
    att = rows[rows.kind == "attention"]
    assert set(zip(att.n_head, att.n_kv_head)) >= {(4, 1), (4, 2), (4, 4), (2, 1), (2, 2)}

    p = run_cli([*_cmd("nas.search"), *space, f"hardware.table={table}",
                 f"train.data={corpus}", "train.steps=30", "train.batch_size=4",
                 "train.eval_every=0", "train.eval_batches=1", "search.n_trials=8",
                 "search.latency_budget_ms=1000", "score.n_batches=1", "score.batch_size=2",
                 "search.storage=sqlite:///outputs/gqa.db", "search.progress=false"], tmp_path)
    assert p.returncode == 0, p.stderr
    trials = pd.read_csv(tmp_path / "outputs" / "tiny_gqa-cpu" / "trials.csv")
    assert len(trials) >= 8 and trials["val_loss"].notna().all()
    # the search proposed the new dimensions: grouped key/value heads, layers without attention
    assert trials["arch"].str.contains("/").any() and trials["arch"].str.contains("-").any()

    p = run_cli([*_cmd("nas.search.export"), "--storage", "sqlite:///outputs/gqa.db"], tmp_path)
    assert p.returncode == 0, p.stderr
    winners = list((tmp_path / "outputs" / "tiny_gqa-cpu").glob("winner_*.yaml"))
    assert len(winners) == 1
    arch = ArchConfig.from_yaml(winners[0])
    assert arch.vocab_size == VOCAB and arch.head_dim == 16
    doc = yaml.safe_load(winners[0].read_text())
    assert doc["arch"].get("n_kv_head", list(arch.n_head)) == list(arch.n_kv_head)


def _cmd(module: str) -> list[str]:
    import sys
    return [sys.executable, "-m", module]
