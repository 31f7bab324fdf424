"""A hardware target and the workload it serves. Pure Python (yaml).

A target is ``conf/hardware/<name>.yaml`` (the device, the prefill table a search uses,
a default latency budget) together with ``conf/workload/<name>.yaml`` when it has one:
how requests are served there, which names its tables (``naming.py``)::

    batch_size: 1      # sequences decoded together
    prompt_len: 128    # P, tokens of a prompt (the prefill table of the request)
    new_tokens: 128    # N, tokens a request generates
    context: 256       # the static KV cache's length; a decode step attends over all of it
    mode: graph        # eager | graph (CUDA graphs) | fused (nas/fused.py, CUDA graphs)

The workload sits in a file of its own because the search reads the hardware file with
a fixed schema; a target without a workload file serves batch 1 in eager mode, with
the space's context and half of it as the prompt.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas.errors import ConfigError
from nas.yaml_limits import load_yaml
from nas.latency.naming import table_path
from nas.latency.spec import MODES
from nas.paths import CONF_DIR

WORKLOAD_KEYS = ("batch_size", "prompt_len", "new_tokens", "context", "mode")


@dataclass(frozen=True)
class Target:
    """A hardware target with its serving workload.

    Attributes:
        name: the target's name (``hardware=<name>``).
        device: ``"cpu"`` or ``"cuda"``.
        table: its prefill table at batch 1 over the whole context (the search's).
        batch_size, prompt_len, new_tokens, context, mode: the workload; None means
            the default for the space (:meth:`resolved`).
    """

    name: str
    device: str
    table: str
    batch_size: int = 1
    prompt_len: int | None = None
    new_tokens: int | None = None
    context: int | None = None
    mode: str = "eager"

    def __post_init__(self) -> None:
        where = f"conf/workload/{self.name}.yaml"
        for key in ("batch_size", "prompt_len", "new_tokens", "context"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{where}: {key}: {v!r} must be a positive integer")
        if self.mode not in MODES:
            raise ConfigError(f"{where}: mode: {self.mode!r} is unknown; allowed: {list(MODES)}")

    def resolved(self, block_size: int) -> "Target":
        """Every workload field filled in for a space of context ``block_size``.

        Raises:
            ConfigError: a context beyond the space's, or a request that does not fit it.
        """
        where = f"conf/workload/{self.name}.yaml"
        C = self.context or block_size
        if C > block_size:
            raise ConfigError(f"{where}: context: {C} exceeds the search space's context "
                              f"{block_size}")
        P = self.prompt_len or max(1, C // 2)
        N = self.new_tokens or C - P + 1
        if P + N - 1 > C:
            raise ConfigError(f"{where}: prompt_len {P} + new_tokens {N} - 1 exceeds the context "
                              f"{C}; a request's tokens must fit the KV cache")
        return replace(self, prompt_len=P, new_tokens=N, context=C)

    def table_of(self, phase: str, block_size: int, batch_size: int | None = None) -> Path:
        """Where this target's table of ``phase`` is (prefill: at the prompt length)."""
        t = self.resolved(block_size)
        B = batch_size or t.batch_size
        seq = t.prompt_len if phase == "prefill" else t.context
        return table_path(self.table, phase, B, int(seq), block_size)

    @classmethod
    def load(cls, name: str, conf_dir: Path = CONF_DIR) -> "Target":
        """Read ``conf/hardware/<name>.yaml`` and, if there is one, its workload file."""
        hw = _read(conf_dir / "hardware" / f"{name}.yaml", name)
        if hw is None:
            known = sorted(p.stem for p in (conf_dir / "hardware").glob("*.yaml"))
            raise ConfigError(f"hardware: {name!r} has no conf/hardware/{name}.yaml; known: {known}")
        wl = _read(conf_dir / "workload" / f"{name}.yaml", name) or {}
        unknown = sorted(set(wl) - set(WORKLOAD_KEYS))
        if unknown:
            raise ConfigError(f"conf/workload/{name}.yaml: unknown key(s) {unknown}; allowed: "
                              f"{list(WORKLOAD_KEYS)}")
        return cls.from_dict(name, hw, wl)

    @classmethod
    def from_dict(cls, name: str, hardware: Mapping[str, Any],
                  workload: Mapping[str, Any] | None = None) -> "Target":
        """A target from its hardware and workload mappings (e.g. a Hydra config's)."""
        for key in ("device", "table"):
            if not hardware.get(key):
                raise ConfigError(f"conf/hardware/{name}.yaml: {key} is missing")
        wl = {k: v for k, v in (workload or {}).items() if k in WORKLOAD_KEYS and v is not None}
        return cls(name=name, device=str(hardware["device"]), table=str(hardware["table"]), **wl)


def _read(path: Path, name: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        d = load_yaml(path.read_text(), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of keys for target {name!r}")
    return d
