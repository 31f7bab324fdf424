"""Measure the peak memory of serving one request, and fit the memory model of a table.

What is measured, per architecture, at a workload (batch, prompt ``P``, context ``C``):
the model is built, a first request runs (so that whatever a process allocates once, such
as cuBLAS workspaces or CPU kernel caches, is in place), then a second request (a cache
of ``C`` positions, the prefill of ``P`` tokens, two generation steps) is watched. The
peak is the weights' bytes plus the most the request held above what was held before it.

- On a GPU: ``torch.cuda.memory_allocated`` / ``max_memory_allocated``, bytes held by
  tensors (the CUDA context, the allocator's cached free blocks and, in graph mode, the
  memory pools of captured graphs are not in it).
- On a CPU: glibc's count of bytes in use (``mallinfo2``: torch's CPU tensors, fbgemm's
  packed int8 weights and Python's larger objects), read after every operation of the
  request through a ``TorchDispatchMode``; a buffer allocated and freed inside one
  operation is missed. It covers the main thread's heap only, so it needs one intra-op
  thread, as CPU latency tables use. Python's ``tracemalloc`` would see none of torch's
  memory, and the process's resident size counts freed memory glibc keeps.
"""
from __future__ import annotations

import ctypes
import gc
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nas.errors import ConfigError
from nas.latency import memory
from nas.latency.prefill import module_of, standalone
from nas.latency.decode import step
from nas.latency.spec import BlockKey, Workload, arch_blocks, space_blocks
from nas.model import Embedding, Head, apply_precision

if TYPE_CHECKING:
    from nas.space import ArchConfig, SearchSpace


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks",
                                               "keepcost")]


_libc: Any = None


def heap_in_use() -> int:
    """Bytes glibc's malloc has handed out and not had back (main arena and mmapped)."""
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL("libc.so.6")
            lib.mallinfo2.restype = _MallInfo2
        except (OSError, AttributeError):
            raise ConfigError("peak memory on the CPU is read from glibc's mallinfo2 (Linux, "
                              "glibc >= 2.33), which this system lacks; measure it on a GPU "
                              "or on Linux") from None
        _libc = lib
    m = _libc.mallinfo2()
    return int(m.uordblks + m.hblkhd)


class _PeakHeap(TorchDispatchMode):
    """Reads :func:`heap_in_use` after every operation and keeps the largest value."""

    def __init__(self) -> None:
        super().__init__()
        self.peak = heap_in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use())
        return out


def _held(on: str) -> int:
    gc.collect(1)  # the young generations hold whatever a build left in cycles; a full pass is slow
    if on == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    return heap_in_use()


def block_weight_bytes(key: BlockKey, space: SearchSpace, device: str, repeats: int = 3) -> int:
    """Bytes the module of block ``key`` holds on ``device`` in its precision.

    The least of ``repeats`` builds: a first build of a shape can leave one-time
    allocations behind (kernel caches, free lists) that a model built later reuses.
    The head's output projection shares its weight with the token embedding, so the head
    is measured tied to one and counts only what it adds (in int8, a packed copy).
    """
    if repeats > 1:
        return min(block_weight_bytes(key, space, device, 1) for _ in range(repeats))
    on = "cpu" if key.precision == "int8" else device
    sizes = (space.vocab_size, space.block_size, space.head_dim)

    def placed(mod: torch.nn.Module) -> torch.nn.Module:
        return apply_precision(mod.to(on), key.precision)

    before = _held(on)
    if key.kind != "head":
        mod = placed(module_of(key, *sizes))
        n = _held(on) - before
        del mod
        return n
    mod = placed(Embedding(space.vocab_size, space.block_size, key.d_model))
    alone = _held(on) - before
    del mod
    before = _held(on)
    pair = torch.nn.ModuleDict({"embed": Embedding(space.vocab_size, space.block_size, key.d_model),
                                "head": Head(key.d_model, space.vocab_size)})
    pair["head"].lm_head.weight = pair["embed"].wte.weight
    pair = placed(pair)
    n = _held(on) - before - alone
    del pair
    return n


def _request(model: Any, batch_size: int, prompt_len: int, context: int, on: str) -> None:
    cache = model.make_cache(batch_size, context)
    prompt = torch.randint(0, model.arch.vocab_size, (batch_size, prompt_len), device=on)
    idx = model.prefill(prompt, cache)[:, -1].argmax(-1, keepdim=True)  # (B, 1)
    for _ in range(2):
        step(model, cache, idx)


_warm: set[tuple[str, str]] = set()


def measure_peak(arch: ArchConfig, *, batch_size: int, prompt_len: int, context: int, device: str,
                 seed: int = 0, repeats: int = 2, fused: bool = False) -> dict[str, int]:
    """Peak bytes of serving one request of ``arch`` (see the module's docstring).

    Args:
        arch: the architecture, in its precision.
        batch_size, prompt_len, context: the workload.
        device: ``"cpu"`` or ``"cuda"`` (int8 is measured on the CPU).
        seed: seeds the weights.
        fused: served by the fused runtime (``nas.fused``), as a table of that mode is.

    Returns:
        ``weights_bytes`` (held by the built model) and ``peak_bytes`` (weights plus
        the most the request held on top), of the build with the lowest peak among
        ``repeats`` (as with blocks, a first build can carry one-time allocations).
    """
    if repeats > 1:
        return min((measure_peak(arch, batch_size=batch_size, prompt_len=prompt_len,
                                 context=context, device=device, seed=seed, repeats=1,
                                 fused=fused)
                    for _ in range(repeats)), key=lambda r: r["peak_bytes"])
    on = "cpu" if arch.precision == "int8" else device
    if (on, arch.precision) not in _warm:  # what a process allocates once, kept out
        _warm.add((on, arch.precision))
        measure_peak(arch, batch_size=batch_size, prompt_len=prompt_len, context=context,
                     device=device, seed=seed, repeats=1, fused=fused)
    before = _held(on)
    model, _ = standalone(arch, device, seed, fused)
    weights = _held(on) - before
    with torch.inference_mode():
        if on == "cuda":
            _request(model, batch_size, prompt_len, context, on)  # first-use allocations
            idle = _held(on)
            torch.cuda.reset_peak_memory_stats()
            _request(model, batch_size, prompt_len, context, on)
            torch.cuda.synchronize()
            top = torch.cuda.max_memory_allocated()
        else:
            with _PeakHeap():  # the dispatch mode's own first-use allocations, too
                _request(model, batch_size, prompt_len, context, on)
            idle = _held(on)
            with _PeakHeap() as watch:
                _request(model, batch_size, prompt_len, context, on)
            top = watch.peak
    del model
    return {"weights_bytes": int(weights), "peak_bytes": int(weights + top - idle)}


WEIGHT_KINDS = ("embedding", "attention", "ffn", "head")  # what a model is made of
MEMORY_COLUMNS = ("arch_id", "arch", "precision", "n_layer", "weights_bytes",
                  "block_weights_bytes", "cache_bytes", "activation_bytes", "peak_bytes")


def calibrate_memory(space: SearchSpace, workload: Workload, archs: dict[str, list[Any]], seed: int,
                     progress: Callable[[str], None] = lambda s: None
                     ) -> tuple[memory.MemoryModel, list[dict[str, Any]]]:
    """Measure every block's weights and the peaks of ``archs``; fit each precision.

    Args:
        space: the search space.
        workload: a decode workload (batch, context and the request's ``prompt_len``).
        archs: calibration architectures per precision.
        seed: the seed that drew them (recorded).
        progress: called with a short label before each measurement.

    Returns:
        The fitted :class:`~nas.latency.memory.MemoryModel` and one row per model
        (:data:`MEMORY_COLUMNS`).
    """
    B, P, C = workload.batch_size, int(workload.prompt_len or 1), workload.seq_len
    blocks = {}
    for key in space_blocks(space, workload.precisions, WEIGHT_KINDS):
        progress(f"weights {key.describe()}")
        blocks[key] = block_weight_bytes(key, space, workload.device)
    model = memory.MemoryModel(blocks, {}, B, P, C)
    rows, fits = [], {}
    for p, group in archs.items():
        for a in group:
            progress(f"peak {a.describe()}")
            got = measure_peak(a, batch_size=B, prompt_len=P, context=C, device=workload.device,
                               fused=workload.mode == "fused")
            rows.append({"arch_id": a.arch_id, "arch": a.describe(), "precision": p,
                         "n_layer": a.n_layer, "weights_bytes": got["weights_bytes"],
                         "block_weights_bytes": sum(blocks[k] for k in arch_blocks(a)),
                         "cache_bytes": memory.cache_bytes(a, B, C),
                         "activation_bytes": memory.activation_bytes(a, B, P),
                         "peak_bytes": got["peak_bytes"]})
        mine = [r for r in rows if r["precision"] == p]
        fits[p] = memory.fit([r["block_weights_bytes"] + r["cache_bytes"] for r in mine],
                             [r["activation_bytes"] for r in mine], [r["n_layer"] for r in mine],
                             [r["peak_bytes"] for r in mine], seed)
    model.fits = fits
    return model, rows
