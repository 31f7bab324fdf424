"""Hydra at the edge of the commands: one typed schema, composed once, one-line errors.

The schema of each command (``search``, ``train``, ``latency``) is stored in Hydra's
ConfigStore as structured configs derived from the frozen dataclasses that hold the
settings (``nas.search.config``, ``nas.search.samplers``, ``nas.supernet.recipe``), so a
field and its type are written once; Hydra refuses an unknown key or a value of the
wrong type while composing. :func:`launch` runs a command under ``@hydra.main``: Hydra
composes the config once and writes its run record; a composition error is shown as
one line naming the key, the value and what is allowed (:func:`error_line`), with exit
status 2. Checks beyond types run in a Hydra callback before the run folder is made
(``nas.search.run.CheckFirst``).
"""
from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from hydra.experimental.callback import Callback
from omegaconf import MISSING

from nas.errors import MESSAGE_MAX, ConfigError, clip
from nas.paths import CONF_DIR


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


@dataclass
class TrainCommandSchema:
    """``nas-train``'s own keys (``conf/train.yaml`` gives their values)."""

    out_dir: str = MISSING
    resume: Optional[str] = None
    arch: Optional[str] = None
    init: str = "scratch"
    supernet: Dict[str, Optional[str]] = field(default_factory=lambda: {"checkpoint": None})


@dataclass
class LatencySettings:
    """``latency.*`` of ``nas-latency`` (``conf/latency.yaml`` gives values and meanings)."""

    phase: str = MISSING
    table: Optional[str] = None
    batch_size: Optional[int] = None
    seq_len: Optional[int] = None
    prompt_len: Optional[int] = None
    precisions: Optional[List[str]] = None
    threads: int = MISSING
    mode: Optional[str] = None
    repeats: int = MISSING
    warmup: int = MISSING
    window_ms: float = MISSING
    cpu_clock: str = MISSING
    passes: int = MISSING
    graph_calls: int = MISSING
    progress: bool = True


@dataclass
class CalibrationSettings:
    n: int = MISSING
    seed: int = MISSING


@dataclass
class ValidateSettings:
    n: int = MISSING
    seed: int = MISSING
    precisions: Optional[List[str]] = None
    out: Optional[str] = None
    noise_models: int = MISSING
    noise_repeats: int = MISSING
    requests: int = MISSING
    new_tokens: Optional[int] = None


@dataclass
class CheckSettings:
    n: int = MISSING
    seed: int = MISSING
    out: Optional[str] = None


@dataclass
class PredictSettings:
    arch: Optional[str] = None


@dataclass
class LatencyCommandSchema:
    """``nas-latency``'s keys (``conf/latency.yaml``)."""

    verb: str = "build"
    latency: LatencySettings = field(default_factory=LatencySettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    validate: ValidateSettings = field(default_factory=ValidateSettings)
    check: CheckSettings = field(default_factory=CheckSettings)
    predict: PredictSettings = field(default_factory=PredictSettings)


def register_schema(command: str = "search") -> None:
    """Store ``<command>_schema``, the first entry of the command's primary config's defaults.

    The search space is free-form here: ``SearchSpace.from_dict`` checks it, with messages
    of its own.
    """
    from hydra.core.config_store import ConfigStore

    from nas.search.config import HardwareConfig, ScoreConfig, SearchConfig, SupernetConfig
    from nas.search.samplers import SamplerConfig
    from nas.supernet.recipe import TrainConfig

    def typed_node(name: str, schema: type) -> tuple[str, type, Any]:
        return (name, schema, field(default_factory=schema))

    common = [typed_node("train", schema_of(TrainConfig)), ("search_space", Any, field(default=None))]
    if command == "search":
        fields = [typed_node(name, schema_of(c)) for name, c in (
            ("search", SearchConfig), ("sampler", SamplerConfig), ("hardware", HardwareConfig),
            ("supernet", SupernetConfig), ("score", ScoreConfig))] + common
        node = dataclasses.make_dataclass("SearchCommandSchema", fields)
    elif command == "train":
        node = dataclasses.make_dataclass("TrainSchema", common, bases=(TrainCommandSchema,))
    else:
        node = dataclasses.make_dataclass("LatencySchema", [
            typed_node("hardware", schema_of(HardwareConfig)), ("search_space", Any, field(default=None))],
            bases=(LatencyCommandSchema,))
    ConfigStore.instance().store(name=f"{command}_schema", node=node)


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


# Hydra's own flags: left to Hydra (--help, --cfg job, -m sweeps...).
HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve",
               "--package", "-p", "--run", "-r", "--multirun", "-m", "--shell-completion", "-sc",
               "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--experimental-rerun", "--info", "-i")
TAKES_VALUE = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun", "--info", "-i",
               "--shell-completion", "-sc")


def check_words(argv: Sequence[str], verbs: Sequence[str] = ()) -> None:
    """Refuse a word Hydra would misread: an unknown flag, a bare word that is no verb, a
    ``+key=value`` that adds a key nothing reads."""
    after_flag = False
    for a in argv:
        if after_flag:  # the value of --cfg, --info, --config-dir...: Hydra's to check
            after_flag = False
            continue
        if a.startswith("-"):
            after_flag = "=" not in a and a in TAKES_VALUE
            if a.split("=", 1)[0] not in HYDRA_FLAGS:
                raise ConfigError(f"{a}: unknown option; give key=value overrides, or one of "
                                  "Hydra's flags (--help, --cfg job, -m ...)")
        elif a.startswith("+") and not a.lstrip("+").startswith("hydra"):
            # Hydra adds such a key even to a typed node; every key a command reads exists.
            key = a.lstrip("+").split("=", 1)[0]
            raise ConfigError(f"{key}: unknown key; '+' adds a key this command would not read "
                              "(--help lists the keys it has)")
        elif "=" not in a and not a.startswith("~"):
            if verbs:
                raise ConfigError(f"{a!r}: unknown verb; allowed: {', '.join(verbs)}")
            raise ConfigError(f"{a!r}: not an override; give key=value (e.g. train.steps=100)")


def launch(prog: str, config_name: str, task: Callable[[Any], Any], verbs: Sequence[str] = ()) -> None:
    """Run ``task`` under ``@hydra.main`` with ``conf/<config_name>.yaml``.

    Hydra composes the config once. A mistake in the command line or a config file
    (unknown key or option, wrong type, broken YAML) ends with one line on stderr and exit
    status 2; an error inside ``task`` is the task's to report. ``--version`` prints this
    tool's version.
    """
    import hydra

    argv = sys.argv[1:]
    exit_on_version(prog, argv)
    try:
        check_words(argv, verbs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    register_schema(config_name if config_name != "config" else "search")
    # Hydra raises its composition errors rather than printing them over several lines;
    # a user who set HYDRA_FULL_ERROR=1 gets the whole traceback, as with Hydra alone.
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    started = []

    def run(cfg: Any) -> Any:
        started.append(True)
        return task(cfg)

    run.__module__, run.__qualname__ = task.__module__, task.__qualname__
    try:
        hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(run)()
    except Exception as e:  # noqa: BLE001 - before the task, any failure is a user mistake
        if started or full:
            raise
        line = error_line(e, undecodable=lambda: undecodable(argv, config_name))
        print(f"error: {clip(line, MESSAGE_MAX)}", file=sys.stderr)
        sys.exit(2)


class CheckFirst(Callback):
    """A command's checks, run before Hydra makes the run folder and writes its record
    there, so that a refused command leaves every file as it was (``hydra.callbacks`` of
    the command's primary config).

    Args:
        check: the dotted name of ``check(config) -> checked``; the task takes what it
            returned with :meth:`take`.
        sweep_job: the dotted name of ``check(config)`` for each job of a sweep (``-m``),
            all run before the first job starts; None: a sweep's jobs check themselves.
    """

    _checked: Any = None

    def __init__(self, check: str, sweep_job: str | None = None):
        self.check, self.sweep_job = check, sweep_job

    @classmethod
    def take(cls) -> Any:
        """What the check returned (None when it did not run: a sweep's job, the compose API)."""
        checked, cls._checked = cls._checked, None
        return checked

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_method

        from nas.errors import exit_on_user_error

        HydraConfig.instance().set_config(config)  # resolves ${hydra:...} (a study's name)
        check = exit_on_user_error(get_method(self.check))  # a mistake: one line, exit 2
        try:
            CheckFirst._checked = check(config)
        except Exception:  # noqa: BLE001 - not a user's mistake: the task checks again and says
            CheckFirst._checked = None

    def on_multirun_start(self, config: Any, config_name: str | None = None, **kwargs: Any) -> None:
        if self.sweep_job is None:
            return
        from hydra import compose
        from hydra.core.hydra_config import HydraConfig
        from hydra.utils import get_method

        from nas.errors import exit_on_user_error

        check = get_method(self.sweep_job)

        @exit_on_user_error
        def each_job() -> None:
            for job in sweep_jobs(list(config.hydra.overrides.task)):
                try:  # the sweep's jobs are composed again here, before the first one runs
                    cfg = compose(config_name=config_name, overrides=job, return_hydra_config=True)
                except Exception as e:  # noqa: BLE001 - a job that does not compose is a mistake
                    raise ConfigError(error_line(e)) from None
                HydraConfig.instance().set_config(cfg)
                check(cfg)
            HydraConfig.instance().set_config(config)

        each_job()


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
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


def compose_config(overrides: list[str], config_name: str = "config") -> Any:
    """The config a command would see with ``overrides`` (``config``: ``nas.search``;
    ``train``, ``latency``), for experiments and tests; ``${hydra:...}`` keys such as the
    default study name stay unresolved."""
    from hydra import compose, initialize_config_dir

    register_schema("search" if config_name == "config" else config_name)
    job = {"config": "search"}.get(config_name, config_name)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name=job):
        return compose(config_name=config_name, overrides=list(overrides))


def undecodable(argv: Sequence[str], config_name: str) -> Path | None:
    """The config file of this command line that is not UTF-8, if one can be found
    (Hydra's error names none)."""
    import yaml

    dirs = [CONF_DIR]
    for a in argv:
        if a.startswith("hydra.searchpath="):
            for entry in a.split("=", 1)[1].strip("[]").split(","):
                entry = entry.strip().strip("'\"")
                if entry.startswith("file://"):
                    dirs.append(Path(entry[len("file://"):]))
    picks: dict[str, str] = {}
    try:
        primary = yaml.safe_load((CONF_DIR / f"{config_name}.yaml").read_text())
        for d in primary.get("defaults", []):
            if isinstance(d, dict):
                picks.update({str(k): str(v) for k, v in d.items()})
    except (OSError, yaml.YAMLError, AttributeError):
        pass
    for a in argv:
        k, _, v = a.partition("=")
        if "." not in k and v:
            picks[k.lstrip("+")] = v
    for group, name in picks.items():
        for d in dirs:
            f = d / group / f"{name}.yaml"
            if f.is_file():
                try:
                    f.read_bytes().decode("utf-8")
                except UnicodeDecodeError:
                    return f
    return None
