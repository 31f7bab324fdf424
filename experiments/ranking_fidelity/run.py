"""Ranking fidelity: does the supernet rank sub-networks as training them alone would?

Picks sub-networks spread over the space (the largest, the smallest, and one per
parameter-count stratum of a seeded random pool: none is hand-picked), trains each alone
with the supernet's recipe and step budget (same batches, same loop: nas.train), scores
each with the supernet's inherited weights (nas.supernet.score.AccuracyScorer), and writes:

    results.csv   arch_id, description, params, standalone_val_loss, supernet_val_loss, ...
    summary.json  Kendall's tau and Spearman's rho of the two losses, settings, environment
    scatter.png   inherited-weight loss against trained-alone loss

Needs only torch, pandas, matplotlib and pyyaml (no Hydra, no Optuna). Example:

    python experiments/ranking_fidelity/run.py --checkpoint outputs/supernet/tiny/supernet.pt \\
        --out experiments/ranking_fidelity/tiny_cpu --n 10 --jobs 1

Standalone results are appended to ``standalone.jsonl`` as they finish, so an
interrupted run picks up where it stopped when given the same ``--out``.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout (no pip install)

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from nas.supernet.checkpoint import read_checkpoint, space_of  # noqa: E402
from nas.supernet.data import load_corpus  # noqa: E402
from nas.environment import environment  # noqa: E402
from nas.errors import ConfigError, exit_on_user_error  # noqa: E402
from nas.supernet.score import AccuracyScorer  # noqa: E402
from nas.space import ArchConfig, SearchSpace, load_space, sample  # noqa: E402
from nas.supernet.recipe import TrainConfig, resolve_device  # noqa: E402
from nas.supernet.standalone import train_standalone
from nas.supernet.train import load_supernet


def param_count(arch: ArchConfig) -> int:
    """Parameters of the standalone model of ``arch`` (tied head counted once)."""
    return arch.n_params


def pick_archs(space: SearchSpace, n: int, seed: int, pool: int) -> list[ArchConfig]:
    """Largest, smallest, and one random member of each of ``n - 2`` equal-count strata
    of a seeded pool sorted by parameter count."""
    rng = random.Random(seed)
    dev = next(iter(space.precision))
    cands = {a.arch_id: a for a in (sample(space, rng, device=dev, precision="fp32")
                                    for _ in range(pool))}
    ends = [space.largest(), space.smallest()]
    for a in ends:
        cands.pop(a.arch_id, None)
    ordered = sorted(cands.values(), key=lambda a: (param_count(a), a.arch_id))
    k = max(0, n - 2)
    if len(ordered) < k:
        raise ConfigError(f"--pool: {pool} draws gave {len(ordered)} distinct architectures; "
                          f"--n {n} needs at least {k}")
    picked = []
    for i in range(k):
        stratum = ordered[i * len(ordered) // k:(i + 1) * len(ordered) // k]
        picked.append(rng.choice(stratum))
    return ends + picked


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)


def _train_one(arch_dict: dict, data: str | None, cfg_dict: dict, n_batches: int,
               batch_size: int) -> dict:
    arch = ArchConfig.from_dict(arch_dict)
    corpus = load_corpus(data, block_size=arch.block_size, vocab_size=arch.vocab_size)
    r = train_standalone(arch, corpus, TrainConfig.from_dict(cfg_dict), progress=False,
                         n_batches=n_batches, batch_size=batch_size)
    return dataclasses.asdict(r)


def coefficients(df: pd.DataFrame) -> dict:
    """Kendall's tau and Spearman's rho of the supernet's scores against training alone.

    Against the final loss of each standalone run and against its best periodic validation
    (early stopping): with dropout and a small corpus, large models trained alone overfit
    by the end, which the final loss mixes into the ranking.
    """
    out = {}
    for col, tag in (("standalone_val_loss", ""), ("standalone_best_val_loss", "_early_stopped")):
        if col in df:
            pair = df[[col, "supernet_val_loss"]]
            out[f"kendall_tau{tag}"] = float(pair.corr(method="kendall").iloc[0, 1])
            out[f"spearman_rho{tag}"] = float(pair.corr(method="spearman").iloc[0, 1])
    return out


def _scatter(df: pd.DataFrame, tau: float, rho: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    sc = ax.scatter(df.standalone_val_loss, df.supernet_val_loss, c=df.params / 1e6, cmap="viridis")
    fig.colorbar(sc, ax=ax, label="parameters (M)")
    lo = min(df.standalone_val_loss.min(), df.supernet_val_loss.min())
    hi = max(df.standalone_val_loss.max(), df.supernet_val_loss.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="y = x")
    for _, r in df[df.role != "stratum"].iterrows():
        ax.annotate(r.role, (r.standalone_val_loss, r.supernet_val_loss), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("validation loss, trained alone")
    ax.set_ylabel("validation loss, supernet weights")
    ax.set_title(f"{len(df)} sub-networks: Kendall tau {tau:.2f}, Spearman rho {rho:.2f}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True, help="a trained supernet.pt")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--space", help="search space name or YAML (default: the checkpoint's)")
    ap.add_argument("--n", type=int, default=10, help="sub-networks, largest and smallest included")
    ap.add_argument("--pool", type=int, default=500, help="random draws to stratify")
    ap.add_argument("--seed", type=int, default=0, help="seeds the pool and the strata picks")
    ap.add_argument("--steps", type=int, help="training steps (default: the supernet's)")
    ap.add_argument("--batch-size", type=int, help="default: the supernet's")
    ap.add_argument("--lr", type=float, help="default: the supernet's")
    ap.add_argument("--data", help="the corpus (default: the path the checkpoint recorded)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="standalone trainings run in parallel")
    ap.add_argument("--threads", type=int,
                    help="torch threads per job on the CPU (default: cores / jobs; on a shared "
                         "CPU use 1, since waiting OpenMP threads stall each other)")
    ap.add_argument("--eval-batches", type=int, default=4, help="validation batches (scorer's)")
    ap.add_argument("--eval-batch-size", type=int, default=32)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    ckpt = read_checkpoint(args.checkpoint)
    space = load_space(args.space) if args.space else space_of(ckpt)
    recipe = dict(ckpt["train"])
    for key, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr)):
        if v is not None:
            recipe[key] = v
    recipe["device"] = args.device
    cfg = TrainConfig.from_dict(recipe)
    device = resolve_device(cfg.device)
    corpus = load_corpus(args.data or ckpt["corpus"]["path"], block_size=space.block_size,
                         vocab_size=space.vocab_size)
    if corpus.chars != ckpt["corpus"]["chars"]:
        raise ConfigError(f"corpus: {corpus.path} no longer has the characters the supernet "
                          "was trained on")
    supernet = load_supernet(args.checkpoint, space, device)
    scorer = AccuracyScorer(supernet, corpus, device, args.eval_batches, args.eval_batch_size)
    archs = pick_archs(space, args.n, args.seed, args.pool)
    roles = {archs[0].arch_id: "largest", archs[1].arch_id: "smallest"}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(
        {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
         "recipe": cfg.to_dict(), "space": space.to_dict(), "supernet_step": ckpt["step"],
         "supernet_recipe": ckpt["train"]}, indent=2))

    done_file = args.out / "standalone.jsonl"
    done = {}
    if done_file.exists():
        for line in done_file.read_text().splitlines():
            r = json.loads(line)
            if r.get("recipe") == cfg.to_dict():  # another recipe's results do not count
                done[r["arch_id"]] = r
    todo = [a for a in archs if a.arch_id not in done]
    print(f"{len(archs)} sub-networks, {len(todo)} to train alone for {cfg.steps} steps "
          f"(batch {cfg.batch_size}) on {device} with {args.jobs} job(s)", file=sys.stderr)
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if device == "cpu" else 1)
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_worker_init,
                                initargs=(threads,)) as pool:
        futs = {pool.submit(_train_one, a.to_dict(), corpus.path, cfg.to_dict(),
                            args.eval_batches, args.eval_batch_size): a for a in todo}
        for fut in cf.as_completed(futs):
            r = fut.result() | {"recipe": cfg.to_dict()}
            done[r["arch_id"]] = r
            with open(done_file, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"  {futs[fut].describe():45s} alone {r['val_loss']:.4f} "
                  f"({r['seconds']:.0f} s, {r['tokens_per_s']:,.0f} tok/s)", file=sys.stderr)

    rows = []
    for a in archs:
        r = done[a.arch_id]
        rows.append({"arch_id": a.arch_id, "description": a.describe(), "params": param_count(a),
                     "standalone_val_loss": r["val_loss"],
                     # the lowest periodic validation: training alone with early stopping
                     "standalone_best_val_loss": min((v for _, v in r.get("history") or ()),
                                                     default=r["val_loss"]),
                     "supernet_val_loss": scorer(a),
                     "role": roles.get(a.arch_id, "stratum"),
                     "standalone_tokens_per_s": r["tokens_per_s"], "standalone_seconds": r["seconds"]})
    df = pd.DataFrame(rows).sort_values("params").reset_index(drop=True)
    df.to_csv(args.out / "results.csv", index=False)
    coef = coefficients(df)
    tau, rho = coef["kendall_tau"], coef["spearman_rho"]
    summary = {
        **coef, "n_archs": len(df),
        "mean_gap_supernet_minus_standalone": float((df.supernet_val_loss
                                                     - df.standalone_val_loss).mean()),
        "steps": cfg.steps, "batch_size": cfg.batch_size,
        "scorer_seconds_per_arch": scorer.seconds / max(1, scorer.n_evaluated),
        "wall_seconds_this_invocation": time.perf_counter() - t0,
        "environment": {**environment(device), "worker_threads": threads},
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    _scatter(df, tau, rho, args.out / "scatter.png")
    print(df[["description", "params", "standalone_val_loss", "supernet_val_loss"]]
          .to_string(index=False))
    print(f"Kendall tau {tau:.3f}, Spearman rho {rho:.3f}  ->  {args.out}")
    if "kendall_tau_early_stopped" in coef:
        print(f"against the best periodic validation of each standalone run: Kendall tau "
              f"{coef['kendall_tau_early_stopped']:.3f}, Spearman rho "
              f"{coef['spearman_rho_early_stopped']:.3f}")


if __name__ == "__main__":
    main()
