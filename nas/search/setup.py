"""From a composed config to the objects of a search, refusing anything wrong early.

:func:`check` turns the Hydra config of ``python -m nas.search`` into typed objects, the
search space and the latency tables, and refuses anything wrong (a bad value, a table
that does not cover the space, a budget below the best architecture, a storage that
cannot be opened, a study made with other objectives or settings) before a supernet is
trained or anything is written: the command runs it before Hydra creates its run folder
(``nas.search.run.CheckFirst``). :func:`build` then trains or finds the supernet and
its scorer; :func:`prepare` is both, for the Python API and the experiments, so they
measure exactly what the command runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from optuna.storages import BaseStorage

if TYPE_CHECKING:
    from nas.latency import LatencyTable

from nas.errors import ConfigError
from nas.paths import resolve
from nas.latency.local import Resolved, other_machine
from nas.search.samplers import SamplerConfig
from nas.search.config import HardwareConfig, ScoreConfig, SearchConfig, SupernetConfig, typed
from nas.space import ArchConfig, SearchSpace
from nas.search.objectives import REGISTRY, Predictor, load_tables, table_files
from nas.search.study_settings import search_settings
from nas.search.study import check_compatible, find_study
from nas.search.workers import folder_lock, open_worker_storage


@dataclass
class Prepared:
    """Everything ``run_study`` needs, checked."""

    search: SearchConfig
    sampler: SamplerConfig
    hardware: HardwareConfig
    hardware_name: str
    space: SearchSpace
    table: LatencyTable
    tables: Mapping[str, Any]                   # by kind: nas.search.objectives.load_tables
    scorer: Callable[[ArchConfig], float]       # nas.supernet.score.AccuracyScorer
    storage: BaseStorage
    study_attrs: Mapping[str, Any]
    trial_attrs: Mapping[str, Any]


def check_gpu(device: str) -> None:
    """Refuse ``search.device`` naming a GPU this machine does not have."""
    if not device.startswith("cuda"):
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    k = int(device.partition(":")[2] or 0)
    if n == 0:
        raise ConfigError(f"search.device: {device!r} was asked for but no CUDA GPU is visible; "
                          "allowed here: cpu, auto")
    if k >= n:
        raise ConfigError(f"search.device: {device!r}: this machine has {n} GPU(s); allowed: "
                          f"cpu, auto, cuda, cuda:0 to cuda:{n - 1}")


def fastest_arch(space: SearchSpace, latency: Predictor, device: str,
                 predict: Callable[[ArchConfig], float] | None = None) -> tuple[ArchConfig, float]:
    """The fastest architecture of ``space`` under the latency table (or lowest ``predict``).

    With an additive per-block table the fastest network has the fewest layers, all
    alike; every (width, heads, FFN, precision) of that depth is tried, which also
    checks that the table answers for every block the search can propose. (The
    smallest architecture is not always the fastest: measured blocks are not monotone.)
    """
    predict = predict or latency.predict_ms
    best: tuple[ArchConfig, float] | None = None
    L = space.n_layer_min
    for p in space.precisions(device):
        for d in space.d_model:
            for h in space.n_head:
                if h * space.head_dim > d:
                    continue
                for f in space.d_ff:
                    arch = space.make(L, d, [h] * L, [f] * L, p)
                    ms = float(predict(arch))
                    if best is None or ms < best[1]:
                        best = (arch, ms)
    assert best is not None  # SearchSpace guarantees a head choice fits the narrowest width
    return best


def check_budget(budget: float | None, best: tuple[ArchConfig, float], where: str,
                 key: str = "search.latency_budget_ms", unit: str = "ms") -> None:
    """A budget below the best architecture (the fastest, the smallest) leaves nothing to search."""
    arch, v = best
    if budget is not None and budget < v:
        raise ConfigError(
            f"{key}: {budget:g} {unit} is below the {'fastest' if unit == 'ms' else 'smallest'} "
            f"architecture of {where}: {arch.describe()} at {v:.4g} {unit}; give at least {v:.4g}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tables_sha256(*csvs: Path) -> str:
    """One digest of latency tables' CSVs and their JSONs next to them (the calibration)."""
    parts = [file_sha256(p) for csv in csvs for p in (csv, csv.with_suffix(".json")) if p.is_file()]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def cached_supernet(space: SearchSpace, train_cfg: Any, cache_dir: Path,
                    progress: bool = True) -> Path:
    """A supernet trained with ``train_cfg``: trained once, then reused.

    The cache folder is keyed by the space, the corpus's contents (its sha256) and every
    training setting that changes the weights, so a re-run reuses it and an interrupted training continues from its last
    checkpoint (``nas.supernet.train.train_supernet`` resumes into the same folder). Workers
    starting together take turns: the first trains, the others find its checkpoint.
    """
    from nas.supernet.data import load_corpus
    from nas.supernet.train import train_supernet

    settings = {k: v for k, v in train_cfg.to_dict().items()
                if k not in ("device", "log_every", "eval_every")}
    corpus = load_corpus(train_cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    # The corpus by its contents: one prepared or replaced at the same path is another.
    blob = json.dumps({"space": space.to_dict(), "train": settings, "split": list(corpus.split),
                       "corpus": corpus.sha256}, sort_keys=True)
    key = hashlib.sha1(blob.encode()).hexdigest()[:10]
    folder = cache_dir / f"{space.name}-{key}"
    with folder_lock(folder):  # workers started together: one trains, the others reuse it
        return train_supernet(space, corpus, train_cfg, folder, progress=progress)


def _storage_exists(url: str) -> bool:
    """Whether the storage at ``url`` is there already (a server's always counts as there)."""
    if "://" not in url:
        return Path(url).exists()
    if url.startswith("sqlite:///"):
        db = url[len("sqlite:///"):].split("?")[0]
        return not db or db == ":memory:" or Path(db).exists()
    return True


def table_here(hardware: HardwareConfig, hardware_name: str, space: SearchSpace) -> Resolved:
    """The prefill table to search with on this machine (``nas.latency.local``), with the
    line to show when it is not the one named, or when the one named is another machine's.

    Args:
        hardware: the target as composed (``hardware.table``, ``hardware.local``).
        hardware_name: its name: the table its file names is its own, any other one was
            named with ``hardware.table=...`` and is used as it is.
        space: the search space the table must cover.
    """
    from nas.latency.local import local_table
    from nas.latency.target import own_table

    return local_table(hardware.table, local=hardware.local, default=own_table(hardware_name),
                       space=space)


@dataclass
class Checked:
    """A search's config, checked: what :func:`build` turns into a :class:`Prepared`."""

    search: SearchConfig
    sampler: SamplerConfig
    hardware: HardwareConfig
    hardware_name: str
    net: SupernetConfig
    score: ScoreConfig
    train: Any                                  # nas.supernet.recipe.TrainConfig
    space: SearchSpace
    table: LatencyTable
    tables: Mapping[str, Any]
    attrs: dict[str, Any]
    storage: BaseStorage | None                 # opened when it exists already
    existing: Any                               # the study of that name in it, if any
    note: str | None = None                     # which table is used, when not the one named


def check(cfg: Any, hardware_name: str) -> Checked:
    """Check the composed config of ``python -m nas.search``: nothing is trained or written.

    Args:
        cfg: the composed config (``conf/config.yaml`` with its groups and overrides).
        hardware_name: the ``hardware`` group's choice, recorded with the study.

    Raises:
        ConfigError: anything a user can fix, as one line.
    """
    from omegaconf import OmegaConf

    from nas.latency import LatencyTable
    from nas.supernet.recipe import TrainConfig, resolve_device

    search = typed(SearchConfig, cfg.search, "search")
    check_gpu(search.device)
    sampler = typed(SamplerConfig, cfg.sampler, "sampler")
    hardware = typed(HardwareConfig, cfg.hardware, f"hardware ({hardware_name})")
    net = typed(SupernetConfig, cfg.supernet, "supernet")
    score = typed(ScoreConfig, cfg.score, "score")
    train_cfg = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
    space = SearchSpace.from_dict(OmegaConf.to_container(cfg.search_space, resolve=True))
    space.precisions(hardware.device)

    if "latency_ms" not in search.objectives and search.latency_budget_ms == hardware.latency_budget_ms:
        # The target's default budget is on latency_ms: it has nothing to constrain here.
        search = dataclasses.replace(search, latency_budget_ms=None)
    budgets = search.budget_map()
    here = table_here(hardware, hardware_name, space)
    table_file = here.path
    if not resolve(table_file).is_file():  # the target's command builds it in its own mode
        raise ConfigError(f"{table_file}: latency table not found; build it with: python -m "
                          f"nas.latency build search_space={space.name} hardware={hardware_name} "
                          f"latency.batch_size=1 latency.table={table_file}")
    table = LatencyTable.load(table_file, space=space, device=hardware.device)
    tables = load_tables(search.objectives, hardware, hardware_name, space, table)
    fastest = fastest_arch(space, table, hardware.device)
    where = f"space '{space.name}' on {hardware_name} ({table_file})"
    for name, budget in budgets.items():
        o = REGISTRY[name]
        best = fastest_arch(space, table, hardware.device, lambda a: o.predict(a, tables))
        check_budget(budget, best, where, search.budget_key(name), o.unit)
    fingerprint = dict(table.fingerprint)
    attrs: dict[str, Any] = {
        "space": space.to_dict(),
        "device": hardware.device,
        "hardware": hardware_name,
        "table": str(table_file),
        "table_fingerprint": fingerprint,
        "table_sha256": tables_sha256(*map(Path, table_files(tables))),
        "latency_budget_ms": budgets.get("latency_ms"),
        "budgets": budgets,
        "score": dataclasses.asdict(score),
        "fastest": {"arch": fastest[0].to_dict(), "latency_ms": fastest[1]},
        "baseline": space.baseline,
        **search_settings(sampler, search.seed, search.objectives),
    }
    if net.checkpoint is not None and not Path(net.checkpoint).is_file():
        raise ConfigError(f"supernet.checkpoint: {net.checkpoint} not found (null trains one)")
    if net.checkpoint is None:
        resolve_device(train_cfg.device)  # refused now rather than after opening the storage
    # A storage file that is not there yet is made once every check has passed: a refused
    # command leaves no empty database behind. One that exists (or a server) is opened now,
    # so a study it holds with other settings is refused before a supernet is trained.
    storage = open_worker_storage(search) if _storage_exists(search.storage) else None
    existing = None if storage is None else find_study(storage, search.study_name)
    if existing is not None:  # refuse a mismatch now, before training a supernet
        check_compatible(existing, attrs, search.storage, search.objectives)
    return Checked(search, sampler, hardware, hardware_name, net, score, train_cfg, space, table,
                   tables, attrs, storage, existing, here.note)


def build(c: Checked) -> Prepared:
    """Train (or find) the supernet of a checked search and open its storage.

    A refused command said only why: the notes on the tables are shown here.
    """
    from nas.supernet.data import load_corpus
    from nas.supernet.recipe import resolve_device
    from nas.supernet.score import AccuracyScorer
    from nas.supernet.train import load_supernet

    search, hardware, space, net, train_cfg = c.search, c.hardware, c.space, c.net, c.train
    attrs, storage, existing, tables = c.attrs, c.storage, c.existing, c.tables
    # The serving tables (decode, request, memory) are not replaced by this machine's; one
    # measured elsewhere is named.
    notes = [c.note] if c.note else []
    for csv in table_files(tables)[1:]:
        differs = other_machine(Path(csv))
        if differs:
            notes.append(f"warning: {csv} was measured on other hardware ({differs[0]}); "
                         "`nas-latency check` measures whether it holds here")
    for note in notes:
        print(note, file=sys.stderr)

    if net.checkpoint is None:
        ckpt = cached_supernet(space, train_cfg, Path(net.cache_dir), progress=search.progress)
    else:
        ckpt = Path(net.checkpoint)
    attrs["supernet"] = str(ckpt)
    attrs["supernet_sha256"] = file_sha256(ckpt)
    if existing is not None:
        check_compatible(existing, attrs, search.storage, search.objectives)

    if search.threads is not None:
        import torch
        torch.set_num_threads(search.threads)
    device = resolve_device(search.device)
    corpus = load_corpus(train_cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    supernet = load_supernet(ckpt, space, device=device, corpus=corpus)
    scorer = AccuracyScorer(supernet, corpus, device=device, n_batches=c.score.n_batches,
                            batch_size=c.score.batch_size)
    if storage is None:
        storage = open_worker_storage(search)
    return Prepared(search=search, sampler=c.sampler, hardware=hardware,
                    hardware_name=c.hardware_name, space=space, table=c.table, tables=tables, scorer=scorer,
                    storage=storage, study_attrs=attrs,
                    trial_attrs={"table_fingerprint": attrs["table_fingerprint"]})


def prepare(cfg: Any, hardware_name: str) -> Prepared:
    """:func:`check`, then :func:`build`: everything a search needs, refused early."""
    return build(check(cfg, hardware_name))
