"""Supernet on a GPU: inherited weights against training alone, and what sharing costs.

In one run, on one device:

(d) throughput, measured first on throwaway models with the training step itself
    (nas.train.train_step): tokens/s of a sandwich step (every sub-network pass
    counted), of a supernet step running only the largest sub-network (slicing and
    weight-sharing overhead alone), of the largest trained alone, and of the
    baseline architecture through the supernet and alone;
(a) trains the supernet of ``--space`` with ``--recipe`` for ``--steps`` steps;
(b) trains the space's baseline architecture (nanoGPT's, for ``shakespeare``) alone with
    the same recipe, batches and steps;
(c) compares the baseline's validation loss with inherited weights and trained alone.

If (a) + (b) would not fit ``--budget-s`` at the throughput measured in (d), the steps
are lowered for both, and the JSON says so. Writes into ``--out``: results.json,
throughput.csv, supernet/ (checkpoint and log.csv). Needs only torch and pyyaml (no Hydra,
no Optuna). ``--smoke`` runs a few steps of the ``tiny`` space on the CPU to check the script.

    python experiments/supernet_gpu/run.py --out experiments/supernet_gpu/h100
    python experiments/supernet_gpu/run.py --out /tmp/smoke --smoke
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout (no pip install)

import torch  # noqa: E402

from nas.supernet.data import load_corpus  # noqa: E402
from nas.environment import environment  # noqa: E402
from nas.errors import ConfigError, exit_on_user_error  # noqa: E402
from nas.model import GPT, Supernet  # noqa: E402
from nas.supernet.score import AccuracyScorer  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.supernet.recipe import TrainConfig, resolve_device
from nas.supernet.standalone import measure_throughput, train_standalone
from nas.supernet.step import sandwich
from nas.supernet.train import load_supernet, train_supernet

EVAL_OVERHEAD = 1.1  # validation, checkpoints and start-up on top of the timed steps


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def throughput(space, corpus, cfg: TrainConfig, steps: int, device: str) -> list[dict]:
    """Tokens/s of the training step in several set-ups, each on a fresh model."""
    rng = random.Random(cfg.seed)
    big, base = space.largest(), space.baseline_arch() or space.largest()
    n_sub = 2 + cfg.n_random
    setups = [
        ("sandwich", lambda: Supernet(space), lambda: sandwich(space, rng, cfg.n_random), n_sub),
        ("supernet_largest_only", lambda: Supernet(space), lambda: [big], 1),
        ("largest_alone", lambda: GPT(big), lambda: [big], 1),
        ("supernet_baseline_only", lambda: Supernet(space), lambda: [base], 1),
        ("baseline_alone", lambda: GPT(base), lambda: [base], 1),
    ]
    rows = []
    for name, make, pick, passes in setups:
        torch.manual_seed(cfg.seed)
        model = make().to(device)
        tps = measure_throughput(model, pick, corpus, cfg, steps=steps)
        rows.append({"setup": name, "tokens_per_s": tps, "passes_per_step": passes,
                     "data_tokens_per_s": tps / passes,
                     "step_ms": 1e3 * cfg.batch_size * space.block_size * passes / tps})
        print(f"  {name:24s} {tps:12,.0f} tokens/s  {rows[-1]['step_ms']:8.1f} ms/step",
              file=sys.stderr)
        del model
        _free(device)
    alone = {r["setup"]: r for r in rows}
    for r in rows:
        ref = alone["baseline_alone" if "baseline" in r["setup"] else "largest_alone"]
        r["tokens_per_s_vs_alone"] = r["tokens_per_s"] / ref["tokens_per_s"]
        r["step_time_vs_alone"] = r["step_ms"] / ref["step_ms"]
    return rows


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--space", default="shakespeare")
    ap.add_argument("--recipe", default="shakespeare", help="conf/train/<recipe>.yaml")
    ap.add_argument("--steps", type=int, default=5000, help="steps of (a) and of (b)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--eval-every", type=int)
    ap.add_argument("--distill-alpha", type=float,
                    help="weight of in-place distillation (default: the recipe's)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="wall time allowed for (a) + (b); steps are lowered to fit")
    ap.add_argument("--bench-steps", type=int, default=20, help="timed steps per throughput set-up")
    ap.add_argument("--smoke", action="store_true", help="tiny space, a few CPU steps")
    args = ap.parse_args(argv)
    if args.smoke:
        args.space, args.recipe, args.device = "tiny", "tiny", "cpu"
        args.steps, args.batch_size, args.eval_every, args.bench_steps = 12, 4, 6, 2

    t_start = time.perf_counter()
    space = load_space(args.space)
    cfg = TrainConfig.from_recipe(args.recipe, steps=args.steps, batch_size=args.batch_size,
                  eval_every=args.eval_every, device=args.device, distill_alpha=args.distill_alpha)
    device = resolve_device(cfg.device)
    baseline = space.baseline_arch() or space.largest()
    corpus = load_corpus(cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    args.out.mkdir(parents=True, exist_ok=True)
    if (args.out / "supernet" / "supernet.pt").exists():
        raise ConfigError(f"--out: {args.out} already holds a run; pick another folder")
    env = environment(device)
    print(f"{space.name} / {args.recipe} on {env.get('gpu', device)}; "
          f"(d) throughput, {args.bench_steps} steps per set-up:", file=sys.stderr)

    rows = throughput(space, corpus, cfg, args.bench_steps, device)
    with open(args.out / "throughput.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    by = {r["setup"]: r for r in rows}
    per_step = (by["sandwich"]["step_ms"] + by["baseline_alone"]["step_ms"]) / 1e3
    fit = int(args.budget_s / (per_step * EVAL_OVERHEAD))
    steps = min(args.steps, max(1, fit))
    if steps < args.steps:
        print(f"(a) + (b) at {per_step * 1e3:.0f} ms per step pair would take "
              f"{args.steps * per_step * EVAL_OVERHEAD:.0f} s > --budget-s {args.budget_s:.0f}: "
              f"{steps} steps instead of {args.steps}", file=sys.stderr)
        cfg = dataclasses.replace(cfg, steps=steps, eval_every=min(cfg.eval_every, steps))

    print(f"(a) supernet, {cfg.steps} steps", file=sys.stderr)
    t0 = time.perf_counter()
    path = train_supernet(space, corpus, cfg, args.out / "supernet", progress=True)
    supernet_s = time.perf_counter() - t0
    supernet = load_supernet(path, space, device)
    scorer = AccuracyScorer(supernet, corpus, device)
    inherited = {name: scorer(a) for name, a in
                 (("largest", space.largest()), ("smallest", space.smallest()),
                  ("baseline", baseline))}
    tokens_per_s = supernet.meta["tokens_per_s"]
    sn_history = [(r["step"], r["val_baseline"]) for r in supernet.meta.get("history", [])
                  if r.get("val_baseline") is not None]
    del supernet, scorer
    _free(device)

    print(f"(b) baseline {baseline.describe()} alone, {cfg.steps} steps", file=sys.stderr)
    t0 = time.perf_counter()
    alone = train_standalone(baseline, corpus, cfg, progress=True)
    alone_s = time.perf_counter() - t0

    results = {
        "space": space.name, "recipe": cfg.to_dict(), "steps_requested": args.steps,
        "steps_used": cfg.steps, "budget_s": args.budget_s, "smoke": args.smoke,
        "baseline": baseline.describe(), "baseline_arch_id": baseline.arch_id,
        "validation": "scorer: 4 x 32 windows of the validation split, fp32",
        "supernet": {"val_loss_inherited": inherited, "train_tokens_per_s": tokens_per_s,
                     "wall_s": supernet_s, "checkpoint": str(path)},
        "baseline_alone": {"val_loss": alone.val_loss, "train_tokens_per_s": alone.tokens_per_s,
                           "train_s": alone.seconds, "wall_s": alone_s, "params": alone.params},
        "baseline_gap_inherited_minus_alone": inherited["baseline"] - alone.val_loss,
        # nanoGPT's 1.4697 is the best validation loss seen during its run (it overfits
        # later), so the best of the periodic validations is reported for both as well.
        "baseline_val_history": {"inherited": sn_history, "alone": list(alone.history)},
        "baseline_best": {
            "inherited": min((v for _, v in sn_history), default=None),
            "alone": min((v for _, v in alone.history), default=None)},
        "throughput": {
            "bench_steps": args.bench_steps, "batch_size": cfg.batch_size,
            "tokens_per_s": {r["setup"]: r["tokens_per_s"] for r in rows},
            # >1 means more tokens/s than training the largest alone; every pass counted.
            "sandwich_vs_largest_alone": by["sandwich"]["tokens_per_s_vs_alone"],
            "sandwich_step_time_vs_largest_alone_step": by["sandwich"]["step_time_vs_alone"],
            # The cost of slicing shared weights alone: same work, supernet vs plain model.
            "supernet_largest_only_vs_largest_alone":
                by["supernet_largest_only"]["tokens_per_s_vs_alone"],
            "supernet_baseline_only_vs_baseline_alone":
                by["supernet_baseline_only"]["tokens_per_s_vs_alone"],
        },
        "wall_s_total": time.perf_counter() - t_start,
        "environment": env,
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    tp = results["throughput"]
    print(f"baseline {baseline.describe()}: inherited {inherited['baseline']:.4f} vs alone "
          f"{alone.val_loss:.4f} (gap {results['baseline_gap_inherited_minus_alone']:+.4f}); "
          f"largest inherited {inherited['largest']:.4f}, smallest {inherited['smallest']:.4f}")
    print(f"throughput vs largest alone: sandwich {tp['sandwich_vs_largest_alone']:.2f}x tokens/s "
          f"({tp['sandwich_step_time_vs_largest_alone_step']:.2f}x step time), largest-only "
          f"supernet step {tp['supernet_largest_only_vs_largest_alone']:.2f}x, baseline via "
          f"supernet {tp['supernet_baseline_only_vs_baseline_alone']:.2f}x of alone")
    best = results["baseline_best"]
    if best["inherited"] is not None and best["alone"] is not None:
        print(f"best of periodic validations: inherited {best['inherited']:.4f} vs alone "
              f"{best['alone']:.4f} (gap {best['inherited'] - best['alone']:+.4f})")
    print(f"{results['wall_s_total']:.0f} s in all -> {args.out}")


if __name__ == "__main__":
    main()
