"""Seconds per architecture of the accuracy scorer (nas.supernet.score.AccuracyScorer).

Scores ``--n`` random architectures of a space (precisions drawn as the search draws
them) with a fresh scorer each, so no call is a cache hit, and reports the median and
the spread. Timing does not depend on the weights: without ``--checkpoint`` an
untrained supernet is used.

    python experiments/scorer_speed/run.py --space tiny --n 20 \\
        [--checkpoint outputs/supernet/tiny/supernet.pt] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script from a plain checkout

import torch  # noqa: E402

from nas.supernet.data import load_corpus  # noqa: E402
from nas.errors import exit_on_user_error  # noqa: E402
from nas.model import Supernet  # noqa: E402
from nas.supernet.score import AccuracyScorer  # noqa: E402
from nas.space import load_space, sample  # noqa: E402
from nas.train import load_supernet  # noqa: E402


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-batches", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    space = load_space(args.space)
    corpus = load_corpus(None, space.block_size, space.vocab_size)
    net = load_supernet(args.checkpoint, space, args.device) if args.checkpoint \
        else Supernet(space).to(args.device).eval()
    rng = random.Random(args.seed)
    dev = "cuda" if args.device.startswith("cuda") else "cpu"
    archs = [sample(space, rng, device=dev) for _ in range(args.n)]
    AccuracyScorer(net, corpus, args.device, args.n_batches, args.batch_size)(archs[0])  # warm-up
    rows = []
    for a in archs:
        scorer = AccuracyScorer(net, corpus, args.device, args.n_batches, args.batch_size)
        t0 = time.perf_counter()
        loss = scorer(a)
        rows.append({"arch": a.describe(), "seconds": time.perf_counter() - t0, "loss": loss})
    secs = sorted(r["seconds"] for r in rows)
    summary = {"median_s": statistics.median(secs), "min_s": secs[0], "max_s": secs[-1],
               "n": args.n, "space": space.name, "device": args.device,
               "windows": f"{args.n_batches} x {args.batch_size} x {space.block_size}",
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "platform": platform.platform(), "checkpoint": str(args.checkpoint)}
    for r in rows:
        print(f"  {r['arch']:50s} {r['seconds'] * 1e3:7.1f} ms  loss {r['loss']:.4f}")
    print(f"median {summary['median_s'] * 1e3:.1f} ms (min {secs[0] * 1e3:.1f}, "
          f"max {secs[-1] * 1e3:.1f}) over {args.n} architectures")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps({**summary, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
