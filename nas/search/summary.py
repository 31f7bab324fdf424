"""The terminal report of ``python -m nas.search``: what the run did and what it found."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import optuna


@dataclass
class SearchResult:
    """What a search did."""

    study: optuna.Study
    new_trials: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failed_stale: list[int] = field(default_factory=list)
    summary: str = ""  # the report the command prints (nas.search.summary), once exported

    @property
    def trials_per_s(self) -> float:
        return self.new_trials / self.seconds if self.seconds > 0 else math.nan



def summary(result: SearchResult, budgets: Mapping[str, float], hardware: str,
            paths: Mapping[str, Any], storage_url: str) -> str:
    """The terminal report: counts, speed, where the time went, the front, the files."""
    from nas.search.objectives import LOSS, REGISTRY, describe_budgets
    from nas.search.results import choose_winner, objectives_of, pareto_frame, trials_frame

    df = trials_frame(result.study)
    names = objectives_of(df)
    done = df[df["state"] == "COMPLETE"]
    n_ok = int((done["feasible"]).sum())
    front = pareto_frame(df)
    win = choose_winner(front, budgets)
    lines = [
        f"study {result.study.study_name}: {len(done)} trials ({n_ok} within budget, "
        f"{len(done) - n_ok} over budget), {int((df['state'] == 'FAIL').sum())} failed",
    ]
    if result.failed_stale:
        lines.append(f"{len(result.failed_stale)} trial(s) of a stopped worker marked failed and "
                     f"queued again ({', '.join(map(str, result.failed_stale))})")
    if result.new_trials:
        st = result.stage_seconds
        tot = max(result.seconds, 1e-9)
        lines.append(
            f"this run: {result.new_trials} trials in {result.seconds:.1f} s "
            f"({result.trials_per_s:.2f} trials/s); scoring {st.get('score', 0):.1f} s "
            f"({100 * st.get('score', 0) / tot:.0f}%), predictions {st.get('latency', 0):.3f} s, "
            f"Optuna + storage {st.get('optuna_and_storage', 0):.1f} s")
    limit = describe_budgets(budgets)
    by = next(n for n in names if n != LOSS)
    lines.append(f"Pareto front on {hardware} ({limit}), by {by}:")
    cols = [*names, *(["params"] if "params" not in names else [])]
    width = {c: max(len(c), 8) for c in cols}
    lines.append(f"  {'trial':>5}  " + "  ".join(f"{c:>{width[c]}}" for c in cols) + "  arch")

    def row(r: Any) -> str:
        return "  ".join(f"{r[c]:>{width[c]}{REGISTRY[c].fmt}}"
                         for c in cols)

    for _, r in front.iterrows():
        mark = " <- winner" if win is not None and r["number"] == win["number"] else ""
        lines.append(f"  {r['number']:>5}  {row(r)}  {r['arch']}{mark}")
    base = done[done["baseline"] & done["scored"]]
    if len(base):
        b = base.iloc[0]
        lines.append(f"  {'base':>5}  {row(b)}  {b['arch']} (baseline, trial {b['number']})")
    lines.append(f"pareto csv : {paths['pareto_csv']}")
    lines.append(f"pareto plot: {paths['plot']}")
    lines.append(f"winner     : {paths['winner'] or 'none within budget'}")
    import importlib.util
    get = "" if importlib.util.find_spec("optuna_dashboard") else "  (not installed: pip install optuna-dashboard)"
    lines.append(f"dashboard  : optuna-dashboard {storage_url}{get}")
    return "\n".join(lines)
