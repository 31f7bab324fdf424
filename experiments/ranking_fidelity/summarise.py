"""Recompute the ranking coefficients of a finished run from its files alone.

    python experiments/ranking_fidelity/summarise.py experiments/ranking_fidelity/h200_shakespeare

Reads ``results.csv`` and ``standalone.jsonl`` (each standalone run's periodic validation
history), adds ``standalone_best_val_loss`` when missing, and prints Kendall's tau and
Spearman's rho against both the final and the best standalone loss.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import coefficients  # noqa: E402


def main(folder: str) -> dict:
    out = Path(folder)
    df = pd.read_csv(out / "results.csv")
    runs = [json.loads(line) for line in (out / "standalone.jsonl").read_text().splitlines() if line]
    best = {r["arch_id"]: min((v for _, v in r.get("history") or ()), default=r["val_loss"])
            for r in runs}
    df["standalone_best_val_loss"] = df.arch_id.map(best)
    coef = coefficients(df)
    print(df[["description", "params", "standalone_val_loss", "standalone_best_val_loss",
              "supernet_val_loss"]].to_string(index=False))
    print(json.dumps(coef, indent=2))
    return coef


if __name__ == "__main__":
    main(sys.argv[1])
