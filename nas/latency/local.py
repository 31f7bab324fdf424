"""The table of the machine at hand: a CPU target's table, measured on this CPU.

A table holds only on the hardware that measured it (its JSON fingerprint says which).
A target that asks for it (``hardware.local: true``, the ``cpu`` target) means *this*
CPU: when its committed table was measured on another one, the table of this machine
is used instead, cached under ``outputs/latency_tables/<machine key>/`` (like the
supernet cache) and built there on first use, with the committed table's workload and a
shorter measurement (:data:`LOCAL_TIMER`). A table named explicitly is used as it is; if
it was measured elsewhere, one line says so and names ``nas-latency check``.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from nas.latency import fingerprint
from nas.paths import resolve
from nas.latency.measure import TimerSettings
from nas.latency.spec import Workload
from nas.space import SearchSpace

CACHE_DIR = Path("outputs/latency_tables")
# A build on first use, shorter than a committed table's (15 repeats, 3 passes, 30
# calibration models per precision): 50 s for `tiny` on a loaded 2-core CPU, and
# `nas-latency check` still held against it (20 of 20 within +-10%). Two passes of 5 ms
# windows and 12 models (18 s) did not: 60% (README: The default target).
LOCAL_TIMER = TimerSettings(repeats=7, warmup=5, window_ms=10.0, cpu_clock="thread", passes=3)
LOCAL_CALIBRATION_N = 16


@dataclass(frozen=True)
class Resolved:
    """Which table a target uses here, and why.

    Attributes:
        path: the table's CSV.
        note: one line to show the user (None: nothing to say).
    """

    path: Path
    note: str | None = None


def machine_key(device: str = "cpu", threads: int = 1) -> str:
    """A short key of this machine's identity (the fingerprint fields that name hardware)."""
    here = fingerprint.collect(device, threads)
    ident = {k: here.get(k) for k in fingerprint.IDENTITY.get(device, ("device",))}
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:10]


def _recorded(csv: Path) -> dict:
    try:
        return dict(json.loads(csv.with_suffix(".json").read_text()))
    except (OSError, ValueError):
        return {}


def other_machine(csv: Path) -> list[str]:
    """How the machine that measured ``csv`` differs from this one (empty: the same)."""
    meta = _recorded(csv)
    fp = meta.get("fingerprint") or {}
    threads = int((meta.get("workload") or {}).get("threads", 1))
    return fingerprint.mismatches(fp, fingerprint.collect(fp.get("device", "cpu"), threads))


def local_table(table: str | Path, *, local: bool, default: str | Path | None,
                space: SearchSpace, cache_dir: Path = CACHE_DIR,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Resolved:
    """The table a search or ``nas-latency`` uses for ``table`` on this machine.

    Args:
        table: the table asked for (``hardware.table``).
        local: the target means this machine (``hardware.local``).
        default: the target's own table (its ``conf/hardware`` file); ``table`` differs
            from it when the user named one.
        space: the search space the table must cover (a build measures its blocks).
        cache_dir: where tables of this machine are cached.
        log: where a build says what it does.

    Returns:
        The table's path, with the line to show (a warning or the build's time).
    """
    csv = resolve(table)
    if not csv.is_file():
        return Resolved(Path(table))  # loading it says what is missing and how to build it
    differs = other_machine(csv)
    if not differs:
        return Resolved(Path(table))
    named = default is None or resolve(default) != csv
    if named or not local:
        return Resolved(Path(table), f"warning: {table} was measured on other hardware "
                        f"({differs[0]}); `nas-latency check` measures whether it holds here")
    meta = _recorded(csv)
    threads = int(meta["workload"].get("threads", 1))
    here = cache_dir / machine_key(meta["fingerprint"].get("device", "cpu"), threads) / csv.name
    if here.is_file() and _recorded(here).get("complete"):
        return Resolved(here, f"latency table of this machine: {here}")
    return Resolved(here, _build(csv, here, space, log))


def _build(reference: Path, here: Path, space: SearchSpace, log: Callable[[str], None]) -> str:
    """Measure ``reference``'s workload here into ``here``; the line that says so."""
    from nas.latency.build import build_table

    w = _recorded(reference)["workload"]
    workload = Workload(w["device"], int(w["batch_size"]), int(w["seq_len"]), tuple(w["precisions"]),
                        w.get("mode", "eager"), int(w.get("threads", 1)), w.get("phase", "prefill"),
                        w.get("prompt_len"))
    log(f"latency table: {reference} was measured on another CPU; measuring this one's "
        f"into {here} (once; about a minute)")
    t0 = time.perf_counter()
    here.parent.mkdir(parents=True, exist_ok=True)
    build_table(here, space, workload, LOCAL_TIMER, calibration_n=LOCAL_CALIBRATION_N,
                command=f"nas.latency.local: {reference} measured here", progress=sys.stderr.isatty(),
                log=log)
    return f"latency table of this machine: {here} (built in {time.perf_counter() - t0:.0f} s)"
