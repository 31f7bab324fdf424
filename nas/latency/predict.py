"""The costs of an architecture as a server sees them, composed from a target's tables.

:class:`CostModel` holds a prefill table (a forward pass over the prompt) and a decode
table (one generation step against a static KV cache), both of one device, batch size
and mode, and predicts per architecture:

- ``prefill_ms``: the forward pass over the prefill table's tokens;
- ``ttft_ms``: time to first token, the prefill of the prompt (same thing, named for
  a request; the prefill table must be measured at that prompt length). A prefill
  table times a plain forward pass: a server's prefill also writes the KV cache and
  picks the first token, measured 11-15% more on the H100 at 128 tokens
  (``experiments/latency_h100_decode``), about 1% of a request of 128 new tokens;
- ``decode_ms``: time per output token (one generation step at the decode table's
  context);
- ``request_ms(P, N)``: a whole request, ``ttft_ms(P) + (N - 1) * decode_ms``: the
  prefill gives the first new token, each step one more;
- ``peak_memory_mb``: weights + KV cache + activations of one request (the decode
  table's memory model, at its batch size, prompt and context).

Every method refuses (``ConfigError``, one line with the command that builds what is
missing) rather than guess.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from nas.errors import ConfigError
from nas.latency.memory import MB
from nas.latency.naming import build_command, table_path
from nas.latency.table import LatencyTable
from nas.latency.target import Target
from nas.paths import resolve
from nas.space import SearchSpace

if TYPE_CHECKING:
    from nas.space import ArchConfig


@dataclass
class CostModel:
    """Per-architecture costs from a prefill and a decode table (either may be absent).

    Attributes:
        prefill: a prefill table, or None.
        decode: a decode table, or None.
        target: the target they were loaded for (:meth:`for_target`), or None.
    """

    prefill: LatencyTable | None = None
    decode: LatencyTable | None = None
    target: Target | None = None

    def __post_init__(self) -> None:
        if self.prefill is not None and self.prefill.phase != "prefill":
            raise ConfigError(f"{self.prefill.path}: a {self.prefill.phase} table given as the "
                              "prefill table")
        if self.decode is not None and self.decode.phase != "decode":
            raise ConfigError(f"{self.decode.path}: a {self.decode.phase} table given as the "
                              "decode table")
        if self.prefill is not None and self.decode is not None:
            p, d = self.prefill, self.decode
            for key in ("device", "batch_size", "mode"):
                if getattr(p, key) != getattr(d, key):
                    raise ConfigError(f"{p.path.name} and {d.path.name}: {key} "
                                      f"{getattr(p, key)} and {getattr(d, key)}; a request needs "
                                      "both tables of one workload")

    @classmethod
    def for_target(cls, target: str | Target, space: SearchSpace, *,
                   batch_size: int | None = None, phases: tuple[str, ...] = ("prefill", "decode")
                   ) -> "CostModel":
        """Load the tables of a hardware target's workload (``hardware.workload``).

        Args:
            target: a target name (``"h100-graph"``: ``conf/hardware/<name>.yaml`` read
                by :meth:`Target.load`), or a :class:`Target` (a command's, from the node
                Hydra composed: :meth:`Target.from_dict`).
            space: the search space; the tables must cover it.
            batch_size: another batch size than the workload's (its tables must exist).
            phases: which tables to load.

        Raises:
            ConfigError: a table missing or measured for another workload, with the
                command that builds the right one.
        """
        t = Target.load(target) if isinstance(target, str) else target
        B = batch_size or t.batch_size
        r = replace(t.resolved(space.block_size), batch_size=B)
        tables = {}
        for phase in phases:
            seq = r.prompt_len if phase == "prefill" else r.context
            path = t.table_of(phase, space.block_size, B)
            if not resolve(path).is_file():
                what = f" latency.seq_len={seq}" if phase == "prefill" else ""
                raise ConfigError(
                    f"{path}: no {phase} table for target {t.name!r} at batch {B}; build it on "
                    f"that hardware with: python -m nas.latency build hardware={t.name} "
                    f"search_space={space.name} latency.phase={phase} latency.batch_size={B}{what}")
            table = LatencyTable.load(path, device=t.device, batch_size=B, seq_len=seq,
                                      mode=t.mode, phase=phase)
            table.check_covers(space, table.precisions)  # other precisions: refused per arch
            tables[phase] = table
        return cls(prefill=tables.get("prefill"), decode=tables.get("decode"), target=r)

    def _need(self, phase: str) -> LatencyTable:
        table = self.prefill if phase == "prefill" else self.decode
        if table is None:
            raise ConfigError(f"no {phase} table loaded; give CostModel a {phase} table "
                              f"(build one with python -m nas.latency build latency.phase={phase})")
        return table

    def prefill_ms(self, arch: ArchConfig) -> float:
        """A forward pass over the prefill table's ``seq_len`` tokens, in milliseconds."""
        return self._need("prefill").predict_ms(arch)

    def ttft_ms(self, arch: ArchConfig, prompt_len: int | None = None) -> float:
        """Time to first token of a prompt of ``prompt_len`` tokens (default: the table's)."""
        table = self._need("prefill")
        if prompt_len is not None and prompt_len != table.seq_len:
            new = table_path(table.path, "prefill", table.batch_size, prompt_len, context=-1)
            cmd = build_command(new, table.device, table.batch_size, prompt_len, None, table.mode)
            raise ConfigError(f"{table.path}: measured for prompts of {table.seq_len} tokens, not "
                              f"{prompt_len}; build a prefill table for them with: {cmd}")
        return table.predict_ms(arch)

    def decode_ms(self, arch: ArchConfig) -> float:
        """Time per output token at the decode table's context, in milliseconds."""
        return self._need("decode").predict_ms(arch)

    def request_ms(self, arch: ArchConfig, prompt_len: int | None = None,
                   new_tokens: int | None = None) -> float:
        """A request of ``prompt_len`` tokens generating ``new_tokens``, in milliseconds.

        Defaults come from the target's workload. The KV cache holds the decode table's
        context, which must fit the request (``prompt_len + new_tokens - 1`` tokens).
        """
        dec = self._need("decode")
        P = prompt_len or (self.target.prompt_len if self.target else None)
        N = new_tokens or (self.target.new_tokens if self.target else None)
        if P is None or N is None:
            raise ConfigError("request_ms: give prompt_len and new_tokens (no target workload)")
        if P + N - 1 > dec.seq_len:
            raise ConfigError(f"{dec.path}: a request of {P} + {N} tokens needs a KV cache of "
                              f"{P + N - 1}; this decode table's context is {dec.seq_len}")
        return self.ttft_ms(arch, P) + (N - 1) * dec.predict_ms(arch)

    def peak_memory_mb(self, arch: ArchConfig) -> float:
        """Peak memory of one request at the decode table's workload, in MiB."""
        dec = self._need("decode")
        if dec.memory is None:
            raise ConfigError(f"{dec.path}: has no memory model; rebuild it with this version "
                              "of nas.latency build latency.phase=decode")
        return dec.memory.peak_bytes(arch) / MB

    def costs(self, arch: ArchConfig) -> dict[str, float]:
        """Every cost this model can predict for ``arch``, by name."""
        out: dict[str, float] = {}
        if self.prefill is not None:
            out["prefill_ms"] = self.prefill_ms(arch)
        if self.decode is not None:
            out["decode_ms"] = self.decode_ms(arch)
            if self.decode.memory is not None:
                out["peak_memory_mb"] = self.peak_memory_mb(arch)
            if self.prefill is not None and self.target is not None:
                out["request_ms"] = self.request_ms(arch)
        return out
