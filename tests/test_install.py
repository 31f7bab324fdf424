"""The installed tool: a wheel built from this tree, installed into a fresh virtualenv
outside the checkout, runs its commands from a folder that is not the checkout.

The virtualenv sees the current environment's packages (torch, Optuna, Hydra), so
nothing is downloaded; the wheel is installed without its dependencies.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
# What a wheel is built from; a copy, so the build leaves nothing in the checkout.
SOURCES = ("pyproject.toml", "README.md", "nas", "conf", "search_spaces", "latency_tables")
COMMANDS = ("nas-search", "nas-train", "nas-latency", "nas-export", "nas-plot", "nas-data")

pytestmark = [pytest.mark.install, pytest.mark.slow]


def _run(args: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``bin/`` folder of a fresh virtualenv with the project's wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    p = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
              "--no-index", "-w", tmp / "dist", src], cwd=tmp)
    assert p.returncode == 0, p.stderr
    wheel, = (tmp / "dist").glob("latnas-*.whl")

    venv = tmp / "venv"
    p = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], cwd=tmp)
    assert p.returncode == 0, p.stderr
    py = venv / "bin" / "python"
    # --system-site-packages reaches the base interpreter's packages only; when the tests
    # run in a virtualenv themselves, its packages are added after the new one's.
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=tmp).stdout.strip()
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_outer_env.pth").write_text("".join(f"{d}\n" for d in sorted(outer)))
    p = _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps",
              "--no-index", wheel], cwd=tmp)
    assert p.returncode == 0, p.stderr
    return venv / "bin"


def test_the_wheel_carries_configs_spaces_and_tables(installed, tmp_path):
    code = ("import nas, nas.paths as p; print(nas.__version__); print(p.CHECKOUT); "
            "print(p.CONF_DIR); print(sorted(x.name for x in p.TABLES_DIR.glob('*.csv'))); "
            "print(sorted(str(x.relative_to(p.DATA_ROOT)) for g in ('*/*.yaml', '*/*/*.yaml') "
            "for x in p.DATA_ROOT.glob(g)))")
    p = _run([installed / "python", "-c", code], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    version, checkout, conf, tables, yamls = p.stdout.splitlines()
    assert version == "0.1.0"
    assert checkout == "None"  # the installed copy, not the source tree
    assert Path(conf).is_relative_to(installed.parent) and (Path(conf) / "config.yaml").is_file()
    assert "cpu-tiny.csv" in tables and "h100-shakespeare.csv" in tables
    # glob, not rglob: conf/search_space is a link to search_spaces/, copied into the wheel
    ours = sorted(str(x.relative_to(ROOT)) for d in ("conf", "search_spaces")
                  for g in ("*.yaml", "*/*.yaml") for x in (ROOT / d).glob(g))
    assert yamls == str(ours)  # every config group and space made it into the wheel


def test_nas_search_runs_from_an_installed_wheel(installed, tmp_path):
    # A budget the baseline (2.2 ms) meets, so four trials always leave a winner to export.
    p = _run([installed / "nas-search", "search.n_trials=4", "train.steps=5", "search.latency_budget_ms=3",
              f"search.storage=sqlite:///{tmp_path}/x.db", "search.progress=false"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "outputs" / "tiny-cpu"
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 4
    assert (out / "pareto.csv").is_file() and (out / "pareto.png").stat().st_size > 0
    winner, = out.glob("winner_*.yaml")
    assert str(winner) in p.stdout
    assert (tmp_path / "x.db").is_file()
    # The committed CPU table was found in the package, and named in the study's record.
    assert "latency_tables/cpu-tiny.csv" in (out / "config.yaml").read_text()


def test_nas_data_prepares_a_corpus_from_an_installed_wheel(installed, tmp_path):
    for i in range(30):
        (tmp_path / "texts" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "texts" / f"{i}.txt").write_text(f"document {i}: " + "some words here " * (i + 5))
    p = _run([installed / "nas-data", "prepare", "texts", "--out", "corpus", "--vocab-size", "280",
              "--split", "0.6", "0.2", "0.2", "--quiet"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert {"manifest.json", "tokenizer.json", "train.bin"} <= set(os.listdir(tmp_path / "corpus"))


@pytest.mark.parametrize("command", COMMANDS)
def test_help_says_what_options_and_an_example(installed, tmp_path, command):
    p = _run([installed / command, "--help"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    text = p.stdout
    assert text.lower().count(command) >= 2  # what it does, and the example
    assert "example" in text.lower()
    if command == "nas-data":
        assert "  prepare " in text
    else:
        assert ("--study" in text) if command in ("nas-export", "nas-plot") else ("== Options" in text)
    if command == "nas-latency":
        assert all(f"  {verb} " in text for verb in ("build", "predict", "validate"))
    assert not list(tmp_path.iterdir())  # --help writes nothing
