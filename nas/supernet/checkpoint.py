"""Supernet checkpoints: atomic writes and checked reads. Imports torch and nas.space only.

A checkpoint is one ``torch.save`` dict, self-describing so that a later reader needs
nothing else: the model and optimizer state, the step, every RNG state, the search
space (``SearchSpace.to_dict()``), the training config and the corpus (``Corpus.record``:
a text file's vocabulary, path and hash, or a prepared corpus's manifest hash). It is written to a temporary file in the same folder and renamed over the old
one, so an interrupted or failed save never damages an existing checkpoint.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, Mapping

import torch

from nas.errors import ConfigError, shown
from nas.outputs import write_atomic
from nas.space import SearchSpace

FORMAT = "nas-supernet/1"
REQUIRED = ("format", "model", "step", "space", "train", "corpus")


def save_atomic(obj: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path``, whole or not at all (:func:`nas.outputs.write_atomic`)."""
    return write_atomic(path, lambda f: torch.save(dict(obj), f))


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and sanity-check a checkpoint written by ``nas-train``.

    Raises:
        ConfigError: missing file, not a checkpoint, or a checkpoint of another format.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"checkpoint: {p} not found")
    try:
        # weights_only: a checkpoint holds only tensors and plain containers, so an
        # untrusted file cannot run code while loading.
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        raise ConfigError(f"checkpoint: {p} is not a supernet checkpoint "
                          f"({e.__class__.__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ConfigError(f"checkpoint: {p} is not a supernet checkpoint "
                          f"(expected format {FORMAT!r})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise ConfigError(f"checkpoint: {p} lacks {missing}; it was not written by nas-train")
    check_fields(ckpt, p)
    return ckpt


# The containers a checkpoint holds, by key (those present are checked).
FIELD_TYPES = {"model": dict, "optimizer": dict, "rng": dict, "space": dict, "train": dict,
               "corpus": dict, "history": list, "val": dict, "rank_rng": list}


def check_fields(ckpt: Mapping[str, Any], p: Path) -> None:
    """Refuse a checkpoint whose fields have another type or sign than ``nas-train``
    writes (a hand-edited or hostile file), in one line rather than a traceback on resume.
    """
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"checkpoint: {p}: '{key}' is {shown(ckpt.get(key), 60)}, {why} "
                           "(hand-edited?); it cannot be resumed or loaded")

    for key, tp in FIELD_TYPES.items():
        if key in ckpt and not isinstance(ckpt[key], tp):
            raise bad(key, f"not a {tp.__name__}")
    step = ckpt["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise bad("step", "not a count of steps (an integer >= 0)")
    tps = ckpt.get("tokens_per_s", 0.0)
    if not isinstance(tps, (int, float)) or isinstance(tps, bool) or not math.isfinite(tps) or tps < 0:
        raise bad("tokens_per_s", "not a throughput (a number >= 0)")
    if "world_size" in ckpt and not (isinstance(ckpt["world_size"], int) and ckpt["world_size"] >= 1):
        raise bad("world_size", "not a number of processes")
    rng = ckpt.get("rng")
    if rng is not None:
        arch = rng.get("arch")
        ok = (isinstance(arch, (list, tuple)) and len(arch) == 3
              and isinstance(arch[1], (list, tuple))
              and all(isinstance(rng.get(k), torch.Tensor) for k in ("data", "torch"))
              and isinstance(rng.get("cuda", []), (list, tuple)))
        if not ok:
            raise bad("rng", "not the random states a training saves")


def space_of(ckpt: Mapping[str, Any]) -> SearchSpace:
    """The search space a checkpoint was trained on."""
    return SearchSpace.from_dict(ckpt["space"])


def same_space(a: SearchSpace | Mapping[str, Any], b: SearchSpace | Mapping[str, Any]) -> bool:
    """Whether two spaces share weights. Precision lists are ignored: they do not
    change the supernet's shapes, only which sub-networks a search may pick."""
    da = a.to_dict() if isinstance(a, SearchSpace) else dict(a)
    db = b.to_dict() if isinstance(b, SearchSpace) else dict(b)
    da.pop("precision", None)
    db.pop("precision", None)
    return da == db


def check_space(ckpt: Mapping[str, Any], space: SearchSpace, path: str | Path) -> None:
    """Raise a ConfigError naming both spaces when ``ckpt`` was trained on another one."""
    if not same_space(ckpt["space"], space):
        theirs = ckpt["space"].get("name", "?")
        hint = "" if theirs != space.name else " (same name, different contents)"
        raise ConfigError(
            f"checkpoint: {path} was trained on search space '{theirs}' but search space "
            f"'{space.name}' was asked for{hint}; use a checkpoint of '{space.name}' or "
            f"search_space={theirs}")
