"""Hydra at the edge of ``python -m nas.search``: the typed schema and one-line errors.

The schema is derived from the frozen dataclasses of ``nas.search.config`` and
``nas.search.samplers`` (Hydra cannot merge overrides into frozen nodes), so a field and its
type are written once. Hydra reports a bad override over several lines with a hint
about ``HYDRA_FULL_ERROR``; :func:`precheck` composes the config first and turns any
failure into one line naming the key, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import re
import sys
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


def _omegaconf_type(t: Any) -> Any:
    """``float | None`` -> ``Optional[float]``, ``tuple[str, ...]`` -> ``List[str]``,
    ``dict[str, float | None]`` -> ``Dict[str, Optional[float]]``."""
    if isinstance(t, types.UnionType):
        return Optional[next(a for a in t.__args__ if a is not type(None))]
    if typing.get_origin(t) is tuple:
        return List[_omegaconf_type(typing.get_args(t)[0])]
    if typing.get_origin(t) is dict:
        k, v = typing.get_args(t)
        return Dict[k, _omegaconf_type(v)]
    return t


def schema_of(cls: type) -> type:
    """A mutable copy of a frozen dataclass, with types OmegaConf understands; a field
    that is itself a dataclass (``hardware.workload``) gets that dataclass's schema."""
    hints = typing.get_type_hints(cls)
    spec = []
    for f in dataclasses.fields(cls):
        t = _omegaconf_type(hints[f.name])
        if dataclasses.is_dataclass(t) and isinstance(t, type):
            nested = schema_of(t)
            spec.append((f.name, nested, field(default_factory=nested)))
        elif f.default_factory is not dataclasses.MISSING:
            spec.append((f.name, t, field(default_factory=f.default_factory)))
        elif isinstance(f.default, tuple):
            spec.append((f.name, t, field(default_factory=lambda v=f.default: list(v))))
        else:
            spec.append((f.name, t, field(default=f.default)))
    return dataclasses.make_dataclass(f"{cls.__name__}Schema", spec)


def register_schema() -> None:
    """Store ``search_schema`` (the first entry of ``conf/config.yaml``'s defaults)."""
    from hydra.core.config_store import ConfigStore

    from nas.search.samplers import SamplerConfig
    from nas.search.config import HardwareConfig, ScoreConfig, SearchConfig, SupernetConfig

    schemas = {name: schema_of(c) for name, c in (
        ("search", SearchConfig), ("sampler", SamplerConfig), ("hardware", HardwareConfig),
        ("supernet", SupernetConfig), ("score", ScoreConfig))}

    # search_space and train are free-form here: SearchSpace.from_dict and
    # TrainConfig.from_dict check them, with messages of their own.
    node = dataclasses.make_dataclass("SearchCommandSchema", [
        *((name, schema, field(default_factory=schema)) for name, schema in schemas.items()),
        ("search_space", Any, field(default=None)),
        ("train", Any, field(default=None)),
    ])
    ConfigStore.instance().store(name="search_schema", node=node)


def error_line(e: BaseException, undecodable: Callable[[], Path | None] | None = None,
               allowed: Callable[[str], str] | None = None) -> str:
    """One line for a Hydra composition error.

    Args:
        e: what composing raised.
        undecodable: finds the config file that is not UTF-8 (Hydra does not name it).
        allowed: ``"; allowed: a, b"`` for an unknown key of a free-form (not typed) node;
            a typed node's keys come from its dataclass.
    """
    import yaml
    from hydra.errors import MissingConfigException, OverrideParseException

    chain, c = [], e
    while c is not None and len(chain) < 10:
        chain.append(c)
        c = c.__cause__ or c.__context__
    if any(isinstance(c, UnicodeDecodeError) for c in chain):
        bad = undecodable() if undecodable is not None else None
        return f"{bad or 'a config file'}: not a text file (not UTF-8); a config file is YAML text"
    bad_yaml = next((c for c in chain if isinstance(c, yaml.YAMLError)), None)
    if bad_yaml is not None:
        mark = getattr(bad_yaml, "problem_mark", None) or getattr(bad_yaml, "context_mark", None)
        where = f"{mark.name}, line {mark.line + 1}" if mark else "a config file"
        what = getattr(bad_yaml, "problem", None) or getattr(bad_yaml, "context", None) or ""
        return f"{where}: not valid YAML ({what})"
    if isinstance(e, MissingConfigException):
        missing = getattr(e, "missing_cfg_file", "") or ""
        group, _, name = missing.rpartition("/")
        options = getattr(e, "options", None)
        if group and options is not None:
            return (f"{group}: unknown option {name!r}; available: {', '.join(sorted(options))}")
        return first_line(e)
    if isinstance(e, OverrideParseException):
        return f"override {getattr(e, 'override', '')!r}: {first_line(e)}"
    cause = e.__cause__ or e.__context__
    if cause is not None:
        key = getattr(cause, "full_key", None) or "config"
        msg = str(getattr(cause, "msg", None) or first_line(cause)).splitlines()[0]
        m = re.match(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", msg)
        if m:
            kind = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false",
                    "String": "a string"}.get(m.group(2), m.group(2))
            return f"{key}: {m.group(1)!r} is not allowed; it must be {kind}"
        if re.match(r"Key '.*' (is )?not in", msg):
            owner = getattr(cause, "object_type", None)
            parent = getattr(cause, "parent_node", None)
            if owner is not None and dataclasses.is_dataclass(owner):
                keys = "; allowed: " + ", ".join(f.name for f in dataclasses.fields(owner))
            elif parent is not None and hasattr(parent, "keys"):  # a typed dict (search.budgets)
                keys = "; allowed: " + ", ".join(str(k) for k in parent.keys() if k != "hydra")
            else:
                keys = allowed(key) if allowed is not None else ""
            return f"{key}: unknown key{keys}"
        if msg.startswith("Invalid value assigned: str is not a ListConfig"):
            return f"{key}: {getattr(cause, 'value', '')!r} is not a list; give one, e.g. [a,b]"
        if re.match(r"Value '.*' is not a valid bool", msg):
            return f"{key}: {msg.split(chr(39))[1]!r} is not allowed; it must be true or false"
        return f"{key}: {msg}"
    return first_line(e)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its class name when empty)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else e.__class__.__name__


MULTIRUN = ("-m", "--multirun")


def precheck(argv: list[str]) -> Path | None:
    """Compose the config with ``argv``'s overrides; exit 2 with one line if it fails.

    Everything that decides where Hydra writes (``search.*``, ``hydra.run.dir``) is
    checked here, since Hydra creates its run folder before the search starts. A sweep
    (``-m``) is checked job by job. Hydra's other flags (``--help``, ``--cfg``...) are
    left to Hydra.

    Returns:
        The run folder (``hydra.run.dir``), or None for a sweep or Hydra's flags.
    """
    sweep = any(a in MULTIRUN for a in argv)
    overrides = [a for a in argv if a not in MULTIRUN]
    if any(a.startswith("-") for a in overrides):
        return None
    from nas.errors import ConfigError

    try:
        if not sweep:
            return _check_job(overrides, sweep=False)
        for job in _sweep_jobs(overrides):
            _check_job(job, sweep=True)
    except ConfigError as e:
        from nas.errors import MESSAGE_MAX, clip
        print(f"error: {clip(str(e), MESSAGE_MAX)}", file=sys.stderr)
        sys.exit(2)
    return None


def _sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override lists of a ``-m`` sweep's jobs, as Hydra's basic sweeper expands them
    (the product of the discrete sweeps; the last override of a key wins)."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from nas.errors import ConfigError

    try:
        choices: dict[str, list[str]] = {}
        for o in OverridesParser.create().parse_overrides(overrides):
            key = o.get_key_element()
            if not o.is_sweep_override():
                choices[key] = [f"{key}={o.get_value_element_as_str()}"]
            elif o.is_discrete_sweep():
                choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
            else:
                raise ConfigError(f"{key}: a range or interval sweep needs a sweeper plugin; "
                                  "list the values (key=a,b,c)")
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed sweep is a user mistake
        raise ConfigError(error_line(e)) from None
    return [list(job) for job in itertools.product(*choices.values())]


def _check_job(overrides: list[str], sweep: bool) -> Path:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from nas.errors import ConfigError
    from nas.outputs import check_folder
    from nas.paths import CONF_DIR
    from nas.search.config import SearchConfig, typed

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="search"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    except Exception as e:  # noqa: BLE001 - any composition failure is a user mistake here
        raise ConfigError(error_line(e)) from None
    HydraConfig.instance().set_config(cfg)  # resolves ${hydra:...} in the default study name
    typed(SearchConfig, cfg.search, "search")
    if sweep:
        key, run_dir = "hydra.sweep.dir", Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    else:
        key, run_dir = "hydra.run.dir", Path(str(cfg.hydra.run.dir))
    check_folder(run_dir, key)
    return run_dir


def save_run_record(cfg: Any, hydra_cfg: Any, out_dir: Path) -> None:
    """Hydra's record of a run (``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``).

    Written by the search once its checks pass rather than by Hydra before they run
    (``hydra.output_subdir: null``), so a refused command leaves the record of the
    study's last real run as it was.
    """
    from omegaconf import OmegaConf

    record = out_dir / ".hydra"
    record.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, record / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), record / "hydra.yaml")
    OmegaConf.save(hydra_cfg.overrides.task, record / "overrides.yaml")


def exit_on_version(prog: str, argv: list[str]) -> None:
    """``--version``: this tool's version (Hydra would print its own), then exit."""
    if "--version" in argv:
        from importlib.metadata import PackageNotFoundError, version

        from nas import __version__
        try:
            installed = version("latnas")
        except PackageNotFoundError:  # a checkout on PYTHONPATH, not installed
            installed = __version__
        print(f"{prog} {installed} (latnas)")
        sys.exit(0)


def compose_config(overrides: list[str]) -> Any:
    """The config ``python -m nas.search`` would see with ``overrides`` (for experiments
    and tests; ``${hydra:...}`` keys such as the default study name stay unresolved)."""
    from hydra import compose, initialize_config_dir

    from nas.paths import CONF_DIR

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="search"):
        return compose(config_name="config", overrides=list(overrides))
