"""The jobs of the H200 headline, each run in a worker process.

    python jobs.py WORK JOB.json RESULT.json [JOB.json RESULT.json ...]

runs the jobs one after another, writing each result as it finishes. Kinds:

- ``supernet`` and ``alone``: ``experiments/headline_h100/jobs.py``'s (imported): a
  supernet trained with a recipe, its largest, baseline and smallest sub-network scored;
  one architecture trained alone, its test loss.
- ``score``: validation losses of architectures with the supernet's inherited weights
  (the search's scorer: 16 x 32 windows of the validation split).
- ``search``: Optuna through ``nas.search.run.run_study`` (no Hydra), minimising the
  accuracy objective and ``decode_ms`` (the target's decode table) within a decode budget;
  the accuracy objective is the supernet's validation loss or the LTS proxy
  (``-decoder_params / 1e6``); every finished trial read back from the study.
- ``latency``: one architecture in the target's runtime (``fused`` on the H200): a decode
  step at each batch size at the full context, and whole requests, with the bytes-over-
  bandwidth floor of a decode step beside them on a GPU.

Optuna is imported by the ``search`` job alone; Hydra by none. With ``HEADLINE_BLOCK``
set (the smoke run), the worker makes those imports fail, so a test proves it.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
WATCHED = ("optuna", "hydra", "omegaconf")


def _block(jobs: list[dict[str, Any]]) -> None:
    """Make Hydra (and Optuna, where no job is a search) impossible to import."""
    blocked = ["hydra", "omegaconf"] + ([] if any(j["kind"] == "search" for j in jobs) else ["optuna"])
    for m in blocked:
        sys.modules[m] = None  # type: ignore[assignment]  # an import of it now fails


def _h100() -> Any:
    from plan import load_module
    return load_module("headline_h100_jobs", ROOT / "experiments" / "headline_h100" / "jobs.py")


def _supernet_scorer(job: dict[str, Any], work: Path) -> tuple[Any, Any]:
    """The space and the scorer of the job's supernet, on the GPU when there is one."""
    from nas.space import load_space
    from nas.supernet.data import load_corpus
    from nas.supernet.score import AccuracyScorer
    from nas.supernet.recipe import resolve_device
    from nas.supernet.train import load_supernet

    h = _h100()
    space, cfg = load_space(job["space"]), h.recipe(job)
    corpus = load_corpus(cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    device = resolve_device(cfg.device)
    net = load_supernet(h.supernet_dir(work, {"name": job["supernet"]}) / "supernet.pt", space,
                        device, corpus=corpus)
    return space, AccuracyScorer(net, corpus, device, h.SCORE_BATCHES, h.SCORE_BATCH_SIZE)


def _score(job: dict[str, Any], work: Path) -> dict[str, Any]:
    from nas.space import ArchConfig
    _, scorer = _supernet_scorer(job, work)
    archs = [ArchConfig.from_dict(a) for a in job["archs"]]
    return {"val": {a.arch_id: scorer(a) for a in archs}}


def lts_proxy(arch: Any) -> float:
    """LiteTransformerSearch's free accuracy proxy, as a loss to minimise."""
    return -arch.decoder_params / 1e6


def _search(job: dict[str, Any], work: Path) -> dict[str, Any]:
    import optuna

    from nas.latency.predict import CostModel
    from nas.latency.target import Target
    from nas.search.config import SearchConfig
    from nas.search.run import run_study
    from nas.search.samplers import SamplerConfig
    from nas.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = Target(**job["target"])
    if job["scorer"] == "supernet":
        space, scorer = _supernet_scorer(job, work)
    else:
        space, scorer = load_space(job["space"]), lts_proxy
    serving = CostModel.for_target(target, space, phases=("decode",))
    cfg = SearchConfig(n_trials=job["n_trials"], study_name=job["name"],
                       storage=f"sqlite:///{(work / (job['name'] + '.db')).resolve()}",
                       objectives=("val_loss", "decode_ms"), budgets={"decode_ms": job["budget_ms"]},
                       seed=job["seed"], device="auto", progress=False)
    attrs = {"space": space.to_dict(), "target": job["target"], "budgets": cfg.budget_map(),
             "accuracy_objective": job["accuracy_objective"],
             "decode_table": str(serving.decode.path)}
    t0 = time.perf_counter()
    res = run_study(space, {"serving": serving}, scorer, cfg, SamplerConfig(),
                    device=target.device, study_attrs=attrs,
                    trial_attrs={"table_fingerprint": dict(serving.decode.fingerprint)})
    trials = _h100().trial_rows(res.study, "score", "decode_ms")
    return {"seconds": time.perf_counter() - t0, "accuracy_objective": job["accuracy_objective"],
            "budget_ms": job["budget_ms"], "decode_table": str(serving.decode.path),
            "trials": trials}


def _latency(job: dict[str, Any], work: Path) -> dict[str, Any]:
    import torch

    from nas.latency.blocks import time_model
    from nas.latency.floor import bandwidth_gbps, step_bytes
    from nas.latency.measure import TimerSettings, warm_gpu
    from nas.latency.request import time_request
    from nas.latency.spec import Workload
    from nas.latency.target import Target
    from nas.space import ArchConfig

    t, arch = Target(**job["target"]), ArchConfig.from_dict(job["arch"])
    cuda = t.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"target {t.name} is a GPU target, and torch sees no GPU here")
    if cuda:
        warm_gpu(2.0)
    timer = TimerSettings(repeats=job["repeats"], warmup=10, window_ms=20.0 if cuda else 2.0,
                          cpu_clock="wall")
    out: dict[str, Any] = {"device": torch.cuda.get_device_name() if cuda else "cpu",
                           "mode": t.mode, "context": t.context}
    for B in job["batch_sizes"]:  # whole passes: the fastest pass's median is kept
        w = Workload(device=t.device, batch_size=B, seq_len=t.context, precisions=(arch.precision,),
                     mode=t.mode, phase="decode")
        ms = [time_model(arch, w, timer, seed=p).median_ms for p in range(job["passes"])]
        out[f"decode_ms_b{B}"], out[f"decode_ms_b{B}_passes"] = min(ms), ms
    req, ttft = time_request(arch, batch_size=t.batch_size, prompt_len=t.prompt_len,
                             new_tokens=t.new_tokens, context=t.context, device=t.device, mode=t.mode,
                             timer=TimerSettings(repeats=job["request_repeats"], warmup=1,
                                                 window_ms=1.0, cpu_clock="wall"))
    out.update(request_ms=req.median_ms, ttft_ms=ttft.median_ms, request_batch=t.batch_size,
               prompt_len=t.prompt_len, new_tokens=t.new_tokens)
    if cuda:
        torch.cuda.empty_cache()
        bw = bandwidth_gbps()
        out["bandwidth_gbps"] = bw
        for B in job["batch_sizes"]:
            out[f"floor_ms_b{B}"] = step_bytes(arch, B, t.context) / (bw * 1e9) * 1e3
    return out


def run_job(job: dict[str, Any], work: Path) -> dict[str, Any]:
    kinds = {"score": _score, "search": _search, "latency": _latency}
    if job["kind"] in kinds:
        return kinds[job["kind"]](job, work)
    h = _h100()
    return {"supernet": h._supernet, "alone": h._alone}[job["kind"]](job, work)


def main(argv: list[str]) -> None:
    import torch

    work, pairs = Path(argv[0]), list(zip(argv[1::2], argv[2::2]))
    jobs = [json.loads(Path(j).read_text()) for j, _ in pairs]
    if os.environ.get("HEADLINE_BLOCK"):
        _block(jobs)
    torch.set_num_threads(int(os.environ.get("JOB_THREADS", "1")))
    for job, (_, result_file) in zip(jobs, pairs):
        t0 = time.perf_counter()
        res = run_job(job, work)
        res["job_wall_seconds"] = time.perf_counter() - t0
        res["imported"] = sorted(m for m in WATCHED if sys.modules.get(m) is not None)
        tmp = Path(result_file + ".tmp")
        tmp.write_text(json.dumps(res))
        tmp.replace(result_file)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
