"""Sizes this tool will build: an architecture or a space past them is refused by its cost.

A hand-edited space or architecture file, a stored study or checkpoint can name any
width; ``d_model: 1000000`` would go straight to allocating terabytes (or to an
out-of-memory kill after minutes). The bounds are far above any model this tool
searches on one host, and are checked where an :class:`~nas.space.ArchConfig` or a
:class:`~nas.space.SearchSpace` is made, before anything is allocated.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from nas.errors import ConfigError, shown

if TYPE_CHECKING:
    from nas.space import ArchConfig, SearchSpace

# Per dimension, then in total. 1e10 parameters are 37 GiB of fp32 weights, and four
# times that with AdamW's state: more than one H200 holds while training.
DIM_MAX = {"n_layer": 1024, "d_model": 1 << 17, "d_ff": 1 << 20, "n_head": 1024,
           "head_dim": 4096, "vocab_size": 1 << 21, "block_size": 1 << 20}
PARAMS_MAX = 10 ** 10
NAME_CHARS_MAX = 100


def _gib(params: int) -> str:
    return f"{params * 4 / 2 ** 30:,.0f} GiB of fp32 weights"


def _check_dim(key: str, value: Any, where: str) -> None:
    if isinstance(value, int) and value > DIM_MAX[key]:
        raise ConfigError(f"{where}{key}: {shown(value, 40)} is beyond what this tool builds (at most "
                          f"{DIM_MAX[key]:,}); give a smaller {key}")


def check_arch(arch: ArchConfig) -> None:
    """Refuse an ``ArchConfig`` of a dimension or parameter count past the bounds.

    Raises:
        ConfigError: naming the key and its value, or the parameter count and its memory.
    """
    for key in ("n_layer", "d_model", "head_dim", "vocab_size", "block_size"):
        _check_dim(key, getattr(arch, key), "architecture: ")
    for key in ("n_head", "d_ff"):
        _check_dim(key, max(getattr(arch, key), default=0), "architecture: ")
    n = arch.n_params
    if n > PARAMS_MAX:
        raise ConfigError(f"architecture: L{arch.n_layer} d{arch.d_model} has {n:.3g} parameters "
                          f"({_gib(n)}), beyond the {PARAMS_MAX:.0e} this tool builds; choose "
                          "a smaller d_model, d_ff or n_layer")


def check_space(space: SearchSpace) -> None:
    """Refuse a ``SearchSpace`` whose name cannot be a folder name, or whose largest
    architecture (the supernet) is past the bounds.

    Raises:
        ConfigError: naming the space, the key and its value, or the parameter count.
    """
    name = str(space.name)
    if (not name or len(name) > NAME_CHARS_MAX or name.startswith(".")
            or any(c in name for c in "/\\\0") or not name.isprintable()):
        raise ConfigError(f"search space name: {shown(name, 80)} is not allowed; it names "
                          f"folders: at most {NAME_CHARS_MAX} characters, no '/', '\\' or "
                          "leading '.'")
    where = f"{name}: "
    for key in ("head_dim", "vocab_size", "block_size"):
        _check_dim(key, getattr(space, key), where)
    _check_dim("n_layer", space.n_layer_max, where)
    for key in ("d_model", "n_head", "d_ff"):
        _check_dim(key, max(getattr(space, key)), where)
    try:
        n = space.largest().n_params  # made once the dimensions passed: cheap, no tensor
    except ConfigError as e:
        raise ConfigError(f"{where}its supernet: {e}") from None
    if n > PARAMS_MAX:
        raise ConfigError(f"{where}its supernet (largest architecture) has {n:.3g} parameters "
                          f"({_gib(n)}), beyond the {PARAMS_MAX:.0e} this tool builds; choose "
                          "smaller d_model, d_ff or n_layer choices")


# Training holds fp32 weights, their gradients and AdamW's two moments: 16 bytes a parameter.
TRAIN_BYTES_PER_PARAM = 16


def device_memory(device: str) -> int | None:
    """Bytes of memory of ``device`` ('cpu', 'cuda', 'cuda:1'), None when unknown."""
    try:
        if str(device).startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                return None
            index = int(str(device).partition(":")[2] or torch.cuda.current_device())
            return int(torch.cuda.get_device_properties(index).total_memory)
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, RuntimeError, AssertionError):
        return None


def check_trainable(params: int, device: str, what: str) -> None:
    """Refuse to train ``params`` parameters on ``device`` when their weights, gradients
    and optimizer state alone exceed its memory (before anything is allocated).

    Raises:
        ConfigError: naming ``what``, the parameters, the memory needed and the device's.
    """
    have = device_memory(device)
    need = params * TRAIN_BYTES_PER_PARAM
    if have is not None and need > have:
        raise ConfigError(f"{what}: training its {params:.3g} parameters needs at least "
                          f"{need / 2 ** 30:,.1f} GiB (fp32 weights, gradients and AdamW state), "
                          f"more than the {have / 2 ** 30:,.1f} GiB of {device}; choose a smaller "
                          "space or architecture")
