"""optuna-dashboard on the SQLite file, over loopback: the study, its objective names (those of
search.objectives) and the constraints of every trial."""
from __future__ import annotations

import contextlib
import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest


optuna_dashboard = pytest.importorskip("optuna_dashboard")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def _serving(url: str, name: str, n_objectives: int):
    """A live optuna-dashboard on ``url``: (base url, the study id of ``name``)."""
    app = optuna_dashboard.wsgi(url)
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)  # port 0: a free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        studies = _get(f"{base}/api/studies")["study_summaries"]
        mine = [s for s in studies if s["study_name"] == name]
        assert len(mine) == 1 and mine[0]["directions"] == ["minimize"] * n_objectives
        yield base, mine[0]["study_id"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def dashboard(finished_study):
    """A live optuna-dashboard on the finished study: (base url, study id, budget_ms)."""
    url, name, budget = finished_study
    with _serving(url, name, 2) as (base, study_id):
        yield base, study_id, budget


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def test_dashboard_serves_the_study_with_named_objectives(dashboard, finished_study):
    base, study_id, _ = dashboard
    detail = _get(f"{base}/api/studies/{study_id}")
    assert detail["name"] == finished_study[1]
    assert detail["objective_names"] == ["val_loss", "latency_ms"]
    assert len(detail["trials"]) == 16 and len(detail["best_trials"]) >= 1


def test_dashboard_shows_each_trials_latency_constraint_and_feasibility(dashboard):
    base, study_id, budget = dashboard
    trials = [t for t in _get(f"{base}/api/studies/{study_id}")["trials"] if t["state"] == "Complete"]
    feasible = set()
    for t in trials:
        latency_ms = t["values"][1]
        # The dashboard draws a trial as feasible when every constraint is <= 0.
        assert t["constraints"] == [pytest.approx(latency_ms - budget)]
        if all(c <= 0 for c in t["constraints"]):
            feasible.add(t["number"])
        assert (t["number"] in feasible) == (latency_ms <= budget)
    assert 0 < len(feasible) < len(trials)  # the budget splits the study
    # The dashboard's "best trials" (it ranks without constraints) are all within budget,
    # the baseline over budget included: its loss is not its value.
    best = {t["number"] for t in _get(f"{base}/api/studies/{study_id}")["best_trials"]}
    assert best and best <= feasible
    baseline = [t for t in trials if {"key": "baseline", "value": "True"} in t["user_attrs"]]
    assert len(baseline) == 1 and baseline[0]["number"] not in feasible  # the case that matters


def test_dashboard_names_the_objectives_of_the_list(three_objective_study):
    url, name, budget, _ = three_objective_study
    with _serving(url, name, 3) as (base, study_id):
        detail = _get(f"{base}/api/studies/{study_id}")
    assert detail["objective_names"] == ["val_loss", "decode_ms", "peak_mem_mb"]
    for t in (t for t in detail["trials"] if t["state"] == "Complete"):
        memory = t["values"][2]
        assert t["constraints"] == [pytest.approx(memory - budget)]  # the memory budget only
