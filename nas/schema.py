"""One way to read a config: a frozen dataclass's annotations are its schema.

The command line gets them through Hydra (``nas.hydra_cli.schema_of`` turns the same
dataclasses into structured configs); a YAML file, a checkpoint or a plain mapping gets
them through :func:`from_mapping`. Either way an unknown key, a missing one or a value
of the wrong type is refused with one line naming the key, the value and what is
allowed; ranges and relations between fields are each dataclass's ``__post_init__``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from nas.errors import ConfigError, clip, shown

T = TypeVar("T")


def from_mapping(cls: type[T], d: Mapping[str, Any], where: str) -> T:
    """``cls(**d)`` with every key known, every required key given and every value of its type.

    Args:
        cls: a dataclass.
        d: the values (a YAML document, a checkpoint's dict, a config node as a dict).
        where: how the message names a key: ``"train."`` gives ``train.steps: ...``,
            ``"architecture: "`` gives ``architecture: d_model: ...``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"{where}{clip(', '.join(map(str, unknown)), 80)}: unknown key(s) "
                          f"{shown(unknown)}; allowed: {sorted(fields)}")
    missing = sorted(k for k, f in fields.items() if k not in d and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if missing:
        raise ConfigError(f"{where.rstrip(': .')}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: coerce(v, hints[k], f"{where}{k}") for k, v in d.items()})


def coerce(v: Any, tp: Any, name: str) -> Any:
    """``v`` as the type ``tp`` (bool, int, float, str, a Literal, ``X | None``,
    ``tuple[X, ...]``, a mapping, a nested dataclass), or a ConfigError naming ``name``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(v, tp):
            return v
        if not isinstance(v, Mapping):
            raise ConfigError(f"{name}: {shown(v)} must be a mapping")
        return from_mapping(tp, v, f"{name}.")
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        return coerce(v, next(a for a in args if a is not type(None)), name)
    if origin is typing.Literal:
        if v not in args:
            raise ConfigError(f"{name}: {shown(v)} must be one of {', '.join(map(str, args))}")
        return v
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{name}: {shown(v)} must be true or false")
        return v
    if tp in (int, float):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
        if not ok or (tp is int and (not math.isfinite(v) or v != int(v))):
            raise ConfigError(f"{name}: {shown(v)} must be {'an integer' if tp is int else 'a number'}")
        return tp(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{name}: {shown(v)} must be a string")
        return v
    if origin is tuple:
        if not isinstance(v, Sequence) or isinstance(v, str):
            raise ConfigError(f"{name}: {shown(v)} must be a list")
        return tuple(coerce(x, args[0], f"{name}[{i}]") for i, x in enumerate(v))
    if origin in (Mapping, dict):
        if not isinstance(v, Mapping):
            raise ConfigError(f"{name}: {shown(v)} must be a mapping")
        return {str(k): coerce(x, args[1], f"{name}.{clip(str(k), 60)}") for k, x in v.items()} if args else dict(v)
    return v
