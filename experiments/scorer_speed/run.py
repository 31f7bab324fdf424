"""The accuracy scorer (nas.supernet.score.AccuracyScorer): seconds per architecture,
and how far the number of validation windows changes the ranking it gives.

Scores ``--n`` random architectures of a space (precisions drawn as the search draws
them) on ``n_batches x batch_size`` fixed validation windows for each count in
``--batches``, with a fresh scorer for every call so none is a cache hit. For each count
it reports the seconds per architecture (median, min, max) and, against the largest
count, Kendall's tau of the losses and the share of close pairs (reference losses less
than ``--close`` apart) that the smaller count orders the other way. Timing does not
depend on the weights, the ranking does: give the supernet the search uses.

    python experiments/scorer_speed/run.py --checkpoint outputs/supernets/tiny-KEY/supernet.pt \\
        --out experiments/scorer_speed/tiny_cpu

Writes ``rows.csv`` (one row per architecture and count) and ``summary.json`` into
``--out``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from nas.environment import environment  # noqa: E402
from nas.errors import exit_on_user_error  # noqa: E402
from nas.space import load_space, sample  # noqa: E402
from nas.supernet.data import load_corpus  # noqa: E402
from nas.supernet.score import AccuracyScorer  # noqa: E402
from nas.supernet.train import load_supernet  # noqa: E402


def pair_agreement(ref: list[float], other: list[float], close: float) -> tuple[float, float]:
    """Kendall's tau of ``other`` against ``ref`` (no ties expected in float losses), and
    the share of pairs less than ``close`` apart in ``ref`` that ``other`` orders the other way."""
    concordant = discordant = close_pairs = close_flipped = 0
    for i, j in itertools.combinations(range(len(ref)), 2):
        agree = (ref[i] - ref[j]) * (other[i] - other[j])
        concordant += agree > 0
        discordant += agree < 0
        if abs(ref[i] - ref[j]) < close:
            close_pairs += 1
            close_flipped += agree < 0
    n_pairs = len(ref) * (len(ref) - 1) // 2
    return (concordant - discordant) / n_pairs, close_flipped / max(close_pairs, 1)


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--n", type=int, default=60, help="random architectures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batches", type=int, nargs="+", default=[4, 16, 64],
                    help="validation batch counts; the largest is the reference")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--close", type=float, default=0.02, help="loss gap of a close pair")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (search.threads); 0: torch's default")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    if args.threads:
        # On a shared CPU, a second OpenMP thread waiting for a busy core stalls every op.
        torch.set_num_threads(args.threads)
    space = load_space(args.space)
    corpus = load_corpus(None, space.block_size, space.vocab_size)
    net = load_supernet(args.checkpoint, space, args.device, corpus=corpus)
    rng = random.Random(args.seed)
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    archs: dict[str, object] = {}
    while len(archs) < args.n:  # distinct: a repeat would count one pair twice
        a = sample(space, rng, device=dev)
        archs.setdefault(a.arch_id, a)
    archs = list(archs.values())
    counts = sorted(set(args.batches))
    AccuracyScorer(net, corpus, args.device, counts[0], args.batch_size)(archs[0])  # warm-up
    rows = []
    for a in archs:
        for nb in counts:
            scorer = AccuracyScorer(net, corpus, args.device, nb, args.batch_size)
            t0 = time.perf_counter()
            loss = scorer(a)
            rows.append({"arch": a.describe(), "arch_id": a.arch_id, "n_batches": nb,
                         "seconds": time.perf_counter() - t0, "loss": loss})
    df = pd.DataFrame(rows)
    losses = df.pivot(index="arch_id", columns="n_batches", values="loss")
    secs = df.groupby("n_batches")["seconds"]
    ref = losses[counts[-1]].tolist()
    per_count = {}
    for nb in counts:
        tau, flipped = pair_agreement(ref, losses[nb].tolist(), args.close)
        per_count[nb] = {"windows": f"{nb} x {args.batch_size} x {space.block_size}",
                         "median_s": secs.median()[nb], "min_s": secs.min()[nb],
                         "max_s": secs.max()[nb], f"kendall_tau_vs_{counts[-1]}": tau,
                         f"close_pairs_flipped_vs_{counts[-1]}": flipped}
    ref_gaps = [abs(x - y) for x, y in itertools.combinations(ref, 2)]
    summary = {
        "command": " ".join(["python", "experiments/scorer_speed/run.py", *sys.argv[1:]]),
        "space": space.name, "n_archs": args.n, "seed": args.seed, "device": args.device,
        "close": args.close, "close_pairs": sum(g < args.close for g in ref_gaps),
        "pairs": len(ref_gaps), "by_n_batches": per_count,
        "checkpoint": str(args.checkpoint), "supernet_step": net.meta.get("step"),
        "supernet_train": net.meta.get("train"), "environment": environment(args.device),
    }
    print(pd.DataFrame(per_count).T.to_string())
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.out / "rows.csv", index=False)
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))


if __name__ == "__main__":
    main()
