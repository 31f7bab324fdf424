"""Where a search's time goes: trials per second, and a profile of the same search.

Builds the search exactly as ``python -m nas.search`` does (``nas.search.setup.prepare``
on the composed config, so the same table, supernet and scorer), then runs it twice in
fresh studies:

1. timed, without a profiler: trials/s and the wall-clock split of every trial into
   accuracy scoring, latency lookup, and the rest (Optuna's sampler and storage);
2. under cProfile: the same split from the profile, the rest broken into the sampler,
   storage writes and storage reads, and the top functions.

Writes into ``--out``: ``summary.json``, ``breakdown.csv``, ``profile_top.txt``,
``trials_timed.csv``, ``config.yaml``, ``environment.json``. Example (the recorded run):

    python experiments/search_profile/run.py --out experiments/search_profile \\
        supernet.checkpoint=outputs/supernet/tiny/supernet.pt

Extra arguments are Hydra overrides of ``conf/config.yaml``.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout

import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from nas.search.results import trials_frame  # noqa: E402
from nas.environment import environment  # noqa: E402
from nas.search.run import run_study  # noqa: E402
from nas.hydra_cli import compose_config as compose  # noqa: E402
from nas.search.setup import prepare  # noqa: E402

# Functions whose cumulative time makes up each part of the profile. The sampler's own
# storage reads are inside "sampler"; the rest are module-qualified storage methods.
PARTS = {
    "scoring": [("nas/supernet/score.py", "__call__")],
    "latency lookup": [("nas/latency/table.py", "predict_ms")],
    "sampler": [("optuna/samplers", "sample_relative"), ("optuna/samplers", "sample_independent"),
                ("optuna/samplers", "infer_relative_search_space"),
                ("optuna/samplers", "before_trial"), ("optuna/samplers", "after_trial")],
    "storage writes": [("_cached_storage.py", "set_trial_param"),
                       ("_cached_storage.py", "set_trial_user_attr"),
                       ("_cached_storage.py", "set_trial_system_attr"),
                       ("_cached_storage.py", "set_trial_state_values"),
                       ("_cached_storage.py", "create_new_trial")],
}


def part_seconds(stats: pstats.Stats) -> dict[str, float]:
    """Cumulative seconds per part, each function counted once (recursion aside)."""
    out = {k: 0.0 for k in PARTS}
    for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        for part, keys in PARTS.items():
            if any(f in file and func == name for f, name in keys):
                out[part] += ct
    return out


def report(summary: dict, bd: pd.DataFrame, env: dict) -> str:
    """The folder's README: the command, the numbers, where the time goes."""
    st = summary["stage_seconds"]
    rows = "\n".join(f"| {r.run} | {r.part} | {r.seconds:.2f} | {r['share_%']:.1f}% |"
                     for _, r in bd.iterrows())
    sc = summary["scorer"]
    return f"""# Where a 300-trial search spends its time

Command (from the repository root; `train.steps=3500` is the full `tiny` recipe, which
the search trains and caches under `outputs/supernets/` when it is not there yet):

    {summary["command"]}

Search: `tiny` space, `{summary["sampler"]}`, the committed CPU table ({summary["table"]}),
budget {summary["latency_budget_ms"]} ms, SQLite storage, scoring on 16 x 32 validation windows.
Machine: {env["platform"]}, torch {env["torch"]} with {env["cpu_threads"]} threads, Optuna
{env["optuna"]}; load average at the end {env["load_average_1_5_15min_at_end"]} (2 cores,
shared). Revision {env["git_revision"]}.

**{summary["n_trials"]} trials in {summary["seconds"]:.1f} s: {summary["trials_per_s"]:.2f} trials/s.**
{summary["trials_scored"]} trials were scored ({sc["evaluated"]} distinct architectures evaluated,
{sc["memo_hits"]} answered from the scorer's memo); {summary["trials_over_budget_not_scored"]} were over
budget and never scored. Scoring took {st["score"]:.1f} s ({summary["scoring_share_%"]}% of the
search), the latency table {st["latency"] * 1e3:.0f} ms ({summary["latency_share_%"]}%), and Optuna
(sampler, storage, trial bookkeeping) the rest.

| run | part | seconds | share |
|---|---|---|---|
{rows}

The timed run measures wall-clock stages inside the objective; the cProfile run (a
fresh study, same seed) splits the Optuna part by function (see `profile_top.txt`). The
profiler slows Python code (Optuna) more than torch kernels, so its shares understate
scoring. Files: `summary.json`, `breakdown.csv`, `profile_top.txt`, `trials_timed.csv`,
`config.yaml` (the resolved config), `environment.json`.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "search_profile")
    ap.add_argument("--n-trials", type=int, default=300)
    args, overrides = ap.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    db = ROOT / "outputs" / "experiments" / "search_profile.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)  # this experiment's own scratch file, rebuilt on every run
    base = [f"search.n_trials={args.n_trials}", f"search.storage=sqlite:///{db}",
            "search.progress=false", *overrides]
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    cfg = compose([*base, "search.study_name=timed"])
    p = prepare(cfg, "cpu")
    from omegaconf import OmegaConf
    (args.out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    timed = run_study(p.space, p.table, p.scorer, p.search, p.sampler, device=p.hardware.device,
                      study_attrs=p.study_attrs, trial_attrs=p.trial_attrs, storage=p.storage)
    df = trials_frame(timed.study)
    df.to_csv(args.out / "trials_timed.csv", index=False)
    n_scored = int(df["scored"].sum())
    scorer_stats = {"calls": p.scorer.n_calls, "evaluated": p.scorer.n_evaluated,
                    "memo_hits": p.scorer.hits, "evaluating_s": round(p.scorer.seconds, 3)}

    # The profiled run: a fresh study and a fresh scorer memo, the same seed.
    cfg2 = compose([*base, "search.study_name=profiled"])
    p2 = prepare(cfg2, "cpu")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    run_study(p2.space, p2.table, p2.scorer, p2.search, p2.sampler, device=p2.hardware.device,
              study_attrs=p2.study_attrs, trial_attrs=p2.trial_attrs, storage=p2.storage)
    prof.disable()
    total_prof = time.perf_counter() - t0
    stats = pstats.Stats(prof)
    parts = part_seconds(stats)
    parts["other (Optuna bookkeeping, storage reads, our trial code)"] = max(
        0.0, total_prof - sum(parts.values()))
    with open(args.out / "profile_top.txt", "w") as f:
        pstats.Stats(prof, stream=f).sort_stats("cumulative").print_stats(45)

    st = timed.stage_seconds
    rows = [{"run": "timed", "part": "scoring", "seconds": st["score"]},
            {"run": "timed", "part": "latency lookup", "seconds": st["latency"]},
            {"run": "timed", "part": "Optuna sampler + storage + trial bookkeeping",
             "seconds": st["optuna_and_storage"]}]
    rows += [{"run": "cProfile", "part": k, "seconds": v} for k, v in parts.items()]
    bd = pd.DataFrame(rows)
    bd["share_%"] = 100 * bd["seconds"] / bd.groupby("run")["seconds"].transform("sum")
    bd.round(4).to_csv(args.out / "breakdown.csv", index=False)

    summary = {
        "command": " ".join(["python", "experiments/search_profile/run.py", *sys.argv[1:]]),
        "n_trials": timed.new_trials, "trials_scored": n_scored,
        "trials_over_budget_not_scored": int((~df["scored"]).sum()),
        "seconds": round(timed.seconds, 2), "trials_per_s": round(timed.trials_per_s, 3),
        "stage_seconds": {k: round(v, 3) for k, v in st.items()},
        "scoring_share_%": round(100 * st["score"] / timed.seconds, 1),
        "latency_share_%": round(100 * st["latency"] / timed.seconds, 3),
        "profiled_seconds": round(total_prof, 2),
        "profile_parts_s": {k: round(v, 3) for k, v in parts.items()},
        "scorer": scorer_stats,
        "sampler": p.sampler.name, "latency_budget_ms": p.search.latency_budget_ms,
        "supernet": p.study_attrs["supernet"], "table": p.hardware.table,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    env = environment()
    (args.out / "environment.json").write_text(json.dumps(env, indent=2))
    (args.out / "README.md").write_text(report(summary, bd, env))
    print(json.dumps(summary, indent=2))
    print(bd.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
