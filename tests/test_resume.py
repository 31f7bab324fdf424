"""Resuming a study: new draws, not the first run's again; changed settings refused.

As a user would: 12 trials on the tiny space, then the same command with n_trials=24.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search.study_settings import changed_setting, search_settings
from nas.search.samplers import SamplerConfig
from helpers import FAST_SCORE, run_cli, search_cmd



def _args(db: Path, ckpt: Path, *extra: str) -> list[str]:
    return search_cmd(f"search.storage=sqlite:///{db}", "search.study_name=r",
                      f"supernet.checkpoint={ckpt}", "search.progress=false", *FAST_SCORE, *extra)


def _resume(w: Path, ckpt: Path, *extra: str) -> tuple[Path, list]:
    """A study of 12 trials resumed to 24 by the same command: (db, trials by number)."""
    db = w / "nas.db"
    for n in (12, 24):
        r = run_cli(_args(db, ckpt, f"search.n_trials={n}", *extra), cwd=w)
        assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="r", storage=f"sqlite:///{db}")
    return db, sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, tiny_supernet):
    """Seed 0's study: (folder, db, trials by number)."""
    w = tmp_path_factory.mktemp("resume")
    return (w, *_resume(w, tiny_supernet))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_resume_proposes_new_architectures(seed, resumed, tmp_path, tiny_supernet):
    _, trials = (resumed[1], resumed[2]) if seed == 0 else _resume(tmp_path, tiny_supernet,
                                                                    f"search.seed={seed}")
    assert len(trials) == 24
    first = {t.user_attrs["arch_id"] for t in trials[:12]}
    repeats = [t.number for t in trials[12:] if t.user_attrs["arch_id"] in first]
    assert len(repeats) <= 1, repeats  # before: 11 of 12 (the sampler replayed its seed)


@pytest.mark.parametrize("override, key", [
    ("sampler=tpe", "sampler.name"),
    ("sampler.population_size=12", "sampler.population_size"),
    ("search.seed=1", "search.seed"),
    ("search_space.d_model=[64,128]", "search_space.d_model"),
])
def test_a_resume_with_other_settings_is_refused(resumed, tiny_supernet, override, key):
    w, db, _ = resumed
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    r = run_cli(_args(db, tiny_supernet, "search.n_trials=30", override), cwd=w)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: {key}: study 'r' in "), lines[0]
    assert "choose another search.study_name" in lines[0]
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_another_study_name_starts_afresh_with_other_settings(resumed, tiny_supernet):
    w, db, _ = resumed
    r = run_cli(_args(db, tiny_supernet, "search.n_trials=2", "sampler=tpe",
                      "search.study_name=r-tpe"), cwd=w)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="r-tpe", storage=f"sqlite:///{db}")
    assert study.user_attrs["sampler"]["name"] == "tpe"


def test_settings_name_the_innermost_key_that_changed():
    nsga = search_settings(SamplerConfig(), 0, ["val_loss", "latency_ms"])
    assert changed_setting(nsga, dict(nsga)) is None
    tpe = search_settings(SamplerConfig(name="tpe"), 0, ["val_loss", "latency_ms"])
    assert changed_setting(nsga, tpe) == ("sampler.name", "nsga2", "tpe")
    wider = {**nsga, "space": {"name": "tiny", "n_layer": {"min": 1, "max": 4}}}
    narrow = {**nsga, "space": {"name": "tiny", "n_layer": {"min": 1, "max": 3}}}
    assert changed_setting(wider, narrow) == ("search_space.n_layer.max", 4, 3)
    # A study made before a setting was recorded resumes (and records it then).
    assert changed_setting({"space": wider["space"]}, wider) is None
    # The options of another sampler do not matter.
    assert SamplerConfig(n_startup_trials=5).settings() == SamplerConfig().settings()
