"""Export a study's winners: ``python -m nas.search.export [--study NAME] [--budget NAME=B]``.

Writes, from the storage alone, into ``outputs/<study>/`` (or ``--out``):

- ``trials.csv``: every finished trial; ``pareto.csv``: the Pareto front, by its first
  objective other than the loss (fastest first);
- ``pareto/NN_<arch>_<id>_lat<ms>ms_loss<loss>.yaml``: every Pareto-optimal architecture
  (one ``<tag><value>`` per objective: ``dec0.123ms``, ``mem1.52MB``...);
- ``winner_<arch>_<id>_....yaml``: the lowest loss within every budget.

Each YAML is an :class:`~nas.space.ArchConfig` file (``arch:``, read by
``ArchConfig.from_yaml`` and so by ``build_model`` and ``nas-train``) with its
predicted objectives, loss and provenance under ``meta:``.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import optuna
import pandas as pd

from nas.errors import ConfigError, OneLineParser, disk_full, exit_on_user_error, shown
from nas.outputs import check_folder, folder_name, no_link, write_atomic
from nas.search.objectives import LOSS, REGISTRY, check_budgets, describe_budgets, of_study
from nas.search.results import check_search_study, choose_winner, objectives_of, pareto_frame, trials_frame
from nas.space import ArchConfig
from nas.search.storage import damaged_storage_is_refused, open_storage
from nas.search.study import find_study, study_names

DEFAULT_STORAGE = "sqlite:///outputs/nas.db"
PARETO_DIR = "pareto"
# What an export wrote, so that the next one replaces exactly those files and no other.
MANIFEST = ".nas-export.json"
STEM_MAX = 180


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
    ``<tag><value><unit>`` per objective of ``names``, the loss last. Whatever a storage
    holds (a hand-edited ``arch_id``), it is one plain file name."""
    arch = f"L{int(row['n_layer'])}-d{int(row['d_model'])}-{row['precision']}"
    objs = [REGISTRY[n] for n in names if n != LOSS] + [REGISTRY[LOSS]]
    stem = "_".join([arch, str(row["arch_id"]),
                     *(f"{o.tag}{row[o.name]:{o.fmt}}{o.unit}" for o in objs)])
    return stem if _is_file_name(stem, STEM_MAX) else folder_name(stem)


def _is_file_name(name: Any, limit: int = 255) -> bool:
    """One plain file name: no folder part, not hidden, letters, digits, '.', '_', '-'."""
    return (isinstance(name, str) and 0 < len(name) <= limit and not name.startswith(".")
            and all(c.isalnum() or c in "._-" for c in name))


def budget_tag(budgets: Mapping[str, float]) -> str:
    """``lat0.8ms-mem2MiB``: budgets as a file name part, by objective name."""
    return "-".join(f"{REGISTRY[n].tag}{b:g}{REGISTRY[n].unit}" for n, b in sorted(budgets.items()))


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
    """The budgets a study was searched under (older studies: only ``latency_budget_ms``).

    Raises:
        ConfigError: recorded budgets that are not positive numbers by objective (an
            edited storage).
    """
    attrs = study.user_attrs
    if "budgets" in attrs:
        raw = attrs["budgets"]
    else:
        b = attrs.get("latency_budget_ms")
        raw = {} if b is None else {"latency_ms": b}
    names = of_study(study) or ()
    ok = isinstance(raw, Mapping) and all(
        n in names and n != LOSS and isinstance(b, (int, float)) and not isinstance(b, bool)
        and math.isfinite(b) and b > 0 for n, b in raw.items())
    if not ok:
        raise ConfigError(f"--study: {shown(study.study_name, 80)} records the budgets "
                          f"{shown(raw, 100)}, not positive numbers on its objectives (an "
                          "edited storage?); restore the storage from a copy")
    return {str(n): float(b) for n, b in raw.items()}


def _read_manifest(out_dir: Path) -> tuple[list[str], dict[str, str]]:
    """The Pareto files and the winners (by budgets) the last export into ``out_dir`` wrote;
    nothing when there is no record or it is not one (a name with a folder part included)."""
    try:
        m = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return [], {}
    if not isinstance(m, dict):
        return [], {}
    pareto = m.get("pareto") if isinstance(m.get("pareto"), list) else []
    winners = m.get("winners") if isinstance(m.get("winners"), dict) else {}
    ours = lambda n: _is_file_name(n) and n.endswith(".yaml")  # noqa: E731
    return [n for n in pareto if ours(n)], {str(k): v for k, v in winners.items() if ours(v)}


def _remove_ours(folder: Path, name: str) -> None:
    """Delete a file an earlier export wrote, if it is still a plain file (never a link)."""
    p = folder / name
    if p.is_file() and not p.is_symlink():
        p.unlink()


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    return write_atomic(path, lambda f: df.to_csv(f, index=False))


def export_study(study: optuna.Study, out_dir: Path,
                 budgets: Mapping[str, float] | None = None) -> Exported:
    """Write the CSVs and YAML configs of ``study`` into ``out_dir``.

    The files of the previous export there (recorded in :data:`MANIFEST`) are replaced:
    its Pareto YAMLs, and its winner under the same budgets. A winner under other
    budgets (a what-if: ``--budget-ms``) is written beside the study's own, as
    ``winner-<budgets>_...yaml``; no other file is touched, and nothing is written
    through a symbolic link.

    Args:
        study: a study made by ``nas.search`` (its trials carry their architecture).
        out_dir: where to write.
        budgets: pick the winner under these budgets, by objective; they replace the
            study's own budgets on the same objectives and keep the others.

    Raises:
        ConfigError: a budget on an objective the study does not minimise; a study whose
            records are not those of a search.
    """
    check_search_study(study)
    df = trials_frame(study)
    names = objectives_of(df)
    check_budgets(budgets or {}, names, "--budget", f"the objectives of {shown(study.study_name, 80)}")
    own = study_budgets(study)
    budgets = {**own, **(budgets or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    pdir = no_link(out_dir / PARETO_DIR, "--out")
    pdir.mkdir(exist_ok=True)
    old_pareto, winners = _read_manifest(out_dir)
    front = pareto_frame(df)
    trials_csv = _write_csv(df, out_dir / "trials.csv")
    pareto_csv = _write_csv(front, out_dir / "pareto.csv")

    archs = {t.number: t.user_attrs.get("arch") for t in study.get_trials(deepcopy=False)}
    yamls = []
    for i, row in front.iterrows():
        path = pdir / f"{i:02d}_{file_stem(row, names)}.yaml"
        ArchConfig.from_dict(archs[int(row["number"])]).to_yaml(
            path, extra=_meta(study, row, names, budgets))
        yamls.append(path)
    best = choose_winner(front, budgets)
    tag = budget_tag(budgets)
    prefix = "winner_" if budgets == own else f"winner-{tag}_"
    previous = winners.pop(tag, None)
    winner = None
    if best is not None:
        winner = out_dir / f"{prefix}{file_stem(best, names)}.yaml"
        ArchConfig.from_dict(archs[int(best["number"])]).to_yaml(
            winner, extra=_meta(study, best, names, budgets))
        winners[tag] = winner.name
    # Recorded before the old files go: a crash in between leaves a stale file, never
    # a record of a file that is not ours.
    record = {"format": "nas-export/1", "pareto": [p.name for p in yamls], "winners": winners}
    write_atomic(out_dir / MANIFEST, lambda f: f.write(json.dumps(record, indent=1).encode()))
    for name in set(old_pareto) - set(record["pareto"]):
        _remove_ours(pdir, name)
    if previous is not None and previous not in winners.values():
        _remove_ours(out_dir, previous)
    return Exported(trials_csv, pareto_csv, yamls, winner, budgets)


def load_named_study(storage_url: str, name: str | None) -> optuna.Study:
    """Open ``name`` in ``storage_url``; with no name, the storage's only study."""
    storage = open_storage(storage_url, key="--storage", create=False)
    names = study_names(storage)
    if name is None:
        if len(names) != 1:
            raise ConfigError(f"--study: {shown(storage_url, 100)} holds {len(names)} studies; "
                              f"name one of {shown(names)}")
        name = names[0]
    study = find_study(storage, name)
    if study is None:
        raise ConfigError(f"--study: no study {shown(name, 80)} in {shown(storage_url, 100)}; "
                          f"available: {shown(names)}")
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
        # A name read from the storage: one folder inside outputs/, whatever it holds.
        out = args.out or no_link(Path("outputs") / folder_name(study.study_name), "--out")
        check_folder(out, "--out")
        try:
            budgets = dict(args.budget)
            if args.budget_ms is not None:
                budgets["latency_ms"] = args.budget_ms
            res = export_study(study, out, budgets)
        except OSError as e:  # a folder that turned out unwritable, a full disk
            if disk_full(e) is not None:
                raise
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
