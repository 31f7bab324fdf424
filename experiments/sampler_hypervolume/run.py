"""NSGA-II and TPE against random search: hypervolume of the Pareto front, same budget.

Every sampler gets the same number of trials, the same seeds, the same latency table,
budget and supernet: the search is built by ``nas.search.setup.prepare`` from the
composed ``conf/config.yaml``, exactly as ``python -m nas.search`` builds it, and one
accuracy scorer is shared (its results are deterministic and memoised by architecture,
so sharing it saves time and changes no number). Each run keeps its study in memory:
the storage changes no proposal, and SQLite's writes take about a fifth of a search's
time (experiments/search_profile).

Hypervolume (both objectives minimised) of the feasible Pareto front, with a fixed
reference point: (validation loss of the space's smallest architecture in fp32 under
the same supernet and scorer, the latency budget). The smallest network is what any
search can fall back on, and the budget is the latency limit, so the hypervolume is the
area of loss gained over it times latency saved under the budget. A point beyond the
reference in either objective adds nothing.

Samplers differ in how fast they approach the best front, and a small space lets every
good sampler reach it: so the hypervolume is reported at several trial counts
(``--at``), per seed, with the spread over seeds and a bootstrap interval (over seeds)
of each pair's difference of means. A pair whose interval holds 0 is not ranked.

A variant is a sampler name with overrides of its group, e.g.
``nsga2,sampler.no_repeat=false`` (labelled ``nsga2 no_repeat=false``).

Writes into ``--out``: ``hypervolume.csv`` (one row per variant, seed and trial count),
``hv_history.csv`` and ``hv_history.png`` (hypervolume against trials), ``fronts.png``
(the fronts of the first seed), ``summary.json``, ``config.yaml``, ``environment.json``
and ``README.md``. Extra arguments are Hydra overrides of ``conf/config.yaml``; the
recorded run:

    python experiments/sampler_hypervolume/run.py --out experiments/sampler_hypervolume \\
        train.steps=3500
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from nas.environment import environment  # noqa: E402
from nas.hydra_cli import compose_config as compose  # noqa: E402
from nas.search.plot import COLORS, plot_fronts  # noqa: E402
from nas.search.results import hypervolume, hypervolume_history, trials_frame  # noqa: E402
from nas.search.run import run_study  # noqa: E402
from nas.search.samplers import SamplerConfig  # noqa: E402
from nas.search.config import typed  # noqa: E402
from nas.search.setup import prepare  # noqa: E402

from report import readme  # noqa: E402  (beside this file)

BOOTSTRAP = 10_000  # resamples of the seeds for each interval


def variant(spec: str) -> tuple[str, list[str]]:
    """``"nsga2,sampler.no_repeat=false"`` -> (label, Hydra overrides)."""
    name, *extra = spec.split(",")
    label = " ".join([name, *(e.removeprefix("sampler.") for e in extra)])
    return label, [f"sampler={name}", *extra]


def mean_diff_interval(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """95% bootstrap interval of mean(a) - mean(b), each resampled over its seeds."""
    ia = rng.integers(0, len(a), (BOOTSTRAP, len(a)))
    ib = rng.integers(0, len(b), (BOOTSTRAP, len(b)))
    d = a[ia].mean(1) - b[ib].mean(1)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def front_of(df: pd.DataFrame) -> pd.DataFrame:
    """The feasible, scored, non-dominated rows of ``df`` (one per architecture)."""
    ok = df[df["feasible"] & df["scored"]].drop_duplicates("arch_id")
    pts = ok[["val_loss", "latency_ms"]].to_numpy()
    dominated = [bool(((pts <= q).all(1) & (pts < q).any(1)).any()) for q in pts]
    return ok[~np.array(dominated, dtype=bool)]


def compare(table: pd.DataFrame) -> pd.DataFrame:
    """Every pair of variants at every trial count: difference of means and its interval."""
    rng = np.random.default_rng(0)
    rows = []
    for at, g in table.groupby("trials", sort=True):
        hv = {k: v["hypervolume"].to_numpy() for k, v in g.groupby("variant", sort=False)}
        for x, y in itertools.combinations(hv, 2):
            lo, hi = mean_diff_interval(hv[x], hv[y], rng)
            rows.append({"trials": at, "a": x, "b": y, "mean_a_minus_b": hv[x].mean() - hv[y].mean(),
                         "ci95_low": lo, "ci95_high": hi,
                         "verdict": f"{x} > {y}" if lo > 0 else f"{y} > {x}" if hi < 0
                         else "within noise"})
    return pd.DataFrame(rows)


def plot_history(histories: dict, labels: list[str], seeds: list[int], ref, path: Path) -> None:
    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    for i, label in enumerate(labels):
        runs = np.stack([histories[(label, s)] for s in seeds])
        x = np.arange(1, runs.shape[1] + 1)
        c = COLORS[i % len(COLORS)]
        ax.plot(x, runs.mean(0), color=c, lw=1.8, label=f"{label} (mean of {len(seeds)} seeds)")
        ax.fill_between(x, runs.min(0), runs.max(0), color=c, alpha=0.15, lw=0)
    ax.set_xlabel("trials")
    ax.set_ylabel(f"hypervolume (reference: loss {ref[0]:.3f}, {ref[1]:g} ms)")
    ax.set_title("Pareto-front hypervolume by sampler (band: min to max over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "sampler_hypervolume")
    ap.add_argument("--n-trials", type=int, default=300)
    ap.add_argument("--at", type=int, nargs="+", default=[50, 100, 300],
                    help="trial counts at which hypervolumes are compared")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--samplers", nargs="+",
                    default=["nsga2", "tpe", "random", "nsga2,sampler.no_repeat=false"])
    args, overrides = ap.parse_known_args()
    overrides = [o for o in overrides if o != "--"]  # "--" ends a list option
    at = sorted({a for a in args.at if a <= args.n_trials} | {args.n_trials})
    args.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    scratch = tempfile.TemporaryDirectory()  # prepare() opens a storage; the runs keep none
    base = [f"search.n_trials={args.n_trials}", "search.progress=false", "search.study_name=hv",
            f"search.storage=sqlite:///{scratch.name}/unused.db", *overrides]
    cfg = compose(base)
    hardware = next((o.split("=", 1)[1] for o in overrides if o.startswith("hardware=")), "cpu")
    p = prepare(cfg, hardware)
    from omegaconf import OmegaConf
    frozen = OmegaConf.to_container(cfg, resolve=True)
    frozen["search"].update(storage="in memory, one per run", study_name="<variant>-seed<seed>")
    (args.out / "config.yaml").write_text(OmegaConf.to_yaml(frozen))
    budget = p.search.latency_budget_ms
    smallest = p.space.smallest("fp32")
    ref = (p.scorer(smallest),
           budget if budget is not None else p.table.predict_ms(p.space.largest("fp32")))

    rows, histories, first_fronts, scored = [], {}, {}, []
    variants = dict(variant(s) for s in args.samplers)
    for label, group in variants.items():
        sampler = typed(SamplerConfig, compose([*base, *group]).sampler, "sampler")
        for seed in args.seeds:
            name = f"{label}-seed{seed}".replace(" ", "-").replace("=", "-")
            search = dataclasses.replace(p.search, study_name=name, seed=seed)
            t0 = time.perf_counter()
            res = run_study(p.space, p.table, p.scorer, search, sampler,
                            device=p.hardware.device, study_attrs=p.study_attrs,
                            trial_attrs=p.trial_attrs, storage=optuna.storages.InMemoryStorage())
            seconds = time.perf_counter() - t0
            df = trials_frame(res.study).sort_values("number")
            histories[(label, seed)] = hypervolume_history(df, ref)
            scored.append(df[df["feasible"] & df["scored"]])
            if seed == args.seeds[0]:
                first_fronts[label] = df
            for n in at:
                first = df[df["number"] < n]
                front = front_of(first)
                rows.append({"variant": label, "seed": seed, "trials": n,
                             "hypervolume": histories[(label, seed)][n - 1],
                             "front_size": len(front), "within_budget": int(first["feasible"].sum()),
                             "distinct_archs": first["arch_id"].nunique(),
                             "best_loss_within_budget": front["val_loss"].min(),
                             "seconds": round(seconds, 1) if n == args.n_trials else None})
            print(rows[-1], flush=True)

    table = pd.DataFrame(rows)
    table.to_csv(args.out / "hypervolume.csv", index=False)
    pairs = compare(table)
    pairs.to_csv(args.out / "pairs.csv", index=False)
    hist = pd.DataFrame({f"{n}-seed{s}": h for (n, s), h in histories.items()})
    hist.index = hist.index + 1
    hist.index.name = "trials"
    hist.to_csv(args.out / "hv_history.csv")
    plot_history(histories, list(variants), args.seeds, ref, args.out / "hv_history.png")
    plot_fronts(first_fronts, args.out / "fronts.png",
                title=f"Pareto fronts after {args.n_trials} trials (seed {args.seeds[0]}), "
                      f"budget {budget:g} ms")

    # The best front any run found: how close each run comes to it says whether the
    # space is saturated (every good sampler reaches it) at the largest trial count.
    union = pd.concat(scored)
    best_known = hypervolume(union[["val_loss", "latency_ms"]].to_numpy(), ref)
    last = table[table["trials"] == args.n_trials]
    agg = table.groupby(["trials", "variant"], sort=False)["hypervolume"].agg(
        ["mean", "std", "min", "max"])
    summary = {
        "command": " ".join(["python", "experiments/sampler_hypervolume/run.py", *sys.argv[1:]]),
        "reference_point": {"val_loss": ref[0], "latency_ms": ref[1],
                            "why": f"loss of the smallest architecture ({smallest.describe()}) "
                                   "under this supernet and scorer; the latency budget"},
        "n_trials": args.n_trials, "at": at, "seeds": args.seeds, "latency_budget_ms": budget,
        "variants": variants,
        "hypervolume": {f"{v} @ {n}": {m: round(float(x), 5) for m, x in r.items()}
                        for (n, v), r in agg.iterrows()},
        "best_known_hypervolume": best_known,
        "runs_reaching_best_known": {v: int((g["hypervolume"] >= best_known - 1e-9).sum())
                                     for v, g in last.groupby("variant", sort=False)},
        "supernet": p.study_attrs["supernet"], "supernet_sha256": p.study_attrs["supernet_sha256"],
        "table": p.hardware.table,
        "scorer": {"calls": p.scorer.n_calls, "evaluated": p.scorer.n_evaluated},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    env = environment()
    (args.out / "environment.json").write_text(json.dumps(env, indent=2))
    (args.out / "README.md").write_text(readme(summary, table, agg, pairs, env))
    print(agg.to_string())
    print(pairs.to_string(index=False))


if __name__ == "__main__":
    main()
