"""The README of ``experiments/sampler_hypervolume``, written from a run's results."""
from __future__ import annotations

import pandas as pd


def _verdicts(pairs: pd.DataFrame, at: int) -> str:
    rows = pairs[pairs["trials"] == at]
    ranked = [r.verdict for r in rows.itertuples() if r.verdict != "within noise"]
    tied = [f"{r.a} / {r.b}" for r in rows.itertuples() if r.verdict == "within noise"]
    return (f"- **{at} trials**: " + ("; ".join(ranked) if ranked else "no pair separated")
            + (f"; within noise: {', '.join(tied)}" if tied else "") + ".")


def _caveats(table: pd.DataFrame, pairs: pd.DataFrame) -> str:
    """What the verdicts above do not say."""
    hv = table.set_index(["trials", "variant", "seed"])["hypervolume"].sort_index()
    same = [f"{r.a} and {r.b} at {r.trials}" for r in pairs.itertuples()
            if (hv.loc[(r.trials, r.a)].to_numpy() == hv.loc[(r.trials, r.b)].to_numpy()).all()]
    ranked = pairs[pairs["verdict"] != "within noise"]
    weakest = ranked.assign(gap=ranked[["ci95_low", "ci95_high"]].abs().min(axis=1)
                            / ranked["mean_a_minus_b"].abs()).sort_values("gap").head(1)
    text = (f"{len(pairs)} comparisons at 95% each: about one in twenty separations can be "
            "chance, so one whose interval only just excludes 0 is weak evidence")
    text += "".join(f" (the weakest here: {r.verdict} at {r.trials} trials, interval "
                    f"[{r.ci95_low:+.5f}, {r.ci95_high:+.5f}])" for r in weakest.itertuples()) + "."
    if same:
        text += (" Identical run for run, seed by seed: " + "; ".join(same) + " (NSGA-II's first"
                 " generation is a random draw with the search's seed, as random search's is).")
    return text


def _saturation(summary: dict) -> str:
    """Whether the runs reach the best front found: then the last trial count cannot rank."""
    n, reach = summary["n_trials"], summary["runs_reaching_best_known"]
    k = len(summary["seeds"])
    counts = ", ".join(f"{v} {r} of {k}" for v, r in reach.items())
    head = (f"The best front any run found has hypervolume "
            f"{summary['best_known_hypervolume']:.5f}; after {n} trials it is reached by "
            f"{counts} runs.")
    if max(reach.values()) * 2 < k:
        return head + " No sampler reaches it reliably: the space is not saturated at this budget."
    return head + (
        f" The space saturates: a sampler that reaches the best front can only tie another"
        f" that does, so at {n} trials equal hypervolumes say nothing about which searches"
        f" better; the smaller trial counts do. To rank samplers beyond that, search a larger"
        f" space (`shakespeare`, with its GPU supernet) or compare at fewer trials, with as"
        f" many seeds.")


def readme(summary: dict, table: pd.DataFrame, agg: pd.DataFrame, pairs: pd.DataFrame,
           env: dict) -> str:
    """The folder's README: the command, the reference point, what can be ranked and what not."""
    ref, n, seeds = summary["reference_point"], summary["n_trials"], summary["seeds"]
    means = "\n".join(f"| {at} | {v} | {r['mean']:.5f} | {r['std']:.5f} | {r['min']:.5f} | "
                      f"{r['max']:.5f} |" for (at, v), r in agg.iterrows())
    diffs = "\n".join(f"| {r.trials} | {r.a} - {r.b} | {r.mean_a_minus_b:+.5f} | "
                      f"[{r.ci95_low:+.5f}, {r.ci95_high:+.5f}] | {r.verdict} |"
                      for r in pairs.itertuples())
    last = table[table["trials"] == n]
    per_seed = "\n".join(
        f"| {r.variant} | {r.seed} | {r.hypervolume:.5f} | {r.front_size} | {r.within_budget} | "
        f"{r.distinct_archs} | {r.best_loss_within_budget:.4f} | {r.seconds} |"
        for r in last.itertuples())
    distinct = last.groupby("variant", sort=False)["distinct_archs"].agg(["mean", "min", "max"])
    repeats = "; ".join(f"{v} {r['mean']:.0f} ({int(r['min'])}-{int(r['max'])})"
                        for v, r in distinct.iterrows())
    return f"""# NSGA-II and TPE against random search, by hypervolume

Command (from the repository root; `train.steps=3500` is the full `tiny` recipe,
`conf/train/tiny.yaml`, which the search trains and caches under `outputs/supernets/`
when it is not there yet, as in `experiments/supernet_tiny_cpu`; the {len(table) // len(summary["at"])} searches
then took {table["seconds"].sum() / 60:.0f} minutes in all):

    {summary["command"]}

Every sampler: {n} trials, seeds {seeds[0]}-{seeds[-1]}, the `tiny` space, the committed
CPU table, budget {summary["latency_budget_ms"]} ms, the same supernet and scorer (16 x 32
validation windows), settings from `conf/sampler/`; `nsga2 no_repeat=false` is NSGA-II
without redrawing repeated architectures. Revision {env["git_revision"]}; load average at
the end {env["load_average_1_5_15min_at_end"]} (2 cores, shared).

**Reference point** (fixed, both objectives minimised): validation loss
{ref["val_loss"]:.4f}, latency {ref["latency_ms"]} ms: {ref["why"]}.

## What this can rank

A pair of samplers is ranked only when the 95% bootstrap interval of its difference of
mean hypervolumes (seeds resampled, {len(seeds)} per sampler) excludes 0:

{chr(10).join(_verdicts(pairs, at) for at in summary["at"])}

{_caveats(table, pairs)}

{_saturation(summary)}

Hypervolume by trial count (over seeds):

| trials | sampler | mean | std | min | max |
|---|---|---|---|---|---|
{means}

Differences of means (a - b) with their 95% bootstrap interval (`pairs.csv`):

| trials | pair | difference | 95% interval | verdict |
|---|---|---|---|---|
{diffs}

## Each run after {n} trials

| sampler | seed | hypervolume | on front | within budget | distinct archs | best loss within budget | seconds |
|---|---|---|---|---|---|---|---|
{per_seed}

Distinct architectures in {n} trials (mean, min-max over seeds): {repeats}. A repeated
architecture is answered from the scorer's memo and adds nothing to the front.

`hypervolume.csv` holds every run at every trial count above; `hv_history.csv` and
`hv_history.png` the hypervolume after every trial (mean and range over seeds);
`fronts.png` the fronts of seed {seeds[0]}. Seconds are not a speed comparison: the
scorer's memo is shared, so later runs find architectures already scored.
"""
