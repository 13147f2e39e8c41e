"""Reading the config files the way a user means them, before Snakemake's merge hides mistakes.

Snakemake loads each ``configfile`` with a YAML loader that lets a repeated key silently win,
and merges overlays into the default, so a wrong type in an overlay can vanish in the merge
(``datasets: {}`` merged into a list). Each file is therefore read again here, strictly: a
mapping at the top, no key given twice in one mapping, and every value it sets already
checked against the schema (types, bounds, closed objects), with the file named.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .schema import ConfigError, key_path, load_schema, schema_errors


def _duplicates(node: yaml.Node, parts: tuple = ()) -> list[str]:
    """``<key>: given twice (lines a and b)`` for every key repeated inside one mapping."""
    found = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                found.append(
                    f"{key_path((*parts, key))}: given twice (lines {seen[key]} and {line}), "
                    "and YAML would silently keep the last; keep one"
                )
            seen.setdefault(key, line)
            found += _duplicates(value_node, (*parts, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            found += _duplicates(item, (*parts, index))
    return found


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in ``path``; ConfigError naming the file for anything else."""
    path = Path(path)
    try:
        text = path.read_text()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err}); check the --configfile path") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: <top level>: holds a {type(data).__name__}, not a mapping of config keys; "
            "write it as `key: value` lines (see config/config.yaml)"
        )
    problems = _duplicates(node)
    if problems:
        raise ConfigError(f"invalid config file {path}:\n  " + "\n  ".join(problems))
    return data


def check_config_files(paths: Iterable[str | Path], schema: dict[str, Any] | None = None) -> None:
    """Refuse a config file that is not a mapping, repeats a key, or sets a value the schema
    refuses (even one a later overlay would replace), naming the file and the key."""
    schema = schema if schema is not None else load_schema()
    for path in dict.fromkeys(str(p) for p in paths):
        data = read_config_file(path)
        lines = schema_errors(data, schema, fill_defaults=False, prefix=f"{path}: ")
        if lines:
            raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
