"""Search spaces and architectures: pure Python, no torch.

A search space (``search_spaces/<name>.yaml``) lists what may vary: the number of
layers, the model width, per layer the query heads, the key/value heads (grouped-query
attention; 1 is multi-query), whether the layer has attention at all (a layer of its FFN
alone, as Puzzle's no-op attention) and the FFN width, and the numeric precisions
allowed on each device. An :class:`ArchConfig` is one point of it.

``sample(space, rng)`` and ``suggest(trial, space)`` decode the same fixed-length
genome (a value for every possible layer, the unused ones ignored), so Optuna's
evolutionary samplers see every parameter in every trial.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import yaml

from nas.errors import ConfigError
from nas import limits
from nas.outputs import write_atomic
from nas.yaml_limits import load_yaml
from nas.paths import SPACES_DIR
from nas.schema import from_mapping


DEVICES = ("cpu", "cuda")
# int8 means dynamically quantised Linear layers, which PyTorch runs on the CPU only;
# fp16 matrix products on most CPUs fall back to slow reference kernels.
PRECISIONS = {"cpu": ("fp32", "bf16", "int8"), "cuda": ("fp32", "bf16", "fp16")}


@dataclass(frozen=True)
class ArchConfig:
    """One architecture: a GPT-style decoder.

    ``n_head``, ``n_kv_head`` and ``d_ff`` hold one entry per active layer. ``n_head[i]``
    0 means layer ``i`` has no attention (its FFN only). ``n_kv_head[i]`` key/value heads
    are shared by groups of ``n_head[i] // n_kv_head[i]`` query heads (grouped-query
    attention); left out (None) it equals ``n_head``: full multi-head attention.
    """

    n_layer: int
    d_model: int
    n_head: tuple[int, ...]
    d_ff: tuple[int, ...]
    precision: Literal["fp32", "bf16", "fp16", "int8"] = "fp32"
    head_dim: int = 64
    vocab_size: int = 65
    block_size: int = 256
    n_kv_head: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_head", tuple(int(h) for h in self.n_head))
        object.__setattr__(self, "d_ff", tuple(int(f) for f in self.d_ff))
        kv = self.n_head if self.n_kv_head is None else tuple(int(g) for g in self.n_kv_head)
        object.__setattr__(self, "n_kv_head", kv)
        for key in ("n_layer", "d_model", "head_dim", "vocab_size", "block_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: {getattr(self, key)!r} must be a positive integer")
        for i, f in enumerate(self.d_ff):
            if f < 1:
                raise ConfigError(f"d_ff[{i}]: {f!r} must be a positive integer")
        for key in ("n_head", "n_kv_head", "d_ff"):
            if len(getattr(self, key)) != self.n_layer:
                raise ConfigError(
                    f"{key}: {list(getattr(self, key))} has {len(getattr(self, key))} entries; "
                    f"n_layer={self.n_layer} needs one per layer"
                )
        for i, (h, g) in enumerate(zip(self.n_head, self.n_kv_head)):
            if h < 0 or h * self.head_dim > self.d_model:
                raise ConfigError(
                    f"n_head[{i}]: {h} heads x head_dim {self.head_dim} does not fit d_model "
                    f"{self.d_model}; allowed: 1..{self.d_model // self.head_dim}, or 0 for a "
                    "layer without attention"
                )
            if (h == 0 and g != 0) or (h > 0 and not (1 <= g <= h and h % g == 0)):
                allowed = [k for k in range(1, h + 1) if h % k == 0] if h else [0]
                raise ConfigError(f"n_kv_head[{i}]: {g} key/value heads for {h} query heads; "
                                  f"allowed: {allowed} (a divisor of n_head[{i}])")
        if self.precision not in PRECISIONS["cpu"] + PRECISIONS["cuda"]:
            raise ConfigError(
                f"precision: {self.precision!r} is unknown; allowed: fp32, bf16, fp16, int8"
            )
        limits.check_arch(self)  # before anything is allocated for it

    @property
    def arch_id(self) -> str:
        """Stable id: a hash of the sorted JSON of the whole (active) config."""
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def gqa(self) -> bool:
        """Whether some layer shares key/value heads (or has no attention)."""
        return self.n_kv_head != self.n_head

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain lists; ``n_kv_head`` only where it differs from ``n_head``,
        so an architecture of full multi-head attention keeps the id it always had."""
        d = dataclasses.asdict(self)
        d["n_head"], d["d_ff"] = list(self.n_head), list(self.d_ff)
        d["n_kv_head"] = list(self.n_kv_head)
        if not self.gqa:
            del d["n_kv_head"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArchConfig":
        return from_mapping(cls, d, "architecture: ")

    def to_yaml(self, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
        """Write the architecture; ``extra`` (predicted latency, loss...) goes under ``meta``."""
        doc: dict[str, Any] = {"arch": self.to_dict()}
        if extra:
            doc["meta"] = dict(extra)
        text = yaml.safe_dump(doc, sort_keys=False).encode()
        write_atomic(path, lambda f: f.write(text))  # replaces a link there, never follows it

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ArchConfig":
        """Read a file written by :meth:`to_yaml` (or a bare mapping of the fields)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: architecture file not found")
        try:
            doc = load_yaml(p.read_bytes().decode("utf-8"), str(p))
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a text file (not UTF-8); an architecture is a YAML "
                              "file written by nas.search or nas.search.export") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e.__class__.__name__})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{p}: expected a mapping with an 'arch' key")
        d = doc.get("arch", doc)
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: arch: {d!r} must be a mapping of the architecture's keys")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None

    @property
    def n_params(self) -> int:
        """Parameters of ``nas.model.build_model(self)``, counted without building it.

        Token and position embeddings; per layer, LayerNorm + q/k/v/proj for attention
        and LayerNorm + two Linear layers for the FFN; a final LayerNorm. The output
        projection is tied to the token embedding, so it adds nothing.
        """
        d = self.d_model
        return self.vocab_size * d + self.block_size * d + 2 * d + self.decoder_params

    @property
    def decoder_params(self) -> int:
        """Parameters of the layers alone, embeddings and final LayerNorm left out: the
        free accuracy proxy of LiteTransformerSearch (LTS)."""
        d, hd, total = self.d_model, self.head_dim, 0
        for h, g, f in zip(self.n_head, self.n_kv_head, self.d_ff):
            if h:  # LayerNorm, q, k and v (g heads each), proj
                total += 2 * d + (d * h * hd + h * hd) + 2 * (d * g * hd + g * hd) + h * hd * d + d
            total += 2 * d + d * f + f + f * d + d
        return total

    def kv_bytes_per_token(self, element_size: int) -> int:
        """Bytes of keys and values one token adds to the cache (all layers)."""
        return 2 * sum(self.n_kv_head) * self.head_dim * element_size

    def describe(self) -> str:
        """Short human-readable form, e.g. ``L4 d128 h[4,4,2,4] f[512,...] fp32``; with
        grouped-query attention the key/value heads follow each layer's query heads
        (``h[12/4,-,8/1]``: 12 heads sharing 4 key/value heads, no attention, ...)."""
        h = ",".join("-" if q == 0 else (str(q) if q == g else f"{q}/{g}")
                     for q, g in zip(self.n_head, self.n_kv_head))
        f = ",".join(map(str, self.d_ff))
        return f"L{self.n_layer} d{self.d_model} h[{h}] f[{f}] {self.precision}"


@dataclass(frozen=True)
class SearchSpace:
    """What may vary. Built from YAML by :func:`load_space`; validated on construction."""

    name: str
    n_layer_min: int
    n_layer_max: int
    d_model: tuple[int, ...]
    n_head: tuple[int, ...]
    d_ff: tuple[int, ...]
    precision: Mapping[str, tuple[str, ...]]
    head_dim: int = 64
    vocab_size: int = 65
    block_size: int = 256
    baseline: Mapping[str, Any] | None = None
    # Grouped-query attention: the key/value head choices of a layer (None: every layer
    # has as many as its query heads). A layer's choice is clamped to a divisor of its
    # query heads; a choice >= the query heads is full multi-head attention.
    n_kv_head: tuple[int, ...] | None = None
    # Whether a layer may have no attention at all (its FFN only).
    drop_attention: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], name: str | None = None) -> "SearchSpace":
        d = dict(d)
        where = name or d.get("name", "search space")
        nl = d.pop("n_layer", None)  # the file's {min, max}: two fields here
        if not isinstance(nl, Mapping) or set(nl) != {"min", "max"}:
            raise ConfigError(f"{where}: n_layer: {nl!r} must be a mapping {{min: int, max: int}}")
        d.update(name=str(d.get("name", name or "custom")), n_layer_min=nl["min"], n_layer_max=nl["max"])
        return from_mapping(cls, d, f"{where}: ")

    def __post_init__(self) -> None:
        w = self.name
        for key in ("d_model", "n_head", "d_ff", "n_kv_head"):  # sorted, each once, positive
            if getattr(self, key) is None:
                continue
            choices = tuple(sorted(set(getattr(self, key))))
            if not choices or choices[0] < 1:
                raise ConfigError(f"{w}: {key}: {list(getattr(self, key))} must be a non-empty list "
                                  "of positive integers")
            object.__setattr__(self, key, choices)
        if self.n_layer_min < 1:
            raise ConfigError(f"{w}: n_layer.min: {self.n_layer_min} is not allowed; it must be >= 1")
        if self.n_layer_min > self.n_layer_max:
            raise ConfigError(f"{w}: n_layer: min {self.n_layer_min} > max {self.n_layer_max}; "
                              "min must be <= max")
        for key in ("head_dim", "vocab_size", "block_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{w}: {key}: {getattr(self, key)} must be a positive integer")
        biggest = max(self.d_model) // self.head_dim
        for h in self.n_head:
            if h * self.head_dim > max(self.d_model):
                raise ConfigError(
                    f"{w}: n_head: {h} heads x head_dim {self.head_dim} = {h * self.head_dim} does not "
                    f"fit the largest d_model {max(self.d_model)}; allowed: 1..{biggest}")
        if min(self.n_head) * self.head_dim > min(self.d_model):
            raise ConfigError(
                f"{w}: d_model: {min(self.d_model)} fits no head choice {list(self.n_head)} "
                f"(head_dim {self.head_dim}); allowed widths: >= {min(self.n_head) * self.head_dim}")
        for dev, precs in self.precision.items():
            if dev not in DEVICES:
                raise ConfigError(f"{w}: precision: unknown device {dev!r}; allowed: {list(DEVICES)}")
            if not precs:
                raise ConfigError(f"{w}: precision.{dev}: empty list; allowed: {list(PRECISIONS[dev])}")
            for p in precs:
                if p not in PRECISIONS[dev]:
                    raise ConfigError(f"{w}: precision.{dev}: {p!r} is not supported on {dev}; "
                                      f"allowed: {list(PRECISIONS[dev])}")
        limits.check_space(self)
        if self.baseline is not None:
            self.baseline_arch()  # validates

    # --- views -----------------------------------------------------------------
    def precisions(self, device: str) -> tuple[str, ...]:
        """Precisions this space allows on ``device`` ('cpu' or 'cuda')."""
        if device not in self.precision:
            raise ConfigError(f"{self.name}: precision: no entry for device {device!r}; "
                              f"this space has {sorted(self.precision)}")
        return self.precision[device]

    def make(self, n_layer: int, d_model: int, n_head: Sequence[int], d_ff: Sequence[int],
             precision: str = "fp32", n_kv_head: Sequence[int] | None = None) -> ArchConfig:
        """An ArchConfig of this space (shared head_dim, vocab and context)."""
        return ArchConfig(n_layer=n_layer, d_model=d_model, n_head=tuple(n_head), d_ff=tuple(d_ff),
                          precision=precision, head_dim=self.head_dim,
                          vocab_size=self.vocab_size, block_size=self.block_size,
                          n_kv_head=None if n_kv_head is None else tuple(n_kv_head))

    def kv_choices(self, n_head: int) -> tuple[int, ...]:
        """The key/value heads a layer of ``n_head`` query heads may have, ascending."""
        if n_head == 0:
            return (0,)
        return tuple(sorted({n_head} | {g for g in self.n_kv_head or ()
                                        if g < n_head and n_head % g == 0}))

    def largest(self, precision: str = "fp32") -> ArchConfig:
        L, d = self.n_layer_max, max(self.d_model)
        return self.make(L, d, [max(self.n_head)] * L, [max(self.d_ff)] * L, precision)

    def smallest(self, precision: str = "fp32") -> ArchConfig:
        """The least of every dimension: fewest layers, narrowest, fewest query and
        key/value heads. Attention stays: a model with none is no smaller a Transformer
        but another kind of model, and the sandwich rule trains this one every step."""
        L, d, h = self.n_layer_min, min(self.d_model), min(self.n_head)
        kv = [min(self.kv_choices(h))] * L if self.n_kv_head else None
        return self.make(L, d, [h] * L, [min(self.d_ff)] * L, precision, kv)

    def baseline_arch(self, precision: str = "fp32") -> ArchConfig | None:
        """The reference architecture named in the YAML (nanoGPT's, for ``shakespeare``)."""
        if not self.baseline:
            return None
        b = self.baseline
        L = int(b["n_layer"])
        per_layer = {k: (b[k] if isinstance(b[k], Sequence) else [b[k]] * L)
                     for k in ("n_head", "d_ff", "n_kv_head") if b.get(k) is not None}
        arch = self.make(L, int(b["d_model"]), per_layer["n_head"], per_layer["d_ff"], precision,
                         per_layer.get("n_kv_head"))
        if not self.contains(arch):
            raise ConfigError(f"{self.name}: baseline: {arch.describe()} is outside the space")
        return arch

    def contains(self, arch: ArchConfig, device: str | None = None) -> bool:
        return not self.problems(arch, device)

    def check(self, arch: ArchConfig, device: str | None = None) -> None:
        """Raise a ConfigError naming what is outside the space."""
        problems = self.problems(arch, device)
        if problems:
            raise ConfigError(f"architecture outside search space '{self.name}': "
                              + "; ".join(problems))

    def problems(self, arch: ArchConfig, device: str | None = None) -> list[str]:
        """What of ``arch`` is outside the space (with ``device``: its precision too)."""
        problems = []
        if not self.n_layer_min <= arch.n_layer <= self.n_layer_max:
            problems.append(f"n_layer {arch.n_layer} (allowed {self.n_layer_min}..{self.n_layer_max})")
        if arch.d_model not in self.d_model:
            problems.append(f"d_model {arch.d_model} (allowed {list(self.d_model)})")
        bad_h = sorted({h for h in arch.n_head if h not in self.n_head
                        and not (h == 0 and self.drop_attention)})
        if bad_h:
            problems.append(f"n_head {bad_h} (allowed {list(self.n_head)}"
                            + (", or 0: no attention)" if self.drop_attention else ")"))
        bad_kv = sorted({f"{h}/{g}" for h, g in zip(arch.n_head, arch.n_kv_head)
                         if g not in self.kv_choices(h)})
        if bad_kv:
            problems.append(f"n_head/n_kv_head {bad_kv} (key/value heads allowed: "
                            f"{list(self.n_kv_head or [])} dividing the query heads, or as many)")
        bad_f = sorted({f for f in arch.d_ff if f not in self.d_ff})
        if bad_f:
            problems.append(f"d_ff {bad_f} (allowed {list(self.d_ff)})")
        for key in ("head_dim", "vocab_size", "block_size"):
            if getattr(arch, key) != getattr(self, key):
                problems.append(f"{key} {getattr(arch, key)} (space has {getattr(self, key)})")
        if device is not None and arch.precision not in self.precisions(device):
            problems.append(f"precision {arch.precision} (allowed on {device}: "
                            f"{list(self.precisions(device))})")
        return problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_layer": {"min": self.n_layer_min, "max": self.n_layer_max},
            "d_model": list(self.d_model), "n_head": list(self.n_head), "d_ff": list(self.d_ff),
            "precision": {k: list(v) for k, v in self.precision.items()},
            "head_dim": self.head_dim, "vocab_size": self.vocab_size,
            "block_size": self.block_size,
            "baseline": dict(self.baseline) if self.baseline else None,
            "n_kv_head": list(self.n_kv_head) if self.n_kv_head else None,
            "drop_attention": self.drop_attention,
        }

    def decode(self, genome: Mapping[str, Any]) -> ArchConfig:
        """Turn a fixed-length genome into an architecture.

        Heads that do not fit the chosen width are clamped to the widest choice that
        fits, and key/value heads to the largest choice that divides the layer's query
        heads (a choice >= the query heads: as many), so every genome decodes to a valid
        architecture. ``attention_i`` false removes layer ``i``'s attention.
        """
        L, d = int(genome["n_layer"]), int(genome["d_model"])
        fitting = [h for h in self.n_head if h * self.head_dim <= d]
        heads = [max(h for h in fitting if h <= max(genome[f"n_head_{i}"], min(fitting)))
                 for i in range(L)]
        if self.drop_attention:
            heads = [h if genome.get(f"attention_{i}", True) else 0 for i, h in enumerate(heads)]
        kv = list(heads)
        if self.n_kv_head:
            kv = [max(g for g in self.kv_choices(h) if g <= max(genome[f"n_kv_head_{i}"], 1))
                  if h else 0 for i, h in enumerate(heads)]
        ffs = [int(genome[f"d_ff_{i}"]) for i in range(L)]
        return self.make(L, d, heads, ffs, str(genome["precision"]),
                         kv if kv != heads else None)


def available_spaces() -> list[str]:
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path | Mapping[str, Any]) -> SearchSpace:
    """Load a space by name (``search_spaces/<name>.yaml``), by path, or from a mapping.

    Raises:
        ConfigError: unknown name (the message lists the known ones) or an invalid entry.
    """
    if isinstance(name_or_path, Mapping):
        return SearchSpace.from_dict(name_or_path)
    s = str(name_or_path)
    path = Path(s)
    if not (s.endswith((".yaml", ".yml")) or path.is_file()):
        path = SPACES_DIR / f"{s}.yaml"
        if not path.is_file():
            raise ConfigError(f"search_space: unknown space {s!r}; available: {available_spaces()} "
                              "(or a path to a .yaml file)")
    if not path.is_file():
        raise ConfigError(f"search_space: file {s} not found")
    try:
        doc = load_yaml(path.read_text(), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e.__class__.__name__})") from None
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: a search space must be a YAML mapping")
    return SearchSpace.from_dict(doc, name=doc.get("name", path.stem))


def _rng(rng: random.Random | int | None) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def sample_genome(space: SearchSpace, rng: random.Random | int | None,
                  device: str = "cpu") -> dict[str, Any]:
    """A uniformly random genome (a value for every possible layer)."""
    r = _rng(rng)
    g: dict[str, Any] = {"n_layer": r.randint(space.n_layer_min, space.n_layer_max),
                         "d_model": r.choice(space.d_model)}
    for i in range(space.n_layer_max):
        g[f"n_head_{i}"] = r.choice(space.n_head)
        g[f"d_ff_{i}"] = r.choice(space.d_ff)
        if space.n_kv_head:
            g[f"n_kv_head_{i}"] = r.choice(_kv_genes(space))
        if space.drop_attention:
            g[f"attention_{i}"] = r.choice((True, False))
    g["precision"] = r.choice(space.precisions(device))
    return g


def sample(space: SearchSpace, rng: random.Random | int | None = None,
           device: str = "cpu", precision: str | None = None) -> ArchConfig:
    """A random architecture, drawn with ``rng`` only (never the global RNG).

    Args:
        space: the search space.
        rng: a ``random.Random`` or an integer seed.
        device: which device's precision list to draw from.
        precision: fix the precision instead of drawing it.
    """
    g = sample_genome(space, rng, device)
    if precision is not None:
        g["precision"] = precision
    return space.decode(g)


def suggest(trial: Any, space: SearchSpace, device: str = "cpu",
            precisions: Sequence[str] | None = None) -> ArchConfig:
    """Ask an Optuna trial for an architecture (fixed-length genome).

    Args:
        trial: an ``optuna.Trial``.
        space: the search space.
        device: picks the precision choices when ``precisions`` is not given.
        precisions: restrict the precision choices.
    """
    g: dict[str, Any] = {
        "n_layer": trial.suggest_int("n_layer", space.n_layer_min, space.n_layer_max),
        "d_model": trial.suggest_categorical("d_model", list(space.d_model)),
    }
    for i in range(space.n_layer_max):
        g[f"n_head_{i}"] = trial.suggest_categorical(f"n_head_{i}", list(space.n_head))
        g[f"d_ff_{i}"] = trial.suggest_categorical(f"d_ff_{i}", list(space.d_ff))
        if space.n_kv_head:
            g[f"n_kv_head_{i}"] = trial.suggest_categorical(f"n_kv_head_{i}",
                                                            list(_kv_genes(space)))
        if space.drop_attention:
            g[f"attention_{i}"] = trial.suggest_categorical(f"attention_{i}", [True, False])
    g["precision"] = trial.suggest_categorical(
        "precision", list(precisions or space.precisions(device)))
    return space.decode(g)


def genome_of(arch: ArchConfig, space: SearchSpace) -> dict[str, Any]:
    """The genome that decodes to ``arch`` (unused layers padded), for ``enqueue_trial``."""
    g: dict[str, Any] = {"n_layer": arch.n_layer, "d_model": arch.d_model,
                         "precision": arch.precision}
    for i in range(space.n_layer_max):
        active = i < arch.n_layer
        h = arch.n_head[i] if active else min(space.n_head)
        g[f"n_head_{i}"] = h or min(space.n_head)
        g[f"d_ff_{i}"] = arch.d_ff[i] if active else min(space.d_ff)
        if space.n_kv_head:  # as many as the query heads: the gene above every choice
            kv = arch.n_kv_head[i] if active else min(space.n_kv_head)
            g[f"n_kv_head_{i}"] = (max(_kv_genes(space)) if h and kv == h else kv or 1)
        if space.drop_attention:
            g[f"attention_{i}"] = h != 0
    return g


def _kv_genes(space: SearchSpace) -> tuple[int, ...]:
    """The values a key/value-head gene takes: the space's choices, and one at least as
    large as every query-head choice (full multi-head attention)."""
    return tuple(sorted(set(space.n_kv_head or ()) | {max(space.n_head)}))
