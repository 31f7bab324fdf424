"""nas.schema: a dataclass's annotations check a plain mapping (YAML, checkpoints)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping

import pytest

from nas.errors import ConfigError
from nas.schema import from_mapping


@dataclass(frozen=True)
class Inner:
    size: int = 1
    name: str | None = None


@dataclass(frozen=True)
class Example:
    steps: int
    lr: float = 1e-3
    on: bool = True
    mode: Literal["a", "b"] = "a"
    data: str | None = None
    widths: tuple[int, ...] = ()
    per_device: Mapping[str, tuple[str, ...]] | None = None
    inner: Inner = field(default_factory=Inner)


def test_values_of_the_annotated_types_are_taken_and_converted():
    e = from_mapping(Example, {"steps": 3.0, "lr": 1, "widths": [1, 2], "data": None,
                               "per_device": {"cpu": ["fp32"]}}, "x.")
    assert e == Example(steps=3, lr=1.0, widths=(1, 2), per_device={"cpu": ("fp32",)})
    assert type(e.steps) is int and type(e.lr) is float and e.inner == Inner()
    assert from_mapping(Example, {"steps": 1, "inner": {"size": 4.0}}, "x.").inner == Inner(size=4)


@pytest.mark.parametrize("d, words", [
    ({"steps": 1, "stepz": 2}, "x.stepz: unknown key(s) ['stepz']; allowed: ['data', 'inner', 'lr', 'mode'"),
    ({}, "x: missing key(s) ['steps']"),
    ({"steps": 1.5}, "x.steps: 1.5 must be an integer"),
    ({"steps": True}, "x.steps: True must be an integer"),
    ({"steps": 1, "lr": "fast"}, "x.lr: 'fast' must be a number"),
    ({"steps": 1, "on": "yes"}, "x.on: 'yes' must be true or false"),
    ({"steps": 1, "mode": "c"}, "x.mode: 'c' must be one of a, b"),
    ({"steps": 1, "data": 3}, "x.data: 3 must be a string"),
    ({"steps": 1, "widths": "1,2"}, "x.widths: '1,2' must be a list"),
    ({"steps": 1, "widths": [1, "w"]}, "x.widths[1]: 'w' must be an integer"),
    ({"steps": 1, "per_device": {"cpu": "fp32"}}, "x.per_device.cpu: 'fp32' must be a list"),
    ({"steps": 1, "inner": 3}, "x.inner: 3 must be a mapping"),
    ({"steps": 1, "inner": {"size": "big"}}, "x.inner.size: 'big' must be an integer"),
    ({"steps": 1, "inner": {"sise": 2}}, "x.inner.sise: unknown key(s) ['sise']; allowed: ['name', 'size']"),
])
def test_a_wrong_value_is_one_line_naming_the_key(d, words):
    with pytest.raises(ConfigError) as e:
        from_mapping(Example, d, "x.")
    assert words in str(e.value) and "\n" not in str(e.value)
