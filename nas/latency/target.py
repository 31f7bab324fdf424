"""A hardware target and the workload it serves. Pure Python (yaml).

A target is one node, ``conf/hardware/<name>.yaml``: the device, the prefill table a
search uses, a default latency budget and, nested, ``workload:``, how requests are served
there, which names its tables (``naming.py``)::

    workload:
      batch_size: 1      # sequences decoded together
      prompt_len: 128    # P, tokens of a prompt (the prefill table of the request)
      new_tokens: 128    # N, tokens a request generates
      context: 256       # the static KV cache's length; a decode step attends over all of it
      mode: graph        # eager | graph (CUDA graphs) | fused (nas/fused.py, CUDA graphs)

Hydra composes it with the rest of a command's config, so ``hardware.workload.batch_size=16``
overrides it like any other key. A target without ``workload:`` serves batch 1 in eager
mode, with the space's context and half of it as the prompt.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from nas.errors import ConfigError, shown
from nas.schema import from_mapping
from nas.yaml_limits import load_yaml
from nas.latency.naming import table_path
from nas.latency.spec import MODES
from nas.paths import CONF_DIR

KEY = "hardware.workload."  # how messages name a workload's keys


@dataclass(frozen=True)
class WorkloadConfig:
    """What a target serves (``hardware.workload``); None means the space's default.

    Attributes:
        batch_size: sequences decoded together.
        prompt_len: tokens of a prompt (None: half of the context).
        new_tokens: tokens a request generates (None: as many as the context holds).
        context: the static KV cache's length (None: the space's context).
        mode: eager | graph (CUDA graphs) | fused (``nas/fused.py`` as CUDA graphs).
    """

    batch_size: int = 1
    prompt_len: int | None = None
    new_tokens: int | None = None
    context: int | None = None
    mode: str = "eager"

    def __post_init__(self) -> None:
        for key in ("batch_size", "prompt_len", "new_tokens", "context"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{KEY}{key}: {shown(v)} must be a positive integer")
        if self.mode not in MODES:
            raise ConfigError(f"{KEY}mode: {shown(self.mode)} is unknown; allowed: {list(MODES)}")


WORKLOAD_KEYS = tuple(f.name for f in dataclasses.fields(WorkloadConfig))


@dataclass(frozen=True)
class Target:
    """A hardware target with its serving workload.

    Attributes:
        name: the target's name (``hardware=<name>``).
        device: ``"cpu"`` or ``"cuda"``.
        table: its prefill table at batch 1 over the whole context (the search's).
        batch_size, prompt_len, new_tokens, context, mode: the workload
            (:class:`WorkloadConfig`); None means the default for the space (:meth:`resolved`).
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
        _ = self.workload  # checks its values, naming hardware.workload.<key>

    @property
    def workload(self) -> WorkloadConfig:
        """The workload's fields as one :class:`WorkloadConfig`."""
        return WorkloadConfig(**{k: getattr(self, k) for k in WORKLOAD_KEYS})

    def resolved(self, block_size: int) -> "Target":
        """Every workload field filled in for a space of context ``block_size``.

        Raises:
            ConfigError: a context beyond the space's, or a request that does not fit it.
        """
        C = self.context or block_size
        if C > block_size:
            raise ConfigError(f"{KEY}context: {C} (target {self.name!r}) exceeds the search "
                              f"space's context {block_size}")
        P = self.prompt_len or max(1, C // 2)
        N = self.new_tokens or C - P + 1
        if P + N - 1 > C:
            raise ConfigError(f"{KEY}prompt_len {P} + new_tokens {N} - 1 (target {self.name!r}) "
                              f"exceeds the context {C}; a request's tokens must fit the KV cache")
        return replace(self, prompt_len=P, new_tokens=N, context=C)

    def table_of(self, phase: str, block_size: int, batch_size: int | None = None) -> Path:
        """Where this target's table of ``phase`` is (prefill: at the prompt length)."""
        t = self.resolved(block_size)
        B = batch_size or t.batch_size
        seq = t.prompt_len if phase == "prefill" else t.context
        return table_path(self.table, phase, B, int(seq), block_size)

    @classmethod
    def load(cls, name: str, conf_dir: Path = CONF_DIR) -> "Target":
        """Read ``conf/hardware/<name>.yaml`` with its ``workload:``, without Hydra (for
        scripts and notebooks; the commands take the node Hydra composed: :meth:`from_dict`)."""
        hw = _read(conf_dir / "hardware" / f"{name}.yaml", name)
        if hw is None:
            known = sorted(p.stem for p in (conf_dir / "hardware").glob("*.yaml"))
            raise ConfigError(f"hardware: {name!r} has no conf/hardware/{name}.yaml; known: {known}")
        return cls.from_dict(name, hw, where=f"conf/hardware/{name}.yaml: ")

    @classmethod
    def from_dict(cls, name: str, hardware: Mapping[str, Any], where: str = "hardware.") -> "Target":
        """A target from its hardware mapping (a composed ``hardware`` node, a YAML file's),
        its workload under ``hardware["workload"]`` (absent: the defaults).

        Args:
            name: the target's name.
            hardware: ``device``, ``table`` and optionally ``workload``; other keys are ignored.
            where: how messages name its keys (``"hardware."``, or the file's path).
        """
        for key in ("device", "table"):
            if not hardware.get(key):
                raise ConfigError(f"{where}{key}: missing (target {name!r})")
        wl = hardware.get("workload")
        if wl is None:
            wl = {}
        if not isinstance(wl, Mapping):
            raise ConfigError(f"{where}workload: {shown(wl)} must be a mapping of "
                              f"{', '.join(WORKLOAD_KEYS)}")
        try:
            workload = from_mapping(WorkloadConfig, wl, f"{where}workload.")
        except ConfigError as e:  # its own checks name hardware.workload.<key>
            raise ConfigError(str(e).replace(KEY, f"{where}workload.", 1)) from None
        return cls(name=name, device=str(hardware["device"]), table=str(hardware["table"]),
                   **dataclasses.asdict(workload))


def own_table(name: str, conf_dir: Path = CONF_DIR) -> str | None:
    """The table ``conf/hardware/<name>.yaml`` names (None: no such file, or none named):
    what tells a table the user named (``hardware.table=...``) from the target's own."""
    try:
        hw = _read(conf_dir / "hardware" / f"{name}.yaml", name)
    except ConfigError:
        return None
    table = (hw or {}).get("table")
    return str(table) if table else None


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
