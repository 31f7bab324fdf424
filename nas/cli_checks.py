"""One-line refusals of a bad command line for ``nas-train`` and ``nas-latency``.

Hydra reports an unknown key, option or config over several lines (exit 1) and a config
file that is not UTF-8 with a stack trace that names no file. :func:`precheck` composes
the config before Hydra runs and turns any failure into one line naming the key or the
file and what is allowed (exit 2), as ``nas.search`` does.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

from nas.errors import ConfigError
from nas.paths import CONF_DIR

# Hydra's own flags: left to Hydra (--help, --cfg job, -m sweeps...).
HYDRA_FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve",
               "--package", "-p", "--run", "-r", "--multirun", "-m", "--shell-completion", "-sc",
               "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd",
               "--experimental-rerun", "--info", "-i")


def precheck(argv: Sequence[str], config_name: str, verbs: Sequence[str] = ()) -> None:
    """Compose ``config_name`` with ``argv``; on a mistake print one line and exit 2.

    Args:
        argv: the command line after the program name.
        config_name: the primary config under ``conf/`` (``train``, ``latency``).
        verbs: the words a command accepts without ``=`` (given as ``verb=...``).
    """
    try:
        check(argv, config_name, verbs)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def check(argv: Sequence[str], config_name: str, verbs: Sequence[str] = ()) -> None:
    """Raise a one-line ConfigError for a command line Hydra would refuse or misread."""
    for a in argv:
        if a.startswith("-"):
            if a.split("=", 1)[0] not in HYDRA_FLAGS:
                raise ConfigError(f"{a}: unknown option; give key=value overrides, or one of "
                                  "Hydra's flags (--help, --cfg job, -m ...)")
        elif "=" not in a and not a.startswith("~"):
            if verbs:
                raise ConfigError(f"{a!r}: unknown verb; allowed: {', '.join(verbs)}")
            raise ConfigError(f"{a!r}: not an override; give key=value (e.g. train.steps=100)")
    if any(a.startswith("-") for a in argv):
        return
    try:
        _compose(config_name, argv)
    except Exception as e:  # noqa: BLE001 - any composition failure is a user mistake here
        raise ConfigError(_error_line(e, argv, config_name)) from None
    # `+key=value` adds a key Hydra accepts and the command would silently ignore.
    added = [a.lstrip("+").split("=", 1)[0] for a in argv if a.startswith("+")]
    added = [k for k in added if not k.startswith("hydra.")]
    if added:
        from omegaconf import OmegaConf
        base = _compose(config_name, [a for a in argv if not a.startswith("+")])
        for key in added:
            if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
                raise ConfigError(f"{key}: unknown key{_allowed(base, key)}")


_ABSENT = object()


def _compose(config_name: str, overrides: Sequence[str]) -> Any:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


def _allowed(cfg: Any, key: str) -> str:
    """``"; allowed: a, b"``: the keys beside ``key`` in ``cfg`` (empty when unknown)."""
    from omegaconf import DictConfig, OmegaConf

    parent = key.rpartition(".")[0]
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    if not isinstance(node, DictConfig):
        return ""
    return "; allowed: " + ", ".join(str(k) for k in node.keys())


def _error_line(e: BaseException, argv: Sequence[str], config_name: str) -> str:
    """One line for a composition error (``nas.hydra_cli.error_line``), naming the file
    that is not UTF-8 and, for an unknown key, the keys allowed beside it."""
    from nas.hydra_cli import error_line

    def allowed(key: str) -> str:
        try:
            return _allowed(_compose(config_name, []), key)
        except Exception:  # noqa: BLE001 - the list of allowed keys is a courtesy
            return ""

    return error_line(e, undecodable=lambda: _undecodable(argv, config_name), allowed=allowed)


def _undecodable(argv: Sequence[str], config_name: str) -> Path | None:
    """The config file of this command line that is not UTF-8, if one can be found."""
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
