"""The latency predictor: a table loaded, checked against what is asked, and summed.

:class:`LatencyTable` loads a table's CSV and JSON (``files.py``) and refuses, with a
one-line :class:`ConfigError` naming the file, anything it cannot vouch for: another
device or workload, a space it does not cover, an architecture outside it. A predictor
never returns a guessed number.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from nas.errors import ConfigError, clip
from nas.latency.calibrate import Calibration
from nas.latency.files import json_path, read_meta, read_rows, row_key
from nas.latency.memory import MemoryModel
from nas.latency.naming import build_command, table_path
from nas.latency.spec import PHASES, BlockKey, arch_blocks, space_blocks
from nas.paths import resolve
from nas.space import ArchConfig, SearchSpace

PREDICTED_KINDS = ("embedding", "attention", "ffn", "head")


def _own_space(d: dict[str, Any], where: Path) -> SearchSpace | None:
    """The search space a table's JSON records, or None when it records only part of it."""
    if not all(k in d for k in ("n_layer", "d_model", "n_head", "d_ff", "precision")):
        return None
    try:
        return SearchSpace.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{where}: its search space is damaged ({e}); rebuild the table") from None


class LatencyTable:
    """Measured block latencies of one device and workload, and the predictor.

    Attributes:
        path: the CSV file.
        device: ``"cpu"`` or ``"cuda"``.
        phase: ``"prefill"`` (a forward over ``seq_len`` tokens) or ``"decode"`` (one
            generation step against a KV cache of ``seq_len`` positions).
        batch_size, seq_len: the workload the blocks were measured on.
        prompt_len: decode: the request prompt its memory model is for (else None).
        memory: decode: the peak-memory predictor (None when the table has none).
        mode: ``"eager"`` or ``"graph"``.
        precisions: the precisions the table was built for and has rows for.
        space: the search space it was built for (None when its JSON predates recording
            the whole space); it predicts architectures of that space only.
        meta: the JSON fingerprint, as read.
        rows: the validated CSV, as a DataFrame.
    """

    def __init__(self, path: Path, rows: pd.DataFrame, meta: dict[str, Any]):
        self.path, self.rows, self.meta = path, rows, meta
        w = meta["workload"]
        self.device: str = w["device"]
        self.batch_size: int = int(w["batch_size"])
        self.seq_len: int = int(w["seq_len"])
        self.mode: str = w["mode"]
        self.phase: str = str(w.get("phase", "prefill"))  # tables from before decode: prefill
        if self.phase not in PHASES:
            raise ConfigError(f"{json_path(path)}: workload phase {self.phase!r} is unknown; "
                              f"allowed: {list(PHASES)}; rebuild the table")
        self.prompt_len: int | None = (int(w["prompt_len"]) if w.get("prompt_len") is not None
                                       else None)
        self.threads: int = int(w["threads"])
        self.head_dim: int = int(meta["space"]["head_dim"])
        self.vocab_size: int = int(meta["space"]["vocab_size"])
        self.fingerprint: dict[str, Any] = meta["fingerprint"]
        # Which CPU clock timed it; validation must time models with the same one.
        self.cpu_clock: str = str((meta.get("timer") or {}).get("cpu_clock", "wall"))
        self.passes: int = int((meta.get("timer") or {}).get("passes", 1))
        self._ms: dict[BlockKey, float] = {
            row_key(r): float(r["median_ms"]) for r in rows.to_dict("records")}
        # Rows of a precision the JSON does not list have no say: no correction was fitted
        # with them in mind.
        self.precisions: tuple[str, ...] = tuple(sorted(set(rows["precision"])
                                                        & set(w["precisions"])))
        self.space: SearchSpace | None = _own_space(meta["space"], json_path(path))
        cal = meta.get("calibration") or {}
        if not isinstance(cal, dict):
            raise ConfigError(f"{json_path(path)}: 'calibration' must be an object; rebuild the table")
        self.calibration: dict[str, Calibration] = {
            p: Calibration.from_dict(c, str(json_path(path))) for p, c in cal.items()}
        self.memory: MemoryModel | None = (
            MemoryModel.from_meta(meta["memory"], str(json_path(path)))
            if meta.get("memory") else None)

    # --- loading -----------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, space: SearchSpace | None = None,
             device: str | None = None, batch_size: int | None = None,
             seq_len: int | None = None, mode: str | None = None,
             precisions: Iterable[str] | None = None, gpu_name: str | None = None,
             require_calibration: bool = True, phase: str | None = None) -> "LatencyTable":
        """Load a table and check it is the one asked for.

        Args:
            path: the CSV (its JSON sits next to it). A relative path that does not exist
                from the working directory is looked up under the repository root.
            space: when given, the table must cover every block of this space in
                ``precisions`` (default: all the space allows on the table's device).
            device, batch_size, seq_len, mode, phase: when given, must match the workload
                the table was measured for.
            precisions: the precisions that must be covered.
            gpu_name: when given, must occur in the GPU name of the fingerprint
                (e.g. ``"H100"``).
            require_calibration: every covered precision must have a fitted correction.

        Returns:
            The table.

        Raises:
            ConfigError: a missing or damaged file, another device or workload, or a
                space the table does not cover; the message says how to rebuild it.
        """
        p = resolve(path)
        if not p.is_file():
            hint = build_command(path, device, batch_size, seq_len, space.name if space else None,
                                 mode, phase)
            raise ConfigError(f"{p}: latency table not found; build it with: {hint}")
        meta = read_meta(json_path(p))
        if not meta.get("complete", False):
            cmd = meta.get("command") or "python -m nas.latency build"
            raise ConfigError(f"{p}: the build that wrote this table did not finish; re-run its "
                              f"command to resume: {cmd}")
        rows = read_rows(p)
        if "n_rows" in meta and len(rows) != meta["n_rows"]:
            raise ConfigError(f"{p}: has {len(rows)} rows but its fingerprint says {meta['n_rows']} "
                              "(truncated or hand-edited?); rebuild the table")
        try:
            table = cls(p, rows, meta)
        except ConfigError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError) as e:  # a hand-edited JSON
            raise ConfigError(f"{json_path(p)}: a field has the wrong type or is missing "
                              f"({e.__class__.__name__}: {clip(str(e), 100)}); rebuild the table") from None
        table._check_workload(device, batch_size, seq_len, mode, gpu_name, space, phase)
        if space is not None:
            table.check_covers(space, precisions, require_calibration)
        elif precisions is not None:
            table._check_precisions(tuple(precisions), require_calibration)
        return table

    def _check_workload(self, device: str | None, batch_size: int | None, seq_len: int | None,
                        mode: str | None, gpu_name: str | None, space: SearchSpace | None,
                        phase: str | None = None) -> None:
        asked = {"phase": phase, "device": device, "batch_size": batch_size, "seq_len": seq_len,
                 "mode": mode}
        have = {"phase": self.phase, "device": self.device, "batch_size": self.batch_size,
                "seq_len": self.seq_len, "mode": self.mode}
        wrong = [f"{k} {have[k]} (asked {v})" for k, v in asked.items()
                 if v is not None and v != have[k]]
        if gpu_name is not None:
            name = str(self.fingerprint.get("gpu_name") or "")
            if gpu_name.lower() not in name.lower():
                wrong.append(f"GPU {name or 'none'!r} (asked {gpu_name!r})")
        bad_rows = self.rows[(self.rows["batch_size"] != self.batch_size)
                             | (self.rows["seq_len"] != self.seq_len)]
        if not bad_rows.empty:
            raise ConfigError(f"{self.path}: line {int(bad_rows.index[0]) + 2}: batch_size/seq_len "
                              f"differ from the fingerprint's {self.batch_size}/{self.seq_len} "
                              "(hand-edited?); rebuild the table")
        if wrong:
            dev, ph = device or self.device, phase or self.phase
            b, t = batch_size or self.batch_size, seq_len or self.seq_len
            base = self.path if dev == self.device else self.path.with_name(
                f"{self.path.stem}-{dev}{self.path.suffix}")
            new = table_path(base, ph, b, t, context=-1)
            cmd = build_command(new, dev, b, t, space.name if space else None, mode or self.mode,
                                ph)
            raise ConfigError(f"{self.path}: measured for {', '.join(wrong)}; build a table for "
                              f"this workload with: {cmd}")

    def _check_precisions(self, precisions: tuple[str, ...], require_calibration: bool) -> None:
        lacking = [p for p in precisions if p not in self.precisions]
        if lacking:
            raise ConfigError(f"{self.path}: no rows for precision(s) {lacking}; the table has "
                              f"{list(self.precisions)}; rebuild it with those precisions")
        if require_calibration:
            uncal = [p for p in precisions if p not in self.calibration]
            if uncal:
                raise ConfigError(f"{self.path}: no calibration for precision(s) {uncal} in "
                                  f"{json_path(self.path).name}; rebuild with calibration.n > 0")

    def missing(self, space: SearchSpace, precisions: Iterable[str] | None = None) -> list[BlockKey]:
        """Blocks of ``space`` (in ``precisions``) the table has no row for."""
        precs = tuple(precisions) if precisions is not None else space.precisions(self.device)
        return [k for k in space_blocks(space, precs, PREDICTED_KINDS) if k not in self._ms]

    def check_covers(self, space: SearchSpace, precisions: Iterable[str] | None = None,
                     require_calibration: bool = True) -> None:
        """Raise ConfigError unless every block of ``space`` has a row (and a calibration)."""
        precs = tuple(precisions) if precisions is not None else space.precisions(self.device)
        for key, have in (("head_dim", self.head_dim), ("vocab_size", self.vocab_size)):
            if getattr(space, key) != have:
                raise ConfigError(f"{self.path}: measured with {key} {have}; search space "
                                  f"'{space.name}' has {getattr(space, key)}; build a table for it")
        if self.seq_len > space.block_size:
            raise ConfigError(f"{self.path}: seq_len {self.seq_len} exceeds the context "
                              f"{space.block_size} of search space '{space.name}'")
        self._check_precisions(precs, require_calibration)
        gone = self.missing(space, precs)
        cmd = build_command(self.path, self.device, self.batch_size, self.seq_len, space.name,
                            self.mode, self.phase, self.prompt_len)
        if gone:
            more = f" and {len(gone) - 3} more" if len(gone) > 3 else ""
            raise ConfigError(
                f"{self.path}: does not cover search space '{space.name}': no row for "
                f"{', '.join(k.describe() for k in gone[:3])}{more}; build it with: {cmd}")
        beyond = self._beyond(space)
        if beyond:
            raise ConfigError(
                f"{self.path}: search space '{space.name}' reaches beyond the space the table "
                f"was built for: {'; '.join(beyond)}; build a table for it with: {cmd}")

    def _beyond(self, space: SearchSpace) -> list[str]:
        """What ``space`` allows that the table's own space does not."""
        own = self.space
        if own is None:
            return []
        out = []
        if space.n_layer_min < own.n_layer_min or space.n_layer_max > own.n_layer_max:
            out.append(f"n_layer {space.n_layer_min}..{space.n_layer_max} (table: "
                       f"{own.n_layer_min}..{own.n_layer_max})")
        for key in ("d_model", "n_head", "d_ff", "n_kv_head"):
            extra = sorted(set(getattr(space, key) or ()) - set(getattr(own, key) or ()))
            if extra:
                out.append(f"{key} {extra} (table: {list(getattr(own, key) or [])})")
        if space.drop_attention and not own.drop_attention:
            out.append("drop_attention (the table's space keeps attention in every layer)")
        return out

    # --- prediction --------------------------------------------------------------
    def block_ms(self, key: BlockKey) -> float:
        """The measured median of one block (ConfigError when the table has no row)."""
        try:
            return self._ms[key]
        except KeyError:
            raise ConfigError(f"{self.path}: no row for {key.describe()}; {self._coverage()}") from None

    def _coverage(self) -> str:
        return (f"the table covers d_model {self._values('d_model')}, n_head "
                f"{self._values('n_head')}, d_ff {self._values('d_ff')}, precisions "
                f"{list(self.precisions)}")

    def _values(self, col: str) -> list[int]:
        return sorted(v for v in set(self.rows[col]) if v > 0)

    def raw_sum_ms(self, arch: ArchConfig) -> float:
        """The plain sum of the block medians of ``arch`` (no correction)."""
        for key, have in (("head_dim", self.head_dim), ("vocab_size", self.vocab_size)):
            if getattr(arch, key) != have:
                raise ConfigError(f"{self.path}: measured with {key} {have}; architecture "
                                  f"{arch.describe()} has {getattr(arch, key)}")
        if arch.block_size < self.seq_len:
            raise ConfigError(f"{self.path}: measured at seq_len {self.seq_len}, beyond the context "
                              f"{arch.block_size} of {arch.describe()}")
        if arch.precision not in self.precisions:
            raise ConfigError(f"{self.path}: no rows for precision {arch.precision!r} "
                              f"({arch.describe()}); the table has {list(self.precisions)}")
        keys = arch_blocks(arch)
        gone = [k for k in dict.fromkeys(keys) if k not in self._ms]
        if gone:
            raise ConfigError(f"{self.path}: {arch.describe()} is outside the table's coverage: no "
                              f"row for {', '.join(k.describe() for k in gone[:3])}; "
                              f"{self._coverage()}")
        self._check_in_space(arch)
        return float(sum(self._ms[k] for k in keys))

    def _check_in_space(self, arch: ArchConfig) -> None:
        """Refuse an architecture outside the space the table was built for.

        Its blocks may all have rows (a deeper model repeats the same blocks), but the
        correction was fitted on that space's architectures only: beyond it a
        prediction would be an extrapolation, not a measurement.
        """
        own = self.space
        if own is None:
            return
        # The context only sizes the position table; what was timed is seq_len, checked
        # against the context above.
        if arch.block_size != own.block_size:
            arch = dataclasses.replace(arch, block_size=own.block_size)
        try:
            own.check(arch)
        except ConfigError as e:
            raise ConfigError(f"{self.path}: {arch.describe()}: {e}; the table was measured and "
                              "calibrated for that space only") from None

    def predict_ms(self, arch: ArchConfig) -> float:
        """Predicted latency of ``arch`` in milliseconds: of a forward pass over the prompt
        (prefill), or of one generation step, the time per output token (decode).

        The sum of its block medians, corrected by the precision's fitted
        :class:`~nas.latency.calibrate.Calibration` (the plain sum if the table was
        built without calibration).

        Raises:
            ConfigError: a block or precision of ``arch`` the table does not cover, or an
                architecture outside the search space the table was built for.
        """
        raw = self.raw_sum_ms(arch)
        cal = self.calibration.get(arch.precision)
        if cal is None:
            return raw
        ws = None
        if cal.uses_working_set:
            if self.memory is None:
                raise ConfigError(f"{json_path(self.path)}: the {arch.precision} calibration has "
                                  "a working-set term but the table has no memory model; "
                                  "rebuild the table")
            ws = self.memory.fixed_bytes(arch)
        ms = cal.apply(raw, arch.n_layer, ws)
        if not ms > 0:
            raise ConfigError(f"{json_path(self.path)}: calibration of {arch.precision} gives "
                              f"{ms:.4g} ms for {arch.describe()}; rebuild the table")
        return float(ms)

    def describe(self) -> str:
        """One line: file, device, workload, precisions, GPU or CPU."""
        hw = self.fingerprint.get("gpu_name") or self.fingerprint.get("cpu_model") or "?"
        what = (f"decode at context {self.seq_len}" if self.phase == "decode"
                else f"prefill of {self.seq_len} tokens")
        return (f"{self.path.name}: {self.device} ({hw}), {what}, batch {self.batch_size}, "
                f"{self.mode}, {', '.join(self.precisions)}, {len(self._ms)} rows")
