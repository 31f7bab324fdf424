"""Build and validate the GPU latency table for the ``shakespeare`` space, in one go.

Needs only torch, numpy, pandas, matplotlib, pyyaml, tqdm (and nvidia-ml-py for the
fingerprint, optional): no Hydra, no Optuna. Run from the repository root on the GPU:

    python experiments/latency_gpu/run.py --tables-dir latency_tables \\
        --reports-dir experiments/latency_h100_shakespeare

It

1. builds the eager table (fp32, bf16, fp16; batch 1, sequence 256): every block, then
   ``--calib-n`` random architectures per precision (seed ``--calib-seed``) measured end
   to end to fit the correction saved in the table's JSON;
2. validates fp32 and bf16 (and fp16 when time allows) on ``--val-n`` held-out random
   architectures per precision (seed ``--val-seed``), with a noise estimate;
3. if the time budget still allows, does the same in CUDA-graph mode (its own table,
   ``<name>-graph.csv``);
4. prints a summary and writes ``<reports-dir>/run_summary.md`` and ``.json``
   (``run_summary_graph.*`` with ``--graph only``).

A build that is interrupted resumes when the same command is run again. ``--smoke``
runs the same code on the CPU with the ``tiny`` space and few repeats (a check that the
script works, not a measurement).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from nas.errors import ConfigError  # noqa: E402
from nas.latency.build import build_table  # noqa: E402
from nas.latency.measure import TimerSettings  # noqa: E402
from nas.latency.spec import Workload  # noqa: E402
from nas.latency.validate import validate  # noqa: E402
from nas.space import load_space  # noqa: E402


def gpu_slug() -> str:
    """``h100`` for 'NVIDIA H100 80GB HBM3', ``h200`` for an H200, else a cleaned name."""
    import torch
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    m = re.search(r"\b([A-Z]+\d{2,4}[A-Z]?)\b", name.upper().replace("NVIDIA", ""))
    return (m.group(1) if m else re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")).lower()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tables-dir", default="latency_tables")
    ap.add_argument("--reports-dir", default=None,
                    help="default: experiments/latency_<name>")
    ap.add_argument("--name", default=None, help="table stem; default <gpu>-shakespeare")
    ap.add_argument("--space", default=None, help="default: shakespeare (tiny with --smoke)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=None, help="default: the space's context")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--validate-precisions", default="fp32,bf16",
                    help="always validated; fp16 is added when time allows")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--window-ms", type=float, default=8.0)
    ap.add_argument("--passes", type=int, default=2,
                    help="sweeps over everything; the lowest median of each block/model is kept")
    ap.add_argument("--calib-n", type=int, default=30)
    ap.add_argument("--calib-seed", type=int, default=1000)
    ap.add_argument("--val-n", type=int, default=60)
    ap.add_argument("--val-seed", type=int, default=2000)
    ap.add_argument("--noise-models", type=int, default=3)
    ap.add_argument("--noise-repeats", type=int, default=5)
    ap.add_argument("--graph", choices=("auto", "on", "off", "only"), default="auto",
                    help="CUDA-graph table: auto = only if the budget allows; only = skip eager")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="wall-clock budget for everything; optional parts are skipped to fit")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU, tiny space, few repeats: checks the script, measures nothing useful")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    command = "python experiments/latency_gpu/run.py " + " ".join(
        shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))

    if a.smoke:
        device, space = "cpu", load_space(a.space or "tiny")
        precisions = tuple(p for p in ("fp32", "int8") if p in space.precisions("cpu"))
        val_precisions, extra = precisions, ()
        timer = TimerSettings(repeats=5, warmup=2, window_ms=2.0, passes=2)
        a.calib_n, a.val_n = min(a.calib_n, 6), min(a.val_n, 6)
        a.noise_models, a.noise_repeats = min(a.noise_models, 2), min(a.noise_repeats, 2)
        name = a.name or "smoke-cpu-tiny"
    else:
        import torch
        if not torch.cuda.is_available():
            print("error: no CUDA GPU visible to torch; use --smoke to check the script on a CPU",
                  file=sys.stderr)
            return 2
        device, space = "cuda", load_space(a.space or "shakespeare")
        precisions = tuple(a.precisions.split(","))
        val_precisions = tuple(a.validate_precisions.split(","))
        extra = tuple(p for p in precisions if p not in val_precisions)
        timer = TimerSettings(repeats=a.repeats, warmup=a.warmup, window_ms=a.window_ms,
                              cpu_clock="wall", passes=a.passes)
        name = a.name or f"{gpu_slug()}-{space.name}"
    seq_len = a.seq_len or space.block_size
    tables = Path(a.tables_dir)
    reports = Path(a.reports_dir or f"experiments/latency_{name.replace('-', '_')}")
    reports.mkdir(parents=True, exist_ok=True)
    progress = not a.no_progress
    log: dict = {"command": command, "space": space.name, "device": device, "phases": [],
                 "skipped": [], "failed": []}

    def left() -> float:
        return a.budget_s - (time.perf_counter() - t_start)

    def phase(label: str, fn):
        t0 = time.perf_counter()
        print(f"\n== {label} ({left():.0f} s of budget left)", flush=True)
        out = fn()
        log["phases"].append({"phase": label, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"== {label}: {time.perf_counter() - t0:.0f} s", flush=True)
        return out

    summaries = {}
    for mode in (("graph",) if a.graph == "only" else ("eager", "graph")):
        if mode == "graph":
            if device != "cuda" or a.graph == "off":
                break
            # Graph mode costs about what eager did (capture adds a little): skip it
            # unless that fits in what is left, with a margin.
            eager_s = sum(p["seconds"] for p in log["phases"])
            if a.graph == "auto" and left() < 1.15 * eager_s:
                log["skipped"].append(f"graph mode: needs ~{1.15 * eager_s:.0f} s, {left():.0f} s left")
                print(f"\n== skipping graph mode: {log['skipped'][-1]}")
                break
        stem = name if mode == "eager" else f"{name}-graph"
        path = tables / f"{stem}.csv"
        w = Workload(device, a.batch_size, seq_len, precisions, mode, threads=1)
        try:
            t0 = time.perf_counter()
            table = phase(f"build {path} ({mode})", lambda: build_table(
                path, space, w, timer, calibration_n=a.calib_n, calibration_seed=a.calib_seed,
                command=command, progress=progress))
            build_s = time.perf_counter() - t0
            n_meas = (len(table.rows) + a.calib_n * len(precisions)) * timer.passes
            per_model = build_s / max(n_meas, 1)
            vp = val_precisions
            # fp16 (or any precision beyond the required ones) only when it fits.
            need = lambda ps: per_model * 1.5 * len(ps) * (
                a.val_n * timer.passes + a.noise_models * a.noise_repeats)
            if extra and left() > need(vp + extra) + (1.15 * build_s if mode == "eager" else 0):
                vp = vp + extra
            elif extra:
                log["skipped"].append(f"{mode}: validation of {list(extra)} (time)")
            out = reports / mode
            summaries[mode] = phase(f"validate {list(vp)} ({mode})", lambda: validate(
                table, space, vp, n=a.val_n, seed=a.val_seed, timer=timer, out_dir=out,
                command=command, noise_models=a.noise_models, noise_repeats=a.noise_repeats,
                progress=progress))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            log["failed"].append(f"{mode}: {e}")
            if mode == "eager":
                break
        except Exception as e:  # graph capture can fail on some stacks; keep the eager results
            traceback.print_exc()
            log["failed"].append(f"{mode}: {type(e).__name__}: {e}")
            if mode == "eager":
                break

    log["total_seconds"] = round(time.perf_counter() - t_start, 1)
    log["results"] = {m: {p: {k: s["precisions"][p][k] for k in
                              ("n", "within_5", "within_10", "rmse_ms", "rmse_pct", "spearman",
                               "max_abs_err_pct", "goal_met")}
                          for p in s["precisions"]} for m, s in summaries.items()}
    # A later graph-only run must not overwrite the first run's summary.
    stem = "run_summary_graph" if a.graph == "only" else "run_summary"
    (reports / f"{stem}.json").write_text(json.dumps(log, indent=2) + "\n")
    lines = [f"# GPU latency run: {space.name} on {device}", "", f"- command: `{command}`",
             f"- total: {log['total_seconds']} s", ""]
    lines += [f"- {p['phase']}: {p['seconds']} s" for p in log["phases"]]
    lines += [f"- skipped: {s}" for s in log["skipped"]] + [f"- FAILED: {s}" for s in log["failed"]]
    lines += ["", "| mode | precision | n | within 5% | within 10% | RMSE ms | rho | goal |",
              "|---|---|---|---|---|---|---|---|"]
    for m, res in log["results"].items():
        for p, r in res.items():
            lines.append(f"| {m} | {p} | {r['n']} | {100 * r['within_5']:.0f}% | "
                         f"{100 * r['within_10']:.0f}% | {r['rmse_ms']:.4f} | {r['spearman']:.3f} | "
                         f"{'met' if r['goal_met'] else 'MISSED'} |")
    text = "\n".join(lines) + "\n"
    (reports / f"{stem}.md").write_text(text)
    print("\n" + text)
    return 1 if log["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
