"""Reading a YAML document of bounded size: ``yaml.safe_load`` with its aliases counted.

``safe_load`` runs no code, but an alias is a reference: a few hundred bytes of nested
aliases describe billions of values, which every later step (validation, messages,
hashing) walks in full. The document's node graph is measured first, each shared node
counted as often as it is referenced, and refused past :data:`MAX_NODES` before a
single Python object is built.
"""
from __future__ import annotations

from typing import Any

import yaml

from nas.errors import ConfigError

# Values after expanding the aliases: a search space, a recipe or an architecture holds
# a few hundred; a table's JSON is not YAML.
MAX_NODES = 100_000
MAX_BYTES = 16 << 20


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes of ``root`` with every alias expanded, counted up to just past ``limit``.

    Each node's size is computed once (shared nodes are what aliases are), so this costs
    the number of distinct nodes, not the expanded size.
    """
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if key in size:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not done:
            if key in open_:
                raise ConfigError("an alias refers to a value that contains it (a recursive "
                                  "alias); write the values out")
            open_.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
            continue
        open_.discard(key)
        size[key] = min(1 + sum(size[id(c)] for c in children), limit + 1)
    return size[id(root)]


def load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``, refusing a document that expands past :data:`MAX_NODES`.

    Args:
        text: the document.
        where: the file or key, for messages.

    Raises:
        ConfigError: too large, or aliases that expand too far or refer to themselves.
        yaml.YAMLError: not valid YAML (the caller words it).
    """
    if len(text) > MAX_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters of YAML; a file this tool reads is "
                          f"far smaller (at most {MAX_BYTES:,})")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            n = _expanded_size(node, MAX_NODES)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if n > MAX_NODES:
            raise ConfigError(f"{where}: its aliases (*name) expand to more than {MAX_NODES:,} "
                              "values; a file this tool reads holds far fewer: write it out "
                              "without nested aliases")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply to be a config this tool reads") from None
    finally:
        loader.dispose()
