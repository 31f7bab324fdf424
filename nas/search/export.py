"""Export a study's winners: ``python -m nas.search.export [--study NAME] [--budget NAME=B]``.

Writes, from the storage alone, into ``outputs/<study>/`` (or ``--out``):

- ``trials.csv``: every finished trial; ``pareto.csv``: the Pareto front, by its first
  objective other than the loss (fastest first);
- ``pareto/NN_<arch>_<id>_lat<ms>ms_loss<loss>.yaml``: every Pareto-optimal architecture
  (one ``<tag><value>`` per objective: ``dec0.123ms``, ``mem1.52MB``...);
- ``winner_<arch>_<id>_....yaml``: the lowest loss within every budget.

Each YAML is an :class:`~nas.space.ArchConfig` file (``arch:``, read by
``ArchConfig.from_yaml`` and so by ``build_model`` and ``python -m nas.train``) with its
predicted objectives, loss and provenance under ``meta:``.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import optuna
import pandas as pd

from nas.errors import ConfigError, OneLineParser, exit_on_user_error
from nas.outputs import check_folder
from nas.search.objectives import LOSS, REGISTRY, check_budgets, describe_budgets
from nas.search.results import check_search_study, choose_winner, objectives_of, pareto_frame, trials_frame
from nas.space import ArchConfig
from nas.search.study import damaged_storage_is_refused, find_study, open_storage, study_names

DEFAULT_STORAGE = "sqlite:///outputs/nas.db"
PARETO_DIR = "pareto"


@dataclass(frozen=True)
class Exported:
    """What an export wrote."""

    trials_csv: Path
    pareto_csv: Path
    pareto_yamls: list[Path]
    winner: Path | None
    budgets: dict[str, float]


def file_stem(row: pd.Series, names: list[str]) -> str:
    """``L3-d128-fp32_<arch_id>_lat1.234ms_loss2.013``: self-describing, sortable; one
    ``<tag><value><unit>`` per objective of ``names``, the loss last."""
    arch = f"L{int(row['n_layer'])}-d{int(row['d_model'])}-{row['precision']}"
    objs = [REGISTRY[n] for n in names if n != LOSS] + [REGISTRY[LOSS]]
    return "_".join([arch, row["arch_id"], *(f"{o.tag}{row[o.name]:{o.fmt}}{o.unit}" for o in objs)])


def _meta(study: optuna.Study, row: pd.Series, names: list[str],
          budgets: dict[str, float]) -> dict[str, Any]:
    attrs = study.user_attrs
    return {
        **{f"predicted_{n}": round(float(row[n]), 6) for n in names if n not in (LOSS, "params")},
        "val_loss": round(float(row["val_loss"]), 6),
        "params": int(row["params"]) if row["params"] is not None else None,
        "arch_id": row["arch_id"],
        "study": study.study_name,
        "trial": int(row["number"]),
        "budgets": budgets,
        "hardware": attrs.get("hardware"),
        "device": attrs.get("device"),
        "latency_table": attrs.get("table"),
        "supernet": attrs.get("supernet"),
    }


def study_budgets(study: optuna.Study) -> dict[str, float]:
    """The budgets a study was searched under (older studies: only ``latency_budget_ms``)."""
    attrs = study.user_attrs
    if "budgets" in attrs:
        return dict(attrs["budgets"])
    b = attrs.get("latency_budget_ms")
    return {} if b is None else {"latency_ms": b}


def export_study(study: optuna.Study, out_dir: Path,
                 budgets: Mapping[str, float] | None = None) -> Exported:
    """Write the CSVs and YAML configs of ``study`` into ``out_dir``.

    Args:
        study: a study made by ``nas.search`` (its trials carry their architecture).
        out_dir: where to write; earlier exported YAMLs there are replaced.
        budgets: pick the winner under these budgets, by objective; they replace the
            study's own budgets on the same objectives and keep the others.

    Raises:
        ConfigError: a budget on an objective the study does not minimise.
    """
    check_search_study(study)
    df = trials_frame(study)
    names = objectives_of(df)
    check_budgets(budgets or {}, names, "--budget", f"the objectives of {study.study_name!r}")
    budgets = {**study_budgets(study), **(budgets or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    front = pareto_frame(df)
    trials_csv, pareto_csv = out_dir / "trials.csv", out_dir / "pareto.csv"
    df.to_csv(trials_csv, index=False)
    front.to_csv(pareto_csv, index=False)

    # Replace the previous export's files (ours only, by pattern): a stale winner
    # lying next to a new one would be worse than none.
    pdir = out_dir / PARETO_DIR
    pdir.mkdir(exist_ok=True)
    for old in [*pdir.glob("[0-9][0-9]_*.yaml"), *out_dir.glob("winner_*.yaml")]:
        old.unlink()
    archs = {t.number: t.user_attrs.get("arch") for t in study.get_trials(deepcopy=False)}
    yamls = []
    for i, row in front.iterrows():
        path = pdir / f"{i:02d}_{file_stem(row, names)}.yaml"
        ArchConfig.from_dict(archs[int(row["number"])]).to_yaml(
            path, extra=_meta(study, row, names, budgets))
        yamls.append(path)
    best = choose_winner(front, budgets)
    winner = None
    if best is not None:
        winner = out_dir / f"winner_{file_stem(best, names)}.yaml"
        ArchConfig.from_dict(archs[int(best["number"])]).to_yaml(
            winner, extra=_meta(study, best, names, budgets))
    return Exported(trials_csv, pareto_csv, yamls, winner, budgets)


def load_named_study(storage_url: str, name: str | None) -> optuna.Study:
    """Open ``name`` in ``storage_url``; with no name, the storage's only study."""
    storage = open_storage(storage_url, key="--storage", create=False)
    names = study_names(storage)
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"--study: {storage_url} holds {len(names)} studies; name one of {names}")
        name = names[0]
    study = find_study(storage, name)
    if study is None:
        raise ConfigError(f"--study: no study {name!r} in {storage_url}; available: {names}")
    check_search_study(study)
    return study


def _positive(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a number") from None
    if not (x > 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"{v!r} must be a positive number")
    return x


def _budget(v: str) -> tuple[str, float]:
    """``NAME=VALUE``: a budget on an objective."""
    name, eq, value = v.partition("=")
    if not eq or name not in REGISTRY:
        raise argparse.ArgumentTypeError(
            f"{v!r} is not NAME=VALUE with NAME one of {', '.join(n for n in REGISTRY if n != LOSS)}")
    return name, _positive(value)


@exit_on_user_error
def main(argv: list[str] | None = None) -> Exported:
    ap = OneLineParser(
        prog="nas-export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a search study's Pareto front and its winner within the budgets\n"
                    "(trials.csv, pareto.csv, one YAML per architecture) from the storage.",
        epilog="example:\n  nas-export --study tiny-cpu --budget-ms 0.8\n"
               "  nas-export --study tiny-cpu --budget peak_mem_mb=2 --budget decode_ms=0.3\n"
               "  nas-export --storage sqlite:///outputs/nas.db --study tiny-cpu --out winners/")
    ap.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL or journal file")
    ap.add_argument("--study", default=None, help="study name (default: the storage's only one)")
    ap.add_argument("--budget", type=_budget, action="append", default=[], metavar="NAME=VALUE",
                    help="choose the winner under this budget, e.g. peak_mem_mb=200; repeat it for "
                         "several (default: the study's budgets)")
    ap.add_argument("--budget-ms", type=_positive, default=None,
                    help="the same as --budget latency_ms=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: outputs/<study>)")
    args = ap.parse_args(argv)
    if args.out is not None:
        check_folder(args.out, "--out")
    with damaged_storage_is_refused(args.storage, "--storage"):
        study = load_named_study(args.storage, args.study)
        out = args.out or Path("outputs") / study.study_name
        check_folder(out, "--out")
        try:
            budgets = dict(args.budget)
            if args.budget_ms is not None:
                budgets["latency_ms"] = args.budget_ms
            res = export_study(study, out, budgets)
        except OSError as e:  # a folder that turned out unwritable, a full disk
            raise ConfigError(f"--out: cannot write into {out} ({e.strerror or e})") from None
    print(f"pareto front: {len(res.pareto_yamls)} architectures -> {res.pareto_csv}")
    limit = describe_budgets(res.budgets)
    if res.winner is None:
        print(f"winner: no Pareto-optimal architecture within {limit}")
    else:
        print(f"winner ({limit}): {res.winner}")
    return res


def cli() -> None:
    """``nas-export``: :func:`main`, whose return value a console script would take for an
    exit status."""
    main()


if __name__ == "__main__":
    main()
