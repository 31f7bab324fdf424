"""NSGA-II and TPE against random search: hypervolume of the Pareto front, same budget.

Every sampler gets the same number of trials, the same seeds, the same latency table,
budget and supernet: the search is built by ``nas.search.setup.prepare`` from the
composed ``conf/config.yaml``, exactly as ``python -m nas.search`` builds it, and one
accuracy scorer is shared (its results are deterministic and memoised by architecture,
so sharing it saves time and changes no number).

Hypervolume (both objectives minimised) of the feasible Pareto front, with a fixed
reference point: (validation loss of the space's smallest architecture in fp32 under
the same supernet and scorer, the latency budget). The smallest network is what any
search can fall back on, and the budget is the latency limit, so the hypervolume is the
area of loss gained over it times latency saved under the budget. (A uniform guess,
ln 65 = 4.17, was tried first: so far from the front that the area was decided by
whether the single fastest architecture was found.) A point beyond the reference in
either objective adds nothing.

Writes into ``--out``: ``hypervolume.csv`` (one row per sampler and seed),
``hv_history.csv`` and ``hv_history.png`` (hypervolume against trials), ``fronts.png``
(the fronts of the first seed), ``summary.json``, ``config.yaml``,
``environment.json``. Example (the recorded run):

    python experiments/sampler_hypervolume/run.py --out experiments/sampler_hypervolume \\
        --seeds 0 1 2 supernet.checkpoint=outputs/supernet/tiny/supernet.pt

Extra arguments are Hydra overrides of ``conf/config.yaml``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from nas.search.plot import COLORS, plot_fronts  # noqa: E402
from nas.search.results import hypervolume, hypervolume_history, pareto_frame, trials_frame  # noqa: E402
from nas.search.samplers import SamplerConfig  # noqa: E402
from nas.environment import environment  # noqa: E402
from nas.search.run import run_search  # noqa: E402
from nas.search.setup import prepare, typed  # noqa: E402

from nas.hydra_cli import compose_config as compose  # noqa: E402


def report(summary: dict, table: pd.DataFrame, agg: pd.DataFrame, env: dict) -> str:
    """The folder's README: the command, the reference point, the numbers."""
    ref = summary["reference_point"]
    per_seed = "\n".join(
        f"| {r.sampler} | {r.seed} | {r.hypervolume:.5f} | {r.front_size} | {r.within_budget} | "
        f"{r.distinct_archs} | {r.best_loss_within_budget:.4f} |" for r in table.itertuples())
    means = "\n".join(f"| {k} | {r['mean']:.5f} | {r['std']:.5f} | {r['min']:.5f} | {r['max']:.5f} |"
                      for k, r in agg.iterrows())
    return f"""# NSGA-II and TPE against random search, by hypervolume

Command (from the repository root; `train.steps=3500` is the full `tiny` recipe, which
the search trains and caches under `outputs/supernets/` when it is not there yet):

    {summary["command"]}

Every sampler: {summary["n_trials"]} trials, seeds {summary["seeds"]}, the `tiny` space, the
committed CPU table, budget {summary["latency_budget_ms"]} ms, the same supernet and scorer
(16 x 32 validation windows), settings from `conf/sampler/`. Revision {env["git_revision"]};
load average at the end {env["load_average_1_5_15min_at_end"]}.

**Reference point** (fixed, both objectives minimised): validation loss
{ref["val_loss"]:.4f}, latency {ref["latency_ms"]} ms: {ref["why"]}.

| sampler | mean | std | min | max |
|---|---|---|---|---|
{means}

| sampler | seed | hypervolume | on front | within budget | distinct archs | best loss within budget |
|---|---|---|---|---|---|---|
{per_seed}

`hv_history.png`: hypervolume against trials (mean and range over seeds).
`fronts.png`: the three fronts of seed {summary["seeds"][0]}. Per-run seconds in
`hypervolume.csv` are not a speed comparison: the scorer's memo is shared, so later
runs find architectures already scored. The sampler settings (NSGA-II population 24,
redrawing repeated architectures) were chosen on seeds 10-19, not on these.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "sampler_hypervolume")
    ap.add_argument("--n-trials", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--samplers", nargs="+", default=["nsga2", "tpe", "random"])
    args, overrides = ap.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    db = ROOT / "outputs" / "experiments" / "sampler_hypervolume.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.unlink(missing_ok=True)  # this experiment's own scratch file, rebuilt on every run
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    base = [f"search.n_trials={args.n_trials}", f"search.storage=sqlite:///{db}",
            "search.progress=false", "search.study_name=hv", *overrides]
    cfg = compose(base)
    p = prepare(cfg, "cpu")
    from omegaconf import OmegaConf
    (args.out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    budget = p.search.latency_budget_ms
    smallest = p.space.smallest("fp32")
    ref = (p.scorer(smallest),
           budget if budget is not None else p.table.predict_ms(p.space.largest("fp32")))

    rows, histories, first_fronts = [], {}, {}
    for name in args.samplers:
        sampler = typed(SamplerConfig, compose([*base, f"sampler={name}"]).sampler, "sampler")
        for seed in args.seeds:
            search = dataclasses.replace(p.search, study_name=f"{name}-seed{seed}", seed=seed)
            t0 = time.perf_counter()
            res = run_search(p.space, p.table, p.scorer, search, sampler,
                             device=p.hardware.device, study_attrs=p.study_attrs,
                             trial_attrs=p.trial_attrs, storage=p.storage)
            df = trials_frame(res.study)
            front = pareto_frame(df)
            hv = hypervolume(front[["val_loss", "latency_ms"]].to_numpy(), ref)
            histories[(name, seed)] = hypervolume_history(df, ref)
            if seed == args.seeds[0]:
                first_fronts[name] = df
            rows.append({"sampler": name, "seed": seed, "n_trials": len(df),
                         "hypervolume": hv, "front_size": len(front),
                         "within_budget": int(df["feasible"].sum()),
                         "distinct_archs": df["arch_id"].nunique(),
                         "best_loss_within_budget": front["val_loss"].min(),
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)

    table = pd.DataFrame(rows)
    table.to_csv(args.out / "hypervolume.csv", index=False)
    hist = pd.DataFrame({f"{n}-seed{s}": h for (n, s), h in histories.items()})
    hist.index = hist.index + 1
    hist.index.name = "trials"
    hist.to_csv(args.out / "hv_history.csv")

    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    for i, name in enumerate(args.samplers):
        runs = np.stack([histories[(name, s)] for s in args.seeds])
        x = np.arange(1, runs.shape[1] + 1)
        c = COLORS[i % len(COLORS)]
        ax.plot(x, runs.mean(0), color=c, lw=1.8, label=f"{name} (mean of {len(args.seeds)} seeds)")
        ax.fill_between(x, runs.min(0), runs.max(0), color=c, alpha=0.15, lw=0)
    ax.set_xlabel("trials")
    ax.set_ylabel(f"hypervolume (reference: loss {ref[0]:.3f}, {ref[1]:g} ms)")
    ax.set_title("Pareto-front hypervolume by sampler (band: min to max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out / "hv_history.png")
    plot_fronts(first_fronts, args.out / "fronts.png",
                title=f"Pareto fronts after {args.n_trials} trials (seed {args.seeds[0]}), "
                      f"budget {budget:g} ms")

    agg = table.groupby("sampler")["hypervolume"].agg(["mean", "std", "min", "max"])
    summary = {
        "command": " ".join(["python", "experiments/sampler_hypervolume/run.py", *sys.argv[1:]]),
        "reference_point": {"val_loss": ref[0], "latency_ms": ref[1],
                            "why": f"loss of the smallest architecture ({smallest.describe()}) "
                                   "under this supernet and scorer; the latency budget"},
        "n_trials": args.n_trials, "seeds": args.seeds, "latency_budget_ms": budget,
        "hypervolume": {k: {m: round(float(v), 5) for m, v in r.items()}
                        for k, r in agg.iterrows()},
        "supernet": p.study_attrs["supernet"], "table": p.hardware.table,
        "scorer": {"calls": p.scorer.n_calls, "evaluated": p.scorer.n_evaluated},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    env = environment()
    (args.out / "environment.json").write_text(json.dumps(env, indent=2))
    (args.out / "README.md").write_text(report(summary, table, agg, env))
    print(table.to_string(index=False))
    print(agg.to_string())


if __name__ == "__main__":
    main()
