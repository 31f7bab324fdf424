"""Tables and plots of the headline experiment and the ranking study, from ``state.jsonl``.

    python experiments/headline_h100/report.py [--state experiments/headline_h100/state.jsonl]

Writes, next to the state (CPU only; pandas and matplotlib):

- ``headline.csv``: one row per trained model and seed (baseline, uniform shrinks,
  searched from scratch and fine-tuned), with measured and predicted latency;
- ``headline_summary.csv`` and ``headline.md``: per architecture, seeds averaged, the
  speed-up over the baseline in the same precision and mode;
- ``headline.png``: test loss against measured latency;
- ``recipes.csv``: the distillation weights side by side;
- ``../ranking_fidelity/h100_shakespeare/`` (for the committed state; else
  ``ranking_fidelity/`` next to the state): ``ranking.csv``, ``summary.json``, ``scatter.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import pandas as pd  # noqa: E402

import run  # noqa: E402
from nas.space import ArchConfig  # noqa: E402

LATENCY_RUNS = (None, "h100-a-repeat", "h100-second", "h100-second-repeat")


def latencies(results: dict[str, Any], plan: run.Plan) -> pd.DataFrame:
    """Every latency run (one column each): the fastest pass's median per architecture."""
    lj = next(j for _, j, _ in plan.jobs() if j["kind"] == "latency" and "tag" not in j)
    cols = {}
    for tag in LATENCY_RUNS:
        r = results.get(run.job_id(lj if tag is None else {**lj, "tag": tag}))
        if r:
            cols[tag or "h100-a"] = r["median_ms"]
    return pd.DataFrame(cols)


def headline(results: dict[str, Any], plan: run.Plan, out: Path) -> pd.DataFrame:
    alpha = plan.chosen_alpha()
    head = plan.done(plan.search_job("headline", alpha, plan.headline_budget))
    cands = plan.candidates(head)
    lat = latencies(results, plan)
    rows = []

    def add(arch: ArchConfig, role: str, init: str) -> None:
        for sd in run.SEEDS:
            r = plan.done(plan.alone_job(arch, sd, role, init, alpha))
            if r is None:
                continue
            m = lat.loc[arch.arch_id] if arch.arch_id in lat.index else None
            rows.append({
                "role": role, "init": init, "arch_id": arch.arch_id, "description": arch.describe(),
                "precision": arch.precision, "seed": run.SEEDS.index(sd),
                "measured_latency_ms": None if m is None else float(m["h100-a"]),
                "measured_latency_ms_second_machine": (None if m is None or "h100-second" not in m
                                                       else float(m["h100-second"])),
                "predicted_latency_ms": plan.table.predict_ms(arch),
                "test_loss": r["test_loss"], "val_loss": r["val_loss"], "params": r["params"],
                "best_step": r["best_step"], "steps_trained": r["steps"],
                "train_seconds": r["train_seconds"]})

    for p in plan.headline_precision(cands):
        for role, a in plan.references(p):
            add(a, role, "scratch")
    for a in cands:
        add(a, "searched", "scratch")
        add(a, "searched", "supernet")
    df = pd.DataFrame(rows)
    df["prediction_error_pct"] = 100 * (df.predicted_latency_ms / df.measured_latency_ms - 1)
    df.to_csv(out / "headline.csv", index=False, float_format="%.6g")

    g = (df.groupby(["role", "init", "arch_id", "description", "precision"], sort=False)
         .agg(test_loss_mean=("test_loss", "mean"), test_loss_seed0=("test_loss", "first"),
              test_loss_seed1=("test_loss", "last"), params=("params", "first"),
              measured_latency_ms=("measured_latency_ms", "first"),
              second_machine_ms=("measured_latency_ms_second_machine", "first"),
              predicted_latency_ms=("predicted_latency_ms", "first"),
              prediction_error_pct=("prediction_error_pct", "first"),
              steps_trained=("steps_trained", "mean"))
         .reset_index())
    base = g[g.role == "baseline"].set_index("precision")
    g["speedup_vs_baseline"] = [base.loc[p, "measured_latency_ms"] / m
                                for p, m in zip(g.precision, g.measured_latency_ms)]
    g["speedup_second_machine"] = [(base.loc[p, "second_machine_ms"] or math.nan) / (m or math.nan)
                                   for p, m in zip(g.precision, g.second_machine_ms)]
    g["test_loss_minus_baseline"] = [t - base.loc[p, "test_loss_mean"]
                                     for p, t in zip(g.precision, g.test_loss_mean)]
    g.to_csv(out / "headline_summary.csv", index=False, float_format="%.6g")
    _plot(df, g, out / "headline.png")

    # the precision gain, reported apart: the baseline in each precision
    b = plan.space.baseline_arch()
    prec = {p: float(lat.loc[dataclasses.replace(b, precision=p).arch_id, "h100-a"])
            for p in plan.space.precision.get(plan.s.device, ())}
    # every latency run on its own: each model's speed-up over the baseline timed in that run
    runs = {}
    for arch_id, p in zip(g.arch_id, g.precision):
        base_id = dataclasses.replace(b, precision=p).arch_id
        runs[arch_id] = {run_name: float(lat.loc[base_id, run_name] / lat.loc[arch_id, run_name])
                         for run_name in lat.columns}
    (out / "precision_gain.json").write_text(json.dumps(
        {"baseline_graph_latency_ms_by_precision": prec,
         "latency_runs_ms": lat.round(5).to_dict(orient="index"),
         "speedup_vs_baseline_by_run": runs}, indent=2))
    return g


def _plot(df: pd.DataFrame, g: pd.DataFrame, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {("baseline", "scratch"): ("black", "s", "nanoGPT baseline"),
             ("uniform", "scratch"): ("tab:blue", "o", "uniform shrink"),
             ("searched", "scratch"): ("tab:red", "*", "searched, from scratch"),
             ("searched", "supernet"): ("tab:orange", "^", "searched, fine-tuned from the supernet")}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for (role, init), (c, m, label) in style.items():
        sub = g[(g.role == role) & (g.init == init)]
        if sub.empty:
            continue
        lo = sub[["test_loss_seed0", "test_loss_seed1"]].min(axis=1)
        hi = sub[["test_loss_seed0", "test_loss_seed1"]].max(axis=1)
        ax.errorbar(sub.measured_latency_ms, sub.test_loss_mean,
                    yerr=[sub.test_loss_mean - lo, hi - sub.test_loss_mean], fmt=m, color=c,
                    ms=11 if m == "*" else 7, capsize=3, label=label)
        if role == "uniform":
            for _, r in sub.iterrows():  # uniform: one head count and FFN width for all layers
                L, h, f = r.description.split()[0], r.description.split("h[")[1].split(",")[0], \
                    r.description.split("f[")[1].split(",")[0]
                ax.annotate(f"{L} h{h} f{f}", (r.measured_latency_ms, r.test_loss_mean),
                            fontsize=7, xytext=(5, 2), textcoords="offset points")
    b = g[g.role == "baseline"].iloc[0]
    ax.axhline(b.test_loss_mean, color="black", lw=0.6, ls=":")
    ax.axvline(b.measured_latency_ms / 2, color="grey", lw=0.8, ls="--", label="2x faster than the baseline")
    ax.set_xlabel(f"measured latency, ms (H100, CUDA graph, batch 1, 256 tokens, {b.precision})")
    ax.set_ylabel("test loss (mean of 2 seeds; bars: both seeds)")
    ax.set_title("shakespeare: searched vs. nanoGPT baseline and its uniform shrinks")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def recipes(results: dict[str, Any], plan: run.Plan, out: Path, taus: dict[str, float]) -> pd.DataFrame:
    """The supernet recipes side by side: inherited-weight losses and ranking tau."""
    rows = []
    jobs = [(f"alpha{a:g}", plan.supernet_job(a)) for a in run.ALPHAS]
    jobs += [(name, plan.variant_job(name)) for name in run.VARIANTS]
    for name, job in jobs:
        r = plan.done(job)
        if r is None:
            continue
        rows.append({"supernet": name, "steps": r["step"],
                     "distill_alpha": job["train"]["distill_alpha"],
                     **{k: r[k] for k in r if k.endswith(("_val", "_test"))},
                     "mean_test_of_three": (r["largest_test"] + r["baseline_test"] + r["smallest_test"]) / 3,
                     "ranking_kendall_tau": taus.get(name),
                     "used_by_headline_search": name == f"alpha{plan.chosen_alpha():g}"})
    df = pd.DataFrame(rows)
    df.to_csv(out / "recipes.csv", index=False, float_format="%.6g")
    return df


def ranking(results: dict[str, Any], plan: run.Plan, out: Path) -> dict[str, Any]:
    archs, complete = plan.ranking_archs()
    assert complete
    region_ids = {a.arch_id for a in archs[: plan.s.n_region]}
    alpha = plan.chosen_alpha()
    scores = {}
    head = plan.done(plan.search_job("headline", alpha, plan.headline_budget))
    extra = plan.candidates(head)
    both = list({a.arch_id: a for a in archs + extra}.values())
    for al in run.ALPHAS:
        scores[f"alpha{al:g}"] = plan.done(plan.score_job(f"alpha{al:g}", both))["val"]
    for name in run.VARIANTS:
        r = plan.done(plan.score_job(name, archs))
        if r is not None:
            scores[name] = r["val"]
    rows = []
    for a in archs:
        done = [plan.done(plan.alone_job(a, sd, "ranking")) for sd in run.SEEDS]
        t = [r["test_loss"] for r in done]
        rows.append({"arch_id": a.arch_id, "description": a.describe(),
                     "source": "search region" if a.arch_id in region_ids else "stratified",
                     "params": run.param_count(a),
                     "supernet_val_loss": scores[f"alpha{alpha:g}"][a.arch_id],
                     "standalone_test_loss_seed0": t[0], "standalone_test_loss_seed1": t[1],
                     "standalone_test_loss_mean": sum(t) / len(t),
                     "standalone_val_loss_mean": sum(r["val_loss"] for r in done) / len(done),
                     **{f"supernet_val_loss_{name}": v[a.arch_id] for name, v in scores.items()}})
    df = pd.DataFrame(rows)
    df.to_csv(out / "ranking.csv", index=False, float_format="%.6g")

    def tau(x: str, y: str, d: pd.DataFrame = df) -> float:
        return float(d[[x, y]].corr(method="kendall").iloc[0, 1])

    def rho(x: str, y: str, d: pd.DataFrame = df) -> float:
        return float(d[[x, y]].corr(method="spearman").iloc[0, 1])

    gt = "standalone_test_loss_mean"
    s = {"n_archs": len(df), "n_search_region": int((df.source == "search region").sum()),
         "supernet_recipe_distill_alpha": alpha,
         "kendall_tau": tau("supernet_val_loss", gt), "spearman_rho": rho("supernet_val_loss", gt),
         "noise_ceiling_kendall_tau_seed0_vs_seed1": tau("standalone_test_loss_seed0",
                                                         "standalone_test_loss_seed1"),
         "noise_ceiling_spearman_rho_seed0_vs_seed1": rho("standalone_test_loss_seed0",
                                                          "standalone_test_loss_seed1"),
         "kendall_tau_by_supernet": {name: tau(f"supernet_val_loss_{name}", gt) for name in scores},
         "spearman_rho_by_supernet": {name: rho(f"supernet_val_loss_{name}", gt) for name in scores},
         "kendall_tau_by_supernet_vs_seed0": {name: tau(f"supernet_val_loss_{name}", "standalone_test_loss_seed0")
                                              for name in scores},
         "kendall_tau_by_supernet_vs_seed1": {name: tau(f"supernet_val_loss_{name}", "standalone_test_loss_seed1")
                                              for name in scores},
         "kendall_tau_by_supernet_and_source": {
             name: {src: tau(f"supernet_val_loss_{name}", gt, df[df.source == src])
                    for src in ("search region", "stratified")} for name in scores},
         "kendall_tau_standalone_val_vs_test": tau("standalone_val_loss_mean", gt),
         "kendall_tau_search_region_only": tau("supernet_val_loss", gt,
                                               df[df.source == "search region"]),
         "kendall_tau_stratified_only": tau("supernet_val_loss", gt, df[df.source == "stratified"]),
         "ground_truth": "standalone test loss, mean of 2 seeds, each run early-stopped on validation",
         "supernet_score": "inherited weights, 16 x 32 windows of the validation split, in the arch's precision"}
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    _scatter(df, s, out / "scatter.png")
    return s


def _scatter(df: pd.DataFrame, s: dict[str, Any], path: Path) -> None:
    """One panel per supernet: its score against the ground truth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(s["kendall_tau_by_supernet"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.6), sharex=True)
    for ax, name in zip(axes, names):
        for src, m in (("search region", "o"), ("stratified", "s")):
            d = df[df.source == src]
            ax.errorbar(d.standalone_test_loss_mean, d[f"supernet_val_loss_{name}"],
                        xerr=(d.standalone_test_loss_seed0 - d.standalone_test_loss_seed1).abs() / 2,
                        fmt=m, capsize=2, label=f"{src} ({len(d)})")
        ax.set_title(f"supernet {name}: Kendall tau {s['kendall_tau_by_supernet'][name]:.2f}",
                     fontsize=9)
        ax.set_xlabel("test loss trained alone (mean of 2 seeds)")
    axes[0].set_ylabel("validation loss with the supernet's weights")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"20 shakespeare architectures; seed 0 ranks seed 1 at tau "
                 f"{s['noise_ceiling_kendall_tau_seed0_vs_seed1']:.2f} (bars: half the seed gap)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", type=Path, default=HERE / "state.jsonl")
    ap.add_argument("--ranking-out", type=Path,
                    help="default: ../ranking_fidelity/h100_shakespeare for the committed state, "
                         "else ranking_fidelity/ next to the state")
    ap.add_argument("--smoke", action="store_true", help="the state of a --smoke run")
    args = ap.parse_args(argv)
    results = run.load_state(args.state)
    plan = run.Plan(run.SMOKE if args.smoke else run.Setup(), results, Path("/nonexistent"))
    out = args.state.parent
    if args.ranking_out is None:
        committed = args.state.resolve() == (HERE / "state.jsonl").resolve()
        args.ranking_out = (HERE.parent / "ranking_fidelity" / "h100_shakespeare" if committed
                            else out / "ranking_fidelity")
    args.ranking_out.mkdir(parents=True, exist_ok=True)
    rs = ranking(results, plan, args.ranking_out)
    rec = recipes(results, plan, out, rs["kendall_tau_by_supernet"])
    g = headline(results, plan, out)
    pd.set_option("display.width", 200)
    print(rec.to_string(index=False))
    print(g[["role", "init", "description", "test_loss_mean", "measured_latency_ms",
             "speedup_vs_baseline", "prediction_error_pct"]].to_string(index=False))
    print(json.dumps({k: v for k, v in rs.items() if "tau" in k or "rho" in k}, indent=1))


if __name__ == "__main__":
    main()
