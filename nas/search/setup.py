"""From a composed config to the objects of a search, refusing anything wrong early.

:func:`prepare` turns the Hydra config of ``python -m nas.search`` into typed objects,
the search space, the latency table, the supernet and its scorer. Everything that could
refuse the search (a bad value, a table that does not cover the space, a budget below
the fastest architecture, a storage that cannot be opened, a study made with other
objectives or settings) is checked before a supernet is trained or anything is written.
The experiments call it too, so they measure exactly what the command runs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from optuna.storages import BaseStorage

from nas.errors import ConfigError
from nas.search.samplers import SamplerConfig
from nas.search.config import HardwareConfig, ScoreConfig, SearchConfig, SupernetConfig
from nas.search.config import typed  # noqa: F401 (imported from here)
from nas.space import ArchConfig, SearchSpace
from nas.search.study import check_compatible, find_study, open_storage


@dataclass
class Prepared:
    """Everything ``run_search`` needs, checked."""

    search: SearchConfig
    sampler: SamplerConfig
    hardware: HardwareConfig
    hardware_name: str
    space: SearchSpace
    table: Any                                  # nas.latency.LatencyTable
    scorer: Callable[[ArchConfig], float]       # nas.supernet.score.AccuracyScorer
    storage: BaseStorage
    study_attrs: Mapping[str, Any]
    trial_attrs: Mapping[str, Any]


def fastest_arch(space: SearchSpace, latency: Any, device: str) -> tuple[ArchConfig, float]:
    """The fastest architecture of ``space`` under the latency table.

    With an additive per-block table the fastest network has the fewest layers, all
    alike; every (width, heads, FFN, precision) of that depth is tried, which also
    checks that the table answers for every block the search can propose. (The
    smallest architecture is not always the fastest: measured blocks are not monotone.)
    """
    best: tuple[ArchConfig, float] | None = None
    L = space.n_layer_min
    for p in space.precisions(device):
        for d in space.d_model:
            for h in space.n_head:
                if h * space.head_dim > d:
                    continue
                for f in space.d_ff:
                    arch = space.make(L, d, [h] * L, [f] * L, p)
                    ms = float(latency.predict_ms(arch))
                    if best is None or ms < best[1]:
                        best = (arch, ms)
    assert best is not None  # SearchSpace guarantees a head choice fits the narrowest width
    return best


def check_budget(budget_ms: float | None, fastest: tuple[ArchConfig, float], where: str) -> None:
    """A budget below the fastest architecture leaves nothing to search."""
    arch, ms = fastest
    if budget_ms is not None and budget_ms < ms:
        raise ConfigError(
            f"search.latency_budget_ms: {budget_ms:g} ms is below the fastest architecture of "
            f"{where}: {arch.describe()} at {ms:.4g} ms; give at least {ms:.4g}")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tables_sha256(csv: Path) -> str:
    """One digest of a latency table's CSV and its JSON next to it (the calibration)."""
    parts = [file_sha256(p) for p in (csv, csv.with_suffix(".json")) if p.is_file()]
    return hashlib.sha256("".join(parts).encode()).hexdigest()


def cached_supernet(space: SearchSpace, train_cfg: Any, cache_dir: Path,
                    progress: bool = True) -> Path:
    """A supernet trained with ``train_cfg``: trained once, then reused.

    The cache folder is keyed by the space and every training setting that changes the
    weights, so a re-run reuses it and an interrupted training continues from its last
    checkpoint (``nas.train.train_supernet`` resumes into the same folder).
    """
    from nas.supernet.data import load_corpus
    from nas.train import train_supernet

    settings = {k: v for k, v in train_cfg.to_dict().items()
                if k not in ("device", "log_every", "eval_every")}
    corpus = load_corpus(train_cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    blob = json.dumps({"space": space.to_dict(), "train": settings, "split": list(corpus.split)},
                      sort_keys=True)
    key = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return train_supernet(space, corpus, train_cfg, cache_dir / f"{space.name}-{key}",
                          progress=progress)


def prepare(cfg: Any, hardware_name: str) -> Prepared:
    """Check the composed config of ``python -m nas.search`` and build what it needs.

    Args:
        cfg: the composed config (``conf/config.yaml`` with its groups and overrides).
        hardware_name: the ``hardware`` group's choice, recorded with the study.

    Raises:
        ConfigError: anything a user can fix, as one line, before training or writing.
    """
    from omegaconf import OmegaConf

    from nas.supernet.data import load_corpus
    from nas.latency import LatencyTable
    from nas.supernet.score import AccuracyScorer
    from nas.train import TrainConfig, load_supernet, resolve_device

    search = typed(SearchConfig, cfg.search, "search")
    if search.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("search.device: 'cuda' was asked for but no CUDA GPU is visible; "
                              "allowed here: cpu, auto")
    sampler = typed(SamplerConfig, cfg.sampler, "sampler")
    hardware = typed(HardwareConfig, cfg.hardware, f"hardware ({hardware_name})")
    net = typed(SupernetConfig, cfg.supernet, "supernet")
    score = typed(ScoreConfig, cfg.score, "score")
    train_cfg = TrainConfig.from_dict(OmegaConf.to_container(cfg.train, resolve=True))
    space = SearchSpace.from_dict(OmegaConf.to_container(cfg.search_space, resolve=True))
    space.precisions(hardware.device)

    table = LatencyTable.load(hardware.table, space=space, device=hardware.device)
    fastest = fastest_arch(space, table, hardware.device)
    check_budget(search.latency_budget_ms, fastest,
                 f"space '{space.name}' on {hardware_name} ({hardware.table})")
    fingerprint = dict(table.fingerprint)
    attrs: dict[str, Any] = {
        "space": space.to_dict(),
        "device": hardware.device,
        "hardware": hardware_name,
        "table": hardware.table,
        "table_fingerprint": fingerprint,
        "table_sha256": tables_sha256(Path(table.path)),
        "latency_budget_ms": search.latency_budget_ms,
        "score": dataclasses.asdict(score),
        "fastest": {"arch": fastest[0].to_dict(), "latency_ms": fastest[1]},
        "baseline": space.baseline,
    }
    if net.checkpoint is not None and not Path(net.checkpoint).is_file():
        raise ConfigError(f"supernet.checkpoint: {net.checkpoint} not found (null trains one)")
    if net.checkpoint is None:
        resolve_device(train_cfg.device)  # refused now rather than after opening the storage
    storage = open_storage(search.storage)
    existing = find_study(storage, search.study_name)
    if existing is not None:  # refuse a mismatch now, before training a supernet
        check_compatible(existing, attrs, search.storage)

    if net.checkpoint is None:
        ckpt = cached_supernet(space, train_cfg, Path(net.cache_dir), progress=search.progress)
    else:
        ckpt = Path(net.checkpoint)
    attrs["supernet"] = str(ckpt)
    attrs["supernet_sha256"] = file_sha256(ckpt)
    if existing is not None:
        check_compatible(existing, attrs, search.storage)

    if search.threads is not None:
        import torch
        torch.set_num_threads(search.threads)
    device = resolve_device(search.device)
    corpus = load_corpus(train_cfg.data, block_size=space.block_size, vocab_size=space.vocab_size)
    supernet = load_supernet(ckpt, space, device=device, corpus=corpus)
    scorer = AccuracyScorer(supernet, corpus, device=device, n_batches=score.n_batches,
                            batch_size=score.batch_size)
    return Prepared(search=search, sampler=sampler, hardware=hardware,
                    hardware_name=hardware_name, space=space, table=table, scorer=scorer,
                    storage=storage, study_attrs=attrs,
                    trial_attrs={"table_fingerprint": fingerprint})
