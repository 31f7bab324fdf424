"""In-place distillation on or off: the same supernet recipe, trained both ways.

    python experiments/distillation/run.py --space tiny --recipe tiny --steps 800 --out experiments/distillation/tiny_cpu
    python experiments/distillation/run.py --space shakespeare --recipe shakespeare --steps 1500 --out DIR   # a GPU

Trains the supernet of ``--space`` with ``conf/train/<recipe>.yaml`` for ``--steps`` steps
once per distillation weight (``--alphas``; the recorded runs compare 1, the
teacher-only loss of that time, with 0; nothing else changes), and scores the largest, the
baseline and the smallest sub-network with inherited weights (nas.supernet.score.AccuracyScorer,
4 x 32 validation windows, fp32). Writes ``results.csv`` into ``--out``. Needs only torch,
pandas and pyyaml.
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

import pandas as pd  # noqa: E402

from nas.supernet.data import load_corpus  # noqa: E402
from nas.environment import environment  # noqa: E402
from nas.supernet.score import AccuracyScorer  # noqa: E402
from nas.space import load_space  # noqa: E402
from nas.supernet.recipe import TrainConfig, resolve_device  # noqa: E402
from nas.supernet.train import load_supernet, train_supernet


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--recipe", default="tiny", help="conf/train/<recipe>.yaml")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.0],
                    help="distillation weights (1: the teacher alone, as the recorded runs; 0: off)")
    a = ap.parse_args(argv)
    space = load_space(a.space)
    base = TrainConfig.from_recipe(a.recipe, steps=a.steps, eval_every=0)
    corpus = load_corpus(base.data, block_size=space.block_size, vocab_size=space.vocab_size)
    device = resolve_device(base.device)
    archs = {"largest": space.largest(), "baseline": space.baseline_arch() or space.largest(),
             "smallest": space.smallest()}
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for alpha in a.alphas:
        cfg = dataclasses.replace(base, distill_alpha=alpha)
        t0 = time.perf_counter()
        path = train_supernet(space, corpus, cfg, a.out / f"distill_alpha_{alpha:g}", progress=False)
        scorer = AccuracyScorer(load_supernet(path, space, device), corpus, device)
        rows.append({"distill_alpha": alpha, "steps": cfg.steps, "seconds": time.perf_counter() - t0,
                     **{f"val_{k}": scorer(v) for k, v in archs.items()}})
        path.unlink()  # the checkpoints are not results; keep the folder small
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(a.out / "results.csv", index=False)
    (a.out / "environment.json").write_text(json.dumps(environment(device), indent=2))
    print(df.to_string(index=False))
    return df


if __name__ == "__main__":
    main()
