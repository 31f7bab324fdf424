"""What a study records about its search, and the check that a resume searches the same.

A study is resumed by re-running its command (or by a second worker joining it). Its
earlier trials only mean something next to the new ones if both were proposed and measured
alike, so the settings that define the search are stored with the study when it is made
and compared on every resume. A difference is refused with one line naming the config key
to restore; naming a new study (``search.study_name``) starts afresh instead.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from nas.errors import ConfigError, shown

# Study attribute -> the config key that sets it. Change any of them and the earlier trials
# were proposed or measured otherwise.
SETTINGS = {
    "objectives": "search.objectives",
    "space": "search_space",
    "device": "hardware.device",
    "table_sha256": "hardware.table",
    "latency_budget_ms": "search.latency_budget_ms",
    "budgets": "search.budgets",
    "supernet_sha256": "supernet.checkpoint",
    "score": "score",
    "sampler": "sampler",
    "seed": "search.seed",
}


def search_settings(sampler: Any, seed: int, objectives: Sequence[str]) -> dict[str, Any]:
    """The proposing side of a search, as stored with its study.

    Args:
        sampler: a ``SamplerConfig`` (its name and the options that apply to it).
        seed: ``search.seed``.
        objectives: the names of the objectives, in order.
    """
    return {"sampler": sampler.settings(), "seed": seed, "objectives": list(objectives)}


def changed_setting(stored: Mapping[str, Any],
                    attrs: Mapping[str, Any]) -> tuple[str, Any, Any] | None:
    """The first setting that differs: (config key, stored value, new value), or None.

    A setting the study does not record (made by an older version) is not compared; it
    is written on resume (``nas.search.study.open_study``).
    """
    for attr, key in SETTINGS.items():
        if attr in stored and attr in attrs and stored[attr] != attrs[attr]:
            return _first_difference(key, stored[attr], attrs[attr])
    return None


def _first_difference(key: str, old: Any, new: Any) -> tuple[str, Any, Any]:
    """Descend into mappings so the message names the innermost key that changed."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        # The name first: another space or sampler is named as such, not by its first option.
        for k in sorted(set(old) | set(new), key=lambda k: (k != "name", str(k))):
            if old.get(k) != new.get(k):
                return _first_difference(f"{key}.{k}", old.get(k), new.get(k))
    return key, old, new


def refuse_changed_settings(name: str, where: str, stored: Mapping[str, Any],
                            attrs: Mapping[str, Any]) -> None:
    """Raise a one-line ConfigError if ``attrs`` would change a recorded setting.

    Args:
        name: the study.
        where: how to name its storage.
        stored: the study's user attributes.
        attrs: the attributes this search would record.
    """
    changed = changed_setting(stored, attrs)
    if changed is None:
        return
    key, old, new = changed
    raise ConfigError(
        f"{key}: study {shown(name, 80)} in {shown(where, 100)} was made with {_short(old)}, not {_short(new)}; "
        f"resume it with the same {key} or choose another search.study_name")


def _short(v: Any) -> str:
    return shown(v, 60)
