"""Tables and plot of the H200 headline and its ranking study, from ``state.jsonl``.

    python experiments/headline_h200/report.py [--state experiments/headline_h200/state.jsonl]
    python experiments/headline_h200/report.py --smoke --work DIR --state DIR/state.jsonl

Writes next to the state (CPU only; pandas and matplotlib), from whatever has finished:

- ``headline.csv``: one row per headline model and seed (role, precision, measured and
  predicted decode ms at batch 32, measured at batch 1, whole requests, test loss,
  parameters, KV-cache bytes at the target's workload);
- ``headline_summary.csv``: seeds averaged, speed-up over the baseline, prediction error,
  and the best of each reference group (lowest test loss within the budget);
- ``headline.png``: test loss against measured decode time at batch 32;
- ``ranking.csv`` and ``ranking_summary.json``: the ranking study's raw rows, Kendall tau
  of the supernet and of the LTS proxy against the mean of 2 seeds, the noise ceiling;
- ``stages.csv``: the seconds of every stage's jobs (they overlap on a shared GPU).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pandas as pd  # noqa: E402

import plan as P  # noqa: E402
from nas.latency.floor import ELEMENT_BYTES  # noqa: E402

REFERENCE_ROLES = ("uniform shrink", "uniform GQA", "uniform GQA + shrink")


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either ranking counted as neither concordant nor discordant)."""
    n, conc, disc, tx, ty = len(x), 0, 0, 0, 0
    for i in range(n):
        for j in range(i + 1, n):
            a, b = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            if a and b:
                conc, disc = conc + (a == b), disc + (a != b)
            else:
                tx, ty = tx + (a == 0 and b != 0), ty + (b == 0 and a != 0)
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else math.nan


def _losses(plan: P.Plan, arch: Any, role: str) -> list[float | None]:
    out = []
    for sd in P.SEEDS:
        r = plan.done(plan.alone_job(arch, sd, role))
        out.append(None if r is None else r["test_loss"])
    return out


def ranking(plan: P.Plan, out: Path) -> dict[str, Any] | None:
    archs, complete = plan.ranking_archs()
    heads = plan.headline()
    score = plan.done(plan.score_job(list({a.arch_id: a for a in [a for _, a in archs]
                                           + [a for _, _, a in heads]}.values()))) if complete else None
    rows = []
    for src, a in archs:
        t = _losses(plan, a, "ranking")
        rows.append({"arch_id": a.arch_id, "description": a.describe(), "source": src,
                     "supernet_val_loss": None if score is None else score["val"][a.arch_id],
                     "decoder_params": a.decoder_params, "params": a.n_params,
                     "standalone_test_loss_seed0": t[0], "standalone_test_loss_seed1": t[1],
                     "standalone_test_loss_mean": None if None in t else sum(t) / len(t)})
    df = pd.DataFrame(rows)
    df.to_csv(out / "ranking.csv", index=False, float_format="%.6g")
    d = df.dropna(subset=["standalone_test_loss_mean"])
    if score is None or len(d) < 3:
        return None
    gt = list(d.standalone_test_loss_mean)
    proxy = list(-d.decoder_params)  # more parameters, lower loss predicted

    def by(x: Sequence[float], y: Sequence[float] = gt) -> float:
        return round(kendall_tau(list(x), list(y)), 4)

    s = {"n_archs": len(d), "n_search_front": int((d.source == "search front").sum()),
         "kendall_tau_supernet": by(d.supernet_val_loss),
         "kendall_tau_lts_proxy": by(proxy),
         "noise_ceiling_kendall_tau_seed0_vs_seed1": by(d.standalone_test_loss_seed0,
                                                        d.standalone_test_loss_seed1),
         "kendall_tau_supernet_vs_seed": [by(d.supernet_val_loss, d[f"standalone_test_loss_seed{i}"])
                                          for i in range(2)],
         "kendall_tau_lts_proxy_vs_seed": [by(proxy, d[f"standalone_test_loss_seed{i}"]) for i in range(2)],
         "by_source": {src: {"n": len(g), "supernet": by(g.supernet_val_loss, g.standalone_test_loss_mean),
                             "lts_proxy": by(-g.decoder_params, g.standalone_test_loss_mean)}
                       for src, g in d.groupby("source")},
         "ground_truth": "test loss trained alone (recipe gpt2s), mean of 2 seeds",
         "supernet_score": "inherited weights, 16 x 32 windows of the validation split",
         "lts_proxy": "-decoder_params (LiteTransformerSearch): no training"}
    (out / "ranking_summary.json").write_text(json.dumps(s, indent=2))
    return s


def headline(plan: P.Plan, results: dict[str, Any], out: Path) -> pd.DataFrame:
    t = plan.target
    b1 = P.cost_model(plan.space, t, batch_size=1)
    req = P.cost_model(plan.space, t, phases=("prefill", "decode"))
    rows = []
    for role, variant, a in plan.headline():
        lat = plan.done(plan.latency_job(a)) or {}
        pred = None if plan.missing_table else plan.decode_ms(a)
        for sd, loss in zip(P.SEEDS, _losses(plan, a, role)):
            rows.append({
                "role": role, "variant": variant, "arch_id": a.arch_id, "description": a.describe(),
                "precision": a.precision, "seed": sd,
                "measured_decode_ms_b32": lat.get(f"decode_ms_b{t.batch_size}"),
                "predicted_decode_ms_b32": pred,
                "measured_decode_ms_b1": lat.get("decode_ms_b1"),
                "predicted_decode_ms_b1": None if isinstance(b1, str) else b1.decode_ms(a),
                "floor_decode_ms_b32": lat.get(f"floor_ms_b{t.batch_size}"),
                "measured_request_ms": lat.get("request_ms"),
                "predicted_request_ms": None if isinstance(req, str) else req.request_ms(a),
                "within_budget_predicted": None if pred is None else pred <= plan.budget,
                "test_loss": loss, "params": a.n_params, "decoder_params": a.decoder_params,
                "kv_cache_bytes": t.batch_size * t.context * a.kv_bytes_per_token(ELEMENT_BYTES[a.precision])})
    df = pd.DataFrame(rows)
    df.to_csv(out / "headline.csv", index=False, float_format="%.6g")
    g = (df.groupby(["role", "variant", "arch_id", "description"], sort=False, dropna=False)
         .agg(test_loss_mean=("test_loss", "mean"), test_loss_seed0=("test_loss", "first"),
              test_loss_seed1=("test_loss", "last"), params=("params", "first"),
              measured_decode_ms_b32=("measured_decode_ms_b32", "first"),
              predicted_decode_ms_b32=("predicted_decode_ms_b32", "first"),
              measured_decode_ms_b1=("measured_decode_ms_b1", "first"),
              predicted_decode_ms_b1=("predicted_decode_ms_b1", "first"),
              measured_request_ms=("measured_request_ms", "first"),
              predicted_request_ms=("predicted_request_ms", "first"),
              floor_decode_ms_b32=("floor_decode_ms_b32", "first"),
              within_budget_predicted=("within_budget_predicted", "first")).reset_index())
    base = g[g.role == "baseline"].iloc[0]
    g["speedup_b32_vs_baseline"] = base.measured_decode_ms_b32 / g.measured_decode_ms_b32
    g["test_loss_minus_baseline"] = g.test_loss_mean - base.test_loss_mean
    for col, m, p in (("prediction_error_pct", "measured_decode_ms_b32", "predicted_decode_ms_b32"),
                      ("prediction_error_pct_b1", "measured_decode_ms_b1", "predicted_decode_ms_b1"),
                      ("prediction_error_pct_request", "measured_request_ms", "predicted_request_ms")):
        g[col] = 100 * (pd.to_numeric(g[p]) / pd.to_numeric(g[m]) - 1)
    g["best_of_role"] = False
    for role in REFERENCE_ROLES:  # the lowest test loss within the budget (else the fastest)
        m = g[(g.role == role) & g.test_loss_mean.notna()]
        ok = m[m.within_budget_predicted == True]  # noqa: E712 (a column of objects)
        pick = (ok.test_loss_mean.idxmin() if len(ok) else
                m.predicted_decode_ms_b32.idxmin() if len(m) and m.predicted_decode_ms_b32.notna().any()
                else None)
        if pick is not None:
            g.loc[pick, "best_of_role"] = True
    g.to_csv(out / "headline_summary.csv", index=False, float_format="%.6g")
    if g.measured_decode_ms_b32.notna().any() and g.test_loss_mean.notna().any():
        _plot(g, out / "headline.png", t)
    return g


def _plot(g: pd.DataFrame, path: Path, t: Any) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"baseline": ("black", "s"), "uniform shrink": ("tab:blue", "o"),
             "uniform GQA": ("tab:green", "v"), "uniform GQA + shrink": ("tab:olive", "D"),
             "LTS proxy pick": ("tab:purple", "P"), "searched": ("tab:red", "*")}
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for role, (c, m) in style.items():
        sub = g[(g.role == role) & g.measured_decode_ms_b32.notna() & g.test_loss_mean.notna()]
        if sub.empty:
            continue
        lo = sub[["test_loss_seed0", "test_loss_seed1"]].min(axis=1)
        hi = sub[["test_loss_seed0", "test_loss_seed1"]].max(axis=1)
        ax.errorbar(sub.measured_decode_ms_b32, sub.test_loss_mean, capsize=3, fmt=m, color=c,
                    yerr=[sub.test_loss_mean - lo, hi - sub.test_loss_mean], label=role,
                    ms=11 if m == "*" else 7)
    b = g[g.role == "baseline"].iloc[0]
    if not math.isnan(b.measured_decode_ms_b32):
        ax.axvline(b.measured_decode_ms_b32 / 2, color="grey", lw=0.8, ls="--",
                   label="2x the baseline's throughput")
    if not math.isnan(b.test_loss_mean):
        ax.axhline(b.test_loss_mean, color="black", lw=0.6, ls=":")
    ax.set_xlabel(f"measured decode time per token, ms ({t.device}, {t.mode}, batch {t.batch_size}, "
                  f"context {t.context})")
    ax.set_ylabel("test loss (mean of 2 seeds; bars: both)")
    ax.set_title("gpt2s: searched vs. GPT-2 small's shape and the references")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def stages(results: dict[str, Any], state: Path, out: Path) -> pd.DataFrame:
    """Seconds of each stage's jobs (job wall time; jobs of a stage overlap)."""
    rows = []
    for line in state.read_text().splitlines():
        r = json.loads(line)
        job, res = r["job"], r["result"]
        stage = {"alone": "ranking trainings" if job.get("role") == "ranking" else "headline trainings",
                 "search": job.get("name", "search")}.get(job["kind"], job["kind"])
        rows.append({"stage": stage, "machine": r.get("machine", ""),
                     "seconds": res.get("job_wall_seconds", math.nan)})
    df = (pd.DataFrame(rows, columns=["stage", "machine", "seconds"]).groupby(["stage", "machine"])
          .agg(jobs=("seconds", "size"), job_seconds=("seconds", "sum")).reset_index())
    df.to_csv(out / "stages.csv", index=False, float_format="%.1f")
    return df


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--state", type=Path, default=HERE / "state.jsonl")
    ap.add_argument("--smoke", action="store_true", help="the state of a --smoke run")
    ap.add_argument("--work", type=Path, help="with --smoke: its --work (the corpus and tables)")
    args = ap.parse_args(argv)
    if args.smoke and args.work is None:
        ap.error("--smoke needs --work: the smoke run's corpus and tables are there")
    s = P.smoke_setup(args.work) if args.smoke else P.Setup()
    results = P.load_state(args.state)
    plan, out = P.Plan(s, results), args.state.parent
    pd.set_option("display.width", 220)
    print(stages(results, args.state, out).to_string(index=False))
    rs = ranking(plan, out)
    print(json.dumps(rs, indent=1) if rs else "ranking study: not finished")
    g = headline(plan, results, out)
    print(g[["role", "variant", "description", "test_loss_mean", "measured_decode_ms_b32",
             "predicted_decode_ms_b32", "speedup_b32_vs_baseline", "best_of_role"]].to_string(index=False))


if __name__ == "__main__":
    main()
