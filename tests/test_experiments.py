"""The experiment scripts: import hygiene (they run where Hydra and Optuna are absent)
and the ranking experiment's architecture picking."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nas.space import load_space

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = [ROOT / "experiments" / "ranking_fidelity" / "run.py",
           ROOT / "experiments" / "supernet_gpu" / "run.py"]


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(f"exp_{path.parent.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_no_hydra_optuna_tqdm_or_scipy_needed():
    blocked = ["hydra", "omegaconf", "optuna", "tqdm", "scipy"]
    code = "\n".join([
        "import importlib.util, sys",
        *(f"sys.modules[{m!r}] = None" for m in blocked),  # any import of them now fails
        "import nas.supernet.train, nas.supernet.score",
        *(f"s = importlib.util.spec_from_file_location('m{i}', {str(p)!r}); "
          "s.loader.exec_module(importlib.util.module_from_spec(s))" for i, p in enumerate(SCRIPTS)),
    ])
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def ranking():
    return _load(SCRIPTS[0])


def test_pick_archs_spreads_over_params(ranking):
    space = load_space("tiny")
    archs = ranking.pick_archs(space, 10, seed=0, pool=300)
    assert archs[:2] == [space.largest(), space.smallest()]
    assert len({a.arch_id for a in archs}) == 10
    params = [ranking.param_count(a) for a in archs[2:]]
    assert params == sorted(params)  # one per stratum, in order
    assert archs == ranking.pick_archs(space, 10, seed=0, pool=300)


def test_runtime_h200_smoke_trains_on_a_prepared_bundle_and_resumes(tmp_path):
    """runtime_h200's train-loop stage on the CPU (--smoke): a tiny bundle unpacked and
    prepared, get_batch timed, the project's loop trained; without Hydra, Optuna or tqdm,
    as on the GPU machine. Run again, it measures nothing twice."""
    import csv
    import json
    blocked = ["hydra", "omegaconf", "optuna", "tqdm", "scipy"]
    script = ROOT / "experiments" / "runtime_h200" / "run.py"
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    code = "\n".join([
        "import runpy, sys",
        *(f"sys.modules[{m!r}] = None" for m in blocked),
        f"sys.argv = ['run.py', '--smoke', '--out', {str(out)!r}, '--scratch', {str(scratch)!r}]",
        f"runpy.run_path({str(script)!r}, run_name='__main__')",
    ])

    def run() -> list[dict]:
        p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert p.returncode == 0, p.stderr
        assert "skipped: they need CUDA" in p.stdout
        with open(out / "runtime.csv") as f:
            return list(csv.DictReader(f))

    rows = run()
    assert [(r["what"], r["mode"]) for r in rows] == [
        ("prepare", "tokenizer.json"), ("get-batch", "cpu"), ("train-loop", "eager")]
    prep, batch, loop = rows
    info = json.loads(prep["extra"])
    assert info["tokens"] > 0 and info["matches"] is None  # a made-up bundle: nothing to match
    assert 0 < float(batch["median_ms"]) and batch["seq_len"] == "32"
    r = json.loads(loop["extra"])
    assert r["steps"] == 6 and r["timed_steps"] == 4 and r["tokens_per_s"] > 0
    assert r["tokens_per_s_loop"] > 0 and r["loss_last"] < 10  # about ln(16384) = 9.7 at first
    assert list(scratch.iterdir()) == []  # the unpacked bundle and its corpus are gone
    assert run() == rows
