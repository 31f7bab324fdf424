"""Where the configs, search spaces and committed latency tables are.

In a checkout they are the folders ``conf/``, ``search_spaces/`` and ``latency_tables/``
beside ``nas/``. An installed wheel carries the same folders as package data under
``nas/_data/`` (``pyproject.toml`` maps them there at build time), so the commands work
from any folder without the source tree.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# The source tree holding nas/, or None in an installed wheel (site-packages has no
# pyproject.toml beside the package).
CHECKOUT: Path | None = (_PACKAGE.parent if (_PACKAGE.parent / "pyproject.toml").is_file()
                         and (_PACKAGE.parent / "conf").is_dir() else None)
# The folder holding conf/, search_spaces/ and latency_tables/.
DATA_ROOT = CHECKOUT if CHECKOUT is not None else _PACKAGE / "_data"
CONF_DIR = DATA_ROOT / "conf"
SPACES_DIR = DATA_ROOT / "search_spaces"
TABLES_DIR = DATA_ROOT / "latency_tables"
# The shipped corpus (tiny-shakespeare), package data in a checkout and in a wheel alike.
CORPUS = _PACKAGE / "data" / "tinyshakespeare.txt"


def resolve(path: str | Path) -> Path:
    """``path`` as given, or under :data:`DATA_ROOT` when it is relative and only there.

    So ``latency_tables/cpu-tiny.csv`` in a config means the committed table, from a
    checkout or an installed tool, unless the working folder has a file of that name.
    """
    p = Path(path)
    if not p.is_absolute() and not p.exists() and (DATA_ROOT / p).exists():
        return DATA_ROOT / p
    return p
