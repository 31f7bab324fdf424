"""Where the table of a workload lives, and the command that builds it. Pure Python.

A hardware target's ``table`` (``conf/hardware/*.yaml``) is its prefill table at batch 1
over the whole context, the one the search has used from the start. Tables of other
workloads sit beside it, named by their workload: ``<stem>-b<B>-t<T>.csv`` (prefill of
``T`` tokens) and ``<stem>-decode-b<B>-c<C>.csv`` (decode at context ``C``).
"""
from __future__ import annotations

import re
from pathlib import Path

_SUFFIX = re.compile(r"-(decode-)?b\d+-[tc]\d+$")


def table_path(base: str | Path, phase: str, batch_size: int, seq_len: int,
               context: int) -> Path:
    """The table of a workload, beside the target's base table ``base``.

    Args:
        base: the target's prefill table (batch 1, ``context`` tokens).
        phase: ``"prefill"`` or ``"decode"``.
        batch_size: sequences per call.
        seq_len: prefill: tokens; decode: the KV cache's context.
        context: the search space's context (the base table's sequence length).
    """
    p = Path(base)
    stem = _SUFFIX.sub("", p.stem)
    if phase == "prefill":
        if batch_size == 1 and seq_len == context and stem == p.stem:
            return p
        return p.with_name(f"{stem}-b{batch_size}-t{seq_len}{p.suffix}")
    return p.with_name(f"{stem}-decode-b{batch_size}-c{seq_len}{p.suffix}")


def build_command(path: str | Path, device: str | None = None, batch_size: int | None = None,
                  seq_len: int | None = None, space: str | None = None,
                  mode: str | None = None, phase: str | None = None,
                  prompt_len: int | None = None) -> str:
    """The command that builds a table for this workload (for error messages)."""
    parts = ["python -m nas.latency build"]
    if space:
        parts.append(f"search_space={space}")
    if device:
        parts.append(f"hardware.device={device}")
    parts.append(f"latency.table={path}")
    if phase and phase != "prefill":
        parts.append(f"latency.phase={phase}")
    if batch_size:
        parts.append(f"latency.batch_size={batch_size}")
    if seq_len:
        parts.append(f"latency.seq_len={seq_len}")
    if prompt_len and phase == "decode":
        parts.append(f"latency.prompt_len={prompt_len}")
    if mode:
        parts.append(f"latency.mode={mode}")
    return " ".join(parts)
