"""Bad input to ``python -m nas.search``: one line, a non-zero exit, no traceback, and
nothing stored is touched. Everything here is refused before any training."""
from __future__ import annotations

import optuna
import pytest

from helpers import run_cli, search_cmd


def _refused(r, *needles: str) -> str:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr + r.stdout
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("override, needles", [
    ("search_space=huge", ["search_space", "'huge'", "shakespeare, tiny"]),
    ("hardware=tpu", ["hardware", "'tpu'", "cpu, h100"]),
    ("sampler=cmaes", ["sampler", "nsga2, random, tpe"]),
    ("search.n_trials=many", ["search.n_trials", "'many'", "integer"]),
    ("search.latency_budget_ms=fast", ["search.latency_budget_ms", "number"]),
    ("search.latency_budget_ms=0.0001", ["search.latency_budget_ms", "fastest architecture",
                                         "L1 d", "give at least"]),
    ("search.n_trials=0", ["search.n_trials", ">= 1"]),
    ("search.colour=red", ["search.colour", "unknown key", "n_trials"]),
    ("search.device=gpu1", ["search.device", "'gpu1'", "cuda:K"]),
    ("search.grace_period=5", ["search.grace_period", "more than search.heartbeat_interval (10)"]),
    ("search.objectives=[val_loss,latency]", ["search.objectives", "'latency'",
                                               "allowed: val_loss, latency_ms"]),
    ("search.objectives=[latency_ms,params]", ["search.objectives", "must hold val_loss"]),
    ("search.objectives=[val_loss,params,params]", ["search.objectives", "params twice"]),
    ("search.objectives=val_loss", ["search.objectives", "not a list"]),
    ("search.budgets={peak_mem_mb: 2}", ["search.budgets.peak_mem_mb", "not in search.objectives",
                                         "allowed on latency_ms"]),
    ("search.budgets={watts: 2}", ["search.budgets.watts", "unknown key", "peak_mem_mb"]),
])
@pytest.mark.slow
def test_bad_override_is_one_line(tmp_path, override, needles):
    r = run_cli(search_cmd(override, f"search.storage=sqlite:///{tmp_path}/nas.db"), cwd=tmp_path)
    _refused(r, *needles)
    assert not (tmp_path / "outputs" / "supernets").exists()  # refused before training


@pytest.mark.slow
def test_latency_budget_without_latency_objective_is_refused(tmp_path):
    # The target's default budget is dropped silently; one the user gives is refused.
    r = run_cli(search_cmd("search.objectives=[val_loss,params]", "search.latency_budget_ms=0.7",
                           f"search.storage=sqlite:///{tmp_path}/nas.db"), cwd=tmp_path)
    _refused(r, "search.latency_budget_ms", "not in search.objectives", "null")


@pytest.mark.slow
def test_storage_that_cannot_be_opened_is_left_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n" * 100)
    before = notes.read_bytes()
    r = run_cli(search_cmd(f"search.storage=sqlite:///{notes}"), cwd=tmp_path)
    _refused(r, "search.storage", "cannot open")
    assert notes.read_bytes() == before
    r = run_cli(search_cmd("search.storage=nosuchdb://somewhere/x"), cwd=tmp_path)
    _refused(r, "search.storage", "cannot open")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_study_with_other_objectives_is_refused_and_kept(tmp_path):
    url = f"sqlite:///{tmp_path}/nas.db"
    other = optuna.create_study(study_name="mine", storage=url, direction="maximize")
    other.set_metric_names(["accuracy"])
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    r = run_cli(search_cmd(f"search.storage={url}", "search.study_name=mine"), cwd=tmp_path)
    _refused(r, "search.study_name", "'mine'", "accuracy (maximize)", "another search.study_name")
    again = optuna.load_study(study_name="mine", storage=url)
    assert len(again.trials) == 3 and again.metric_names == ["accuracy"]
    assert again.user_attrs == {}


@pytest.mark.slow
def test_objective_without_its_table_is_refused(tmp_path):
    import shutil

    from helpers import ROOT, TABLE

    for suffix in (".csv", ".json"):  # the prefill table alone, no decode table beside it
        shutil.copy((ROOT / TABLE).with_suffix(suffix), (tmp_path / "cpu-tiny").with_suffix(suffix))
    r = run_cli(search_cmd("search.objectives=[val_loss,decode_ms,peak_mem_mb]",
                           f"hardware.table={tmp_path}/cpu-tiny.csv",
                           f"search.storage=sqlite:///{tmp_path}/nas.db"), cwd=tmp_path)
    _refused(r, "search.objectives", "decode_ms, peak_mem_mb cannot be predicted on hardware 'cpu'",
             "cpu-tiny-decode-b1-c64.csv", "python -m nas.latency build")
    assert not (tmp_path / "outputs" / "supernets").exists()


def test_a_refusal_after_the_checks_of_the_storage_leaves_no_empty_storage(tmp_path):
    """The corpus is read after the storage's checks: a missing one used to leave an empty
    SQLite file behind."""
    r = run_cli(search_cmd(f"search.storage=sqlite:///{tmp_path}/nas.db", "train.data=missing.txt"),
                cwd=tmp_path)
    _refused(r, "missing.txt")
    assert not (tmp_path / "nas.db").exists()


@pytest.mark.parametrize("module, prog", [("nas.search", "nas-search"), ("nas.supernet", "nas-train"),
                                          ("nas.latency", "nas-latency")])
def test_version_is_the_tools(tmp_path, module, prog):
    import sys

    from nas import __version__
    from helpers import cli_env
    import subprocess

    r = subprocess.run([sys.executable, "-m", module, "--version"], cwd=tmp_path, env=cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"{prog} {__version__} (latnas)", r.stdout
