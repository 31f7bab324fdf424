"""The jobs of the GPU experiments, each runnable alone in a worker process.

A job is a JSON-able dict with a ``kind`` and its arguments; :func:`run_job` does it and
returns a JSON-able result. Kinds:

- ``supernet``: train a supernet of ``shakespeare`` with the recipe and a distillation
  weight; report the inherited-weight validation and test losses of the largest, the
  baseline and the smallest sub-network.
- ``score``: validation losses of given architectures with a supernet's inherited
  weights (the search's scorer: 16 x 32 windows of the validation split).
- ``search``: ``python -m nas.search`` on ``hardware=h100-graph`` with a budget, then
  every finished trial with its architecture, read back from the study.
- ``alone``: one architecture trained alone (from scratch or fine-tuned from a
  supernet's slices), early-stopped on validation; its test loss.
- ``latency``: each architecture's forward pass timed as a CUDA graph (batch 1, 256
  tokens), in passes; the fastest pass's median kept, as the latency tables do.

Needs torch, numpy, pandas and pyyaml; the ``search`` job also Optuna and Hydra.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from nas.supernet.data import load_corpus  # noqa: E402
from nas.supernet.score import TEST_BATCHES, AccuracyScorer, split_loss  # noqa: E402
from nas.space import ArchConfig, SearchSpace, load_space  # noqa: E402
from nas.supernet.recipe import TrainConfig, resolve_device
from nas.supernet.standalone import train_standalone
from nas.supernet.train import load_supernet, train_supernet

SCORE_BATCHES, SCORE_BATCH_SIZE = 16, 32  # conf/config.yaml's score.*: what the search uses


def recipe(job: dict[str, Any]) -> TrainConfig:
    """The job's training recipe: ``conf/train/<recipe>.yaml`` with the job's overrides."""
    return TrainConfig.from_recipe(job["recipe"], **job.get("train", {}))


def space_of_job(job: dict[str, Any]) -> SearchSpace:
    return load_space(job["space"])


def supernet_dir(work: Path, job: dict[str, Any]) -> Path:
    return work / "supernets" / job["name"]


def _supernet(job: dict[str, Any], work: Path) -> dict[str, Any]:
    space, cfg = space_of_job(job), recipe(job)
    corpus = load_corpus(cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    t0 = time.perf_counter()
    path = train_supernet(space, corpus, cfg, supernet_dir(work, job), progress=False)
    seconds = time.perf_counter() - t0
    device = resolve_device(cfg.device)
    net = load_supernet(path, space, device, corpus=corpus)
    scorer = AccuracyScorer(net, corpus, device, SCORE_BATCHES, SCORE_BATCH_SIZE)
    out: dict[str, Any] = {"train_seconds": seconds, "step": net.meta["step"],
                           "tokens_per_s": net.meta["tokens_per_s"]}
    for role, arch in (("largest", space.largest()), ("baseline", space.baseline_arch()),
                       ("smallest", space.smallest())):
        if arch is None:
            continue
        out[f"{role}_val"] = scorer(arch)
        out[f"{role}_test"] = split_loss(net, corpus, "test", arch, device, TEST_BATCHES)
    return out


def _score(job: dict[str, Any], work: Path) -> dict[str, Any]:
    space = space_of_job(job)
    corpus = load_corpus(None, block_size=space.block_size, vocab_size=space.vocab_size)
    device = resolve_device(job.get("device", "auto"))
    net = load_supernet(supernet_dir(work, {"name": job["supernet"]}) / "supernet.pt", space,
                        device, corpus=corpus)
    scorer = AccuracyScorer(net, corpus, device, SCORE_BATCHES, SCORE_BATCH_SIZE)
    return {"val": {ArchConfig.from_dict(a).arch_id: scorer(ArchConfig.from_dict(a))
                    for a in job["archs"]}}


def _search(job: dict[str, Any], work: Path) -> dict[str, Any]:
    from nas.search.storage import open_storage
    from nas.search.study import find_study
    ckpt = supernet_dir(work, {"name": job["supernet"]}) / "supernet.pt"
    run_dir = work / f"search-{job['name']}"
    storage = f"sqlite:///{work / ('nas-' + job['name'] + '.db')}"  # one file each: created at once
    cmd = [sys.executable, "-m", "nas.search", f"search_space={job['space']}",
           f"hardware={job['hardware']}", f"supernet.checkpoint={ckpt}",
           f"search.device={job.get('device', 'auto')}", f"search.n_trials={job['n_trials']}",
           f"search.latency_budget_ms={job['budget_ms']}", f"search.storage={storage}",
           f"search.study_name={job['name']}", f"search.seed={job.get('seed', 0)}",
           "search.progress=false", f"hydra.run.dir={run_dir}",
           f"search_space.precision.{job['precision_device']}=[{','.join(job['precisions'])}]"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (work / f"search-{job['name']}.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0:
        raise RuntimeError(f"nas.search exited {p.returncode}: {p.stderr[-2000:]}")
    study = find_study(open_storage(storage), job["name"])
    trials = trial_rows(study, "val_loss", "latency_ms")
    return {"seconds": seconds, "trials": trials, "command": " ".join(cmd[1:])}


def trial_rows(study: Any, score: str, latency: str) -> list[dict[str, Any]]:
    """Every complete trial of a search with an architecture: its first objective (None
    when it was not scored) as ``score``, its second as ``latency``, feasibility and
    whether it is on the front."""
    import optuna
    front = {t.number for t in study.best_trials}
    rows = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "arch" not in t.user_attrs:
            continue
        scored = bool(t.user_attrs.get("scored", True))
        # The baseline over budget is scored, its value +inf: its score is kept beside.
        value = t.user_attrs.get("reference_val_loss", t.values[0])
        rows.append({"number": t.number, "arch": t.user_attrs["arch"],
                     score: value if scored else None, latency: t.values[1],
                     "feasible": all(v <= 0 for v in t.constraints.values()),
                     "pareto": t.number in front})
    return rows


def _alone(job: dict[str, Any], work: Path) -> dict[str, Any]:
    arch = ArchConfig.from_dict(job["arch"])
    cfg = dataclasses.replace(recipe(job), seed=job["seed"])
    corpus = load_corpus(cfg.data, block_size=arch.block_size, vocab_size=arch.vocab_size)
    init = None
    if job.get("init") == "supernet":
        path = supernet_dir(work, {"name": job["supernet"]}) / "supernet.pt"
        init = load_supernet(path, corpus=corpus)
    t0 = time.perf_counter()
    r = train_standalone(arch, corpus, cfg, n_batches=SCORE_BATCHES, batch_size=SCORE_BATCH_SIZE,
                         init=init)
    return {"val_loss": r.val_loss, "test_loss": r.test_loss, "best_step": r.best_step,
            "steps": r.steps, "train_seconds": r.seconds, "wall_seconds": time.perf_counter() - t0,
            "tokens_per_s": r.tokens_per_s, "params": r.params, "history": list(r.history)}


def _latency(job: dict[str, Any], work: Path) -> dict[str, Any]:
    from nas.latency.blocks import time_model
    from nas.latency.measure import TimerSettings, warm_gpu
    from nas.latency.spec import Workload

    device = "cuda" if torch.cuda.is_available() else "cpu"
    mode = job.get("mode", "graph") if device == "cuda" else "eager"
    archs = [ArchConfig.from_dict(a) for a in job["archs"]]
    workload = Workload(device=device, batch_size=1, seq_len=archs[0].block_size,
                        precisions=tuple(sorted({a.precision for a in archs})), mode=mode)
    timer = TimerSettings(repeats=job.get("repeats", 20), warmup=10, window_ms=8.0,
                          cpu_clock="wall", passes=1)
    if device == "cuda":
        warm_gpu(2.0)
    passes: dict[str, list[dict[str, float]]] = {a.arch_id: [] for a in archs}
    for p in range(job.get("passes", 3)):  # whole sweeps, so a disturbance rarely hits all
        for a in archs:
            t = time_model(a, workload, timer, seed=p)
            passes[a.arch_id].append({"median_ms": t.median_ms, "p10_ms": t.p10_ms,
                                      "p90_ms": t.p90_ms})
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    return {"device": gpu, "mode": mode, "passes": passes,
            "median_ms": {k: min(x["median_ms"] for x in v) for k, v in passes.items()}}


KINDS = {"supernet": _supernet, "score": _score, "search": _search, "alone": _alone,
         "latency": _latency}


def run_job(job: dict[str, Any], work: Path) -> dict[str, Any]:
    return KINDS[job["kind"]](job, work)


if __name__ == "__main__":  # python jobs.py JOB.json WORK RESULT.json
    job_file, work_dir, result_file = sys.argv[1:4]
    torch.set_num_threads(int(os.environ.get("JOB_THREADS", "1")))
    job_ = json.loads(Path(job_file).read_text())
    t_start = time.perf_counter()
    res = run_job(job_, Path(work_dir))
    res["job_wall_seconds"] = time.perf_counter() - t_start
    tmp = Path(result_file + ".tmp")
    tmp.write_text(json.dumps(res))
    tmp.replace(result_file)
