"""optuna-dashboard on the SQLite file, over loopback: the study and both objective names."""
from __future__ import annotations

import json
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest

pytest_plugins = ["search_support"]  # its session fixtures: a tiny supernet, a finished study

optuna_dashboard = pytest.importorskip("optuna_dashboard")


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_dashboard_serves_the_study_with_named_objectives(finished_study):
    url, name, _ = finished_study
    app = optuna_dashboard.wsgi(url)
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)  # port 0: a free one
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(f"{base}/api/studies", timeout=30) as r:
            studies = json.load(r)["study_summaries"]
        mine = [s for s in studies if s["study_name"] == name]
        assert len(mine) == 1 and mine[0]["directions"] == ["minimize", "minimize"]
        with urllib.request.urlopen(f"{base}/api/studies/{mine[0]['study_id']}", timeout=30) as r:
            detail = json.load(r)
        assert detail["name"] == name
        assert detail["objective_names"] == ["val_loss", "latency_ms"]
        assert len(detail["trials"]) == 16 and len(detail["best_trials"]) >= 1
    finally:
        server.shutdown()
        server.server_close()
