"""The config's JSON schema: loading, strict types, defaults, and messages that name the key.

The schema (workflow/schemas/config.schema.yaml) closes every object, types and bounds every
value and gives its default. Two readings are stricter than JSON Schema's own: an integer is
a Python ``int`` (``epochs: 2.0`` and ``true`` are refused, not rounded), and every number must
be finite (YAML's ``.inf`` and ``.nan`` are numbers to a schema, never to this study).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the fix."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def key_path(parts: Iterable[Any]) -> str:
    """``("datasets", 0, "name")`` -> ``datasets[0].name``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _is_integer(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker: Any, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
    {"integer": _is_integer, "number": _is_number}
)


def _with_defaults(validator_class):
    """A validator that fills ``default`` values in place, as Snakemake's ``validate`` does."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, _copy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults}, type_checker=_TYPES
    )


Strict = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=_TYPES)


def _copy(value: Any) -> Any:
    # Defaults must not be shared between config objects (e.g. two datasets' `hub` blocks).
    return yaml.safe_load(yaml.safe_dump(value))


def schema_at(schema: dict[str, Any], parts: Iterable[Any]) -> dict[str, Any]:
    """The schema node that governs the value at ``parts`` (``$ref``s resolved)."""

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return {**schema["$defs"][ref.removeprefix("#/$defs/")], **node}
        return node

    node = schema
    for part in parts:
        node = resolve(node)
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return resolve(node)


def _description(schema: dict[str, Any], parts: list[Any]) -> str:
    """The description of the value at ``parts``, or of the nearest key above it that has one
    (a list's items share their list's)."""
    for end in range(len(parts), -1, -1):
        meaning = schema_at(schema, parts[:end]).get("description", "")
        if meaning:
            return meaning.strip()
    return ""


def non_finite(value: Any, parts: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """Every (key path, value) of a NaN or infinite number in ``value``."""
    if isinstance(value, float) and not math.isfinite(value):
        yield parts, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from non_finite(item, (*parts, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from non_finite(item, (*parts, index))


def schema_errors(
    config: Any, schema: dict[str, Any], fill_defaults: bool = True, prefix: str = ""
) -> list[str]:
    """One ``<key>: <problem>; <fix>`` line per violation (empty: valid). Fills defaults in
    place unless ``fill_defaults`` is False; ``prefix`` goes before every line (a file name)."""
    lines = [
        f"{prefix}{key_path(parts)}: {value} is not a finite number; give a finite value "
        "(YAML's .inf and .nan are refused everywhere)"
        for parts, value in non_finite(config)
    ]
    if lines:
        return lines  # the schema would only repeat them less clearly
    cls = _with_defaults(jsonschema.Draft202012Validator) if fill_defaults else Strict
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    for err in errors:
        parts = list(err.absolute_path)
        if err.validator == "additionalProperties":
            known = sorted(err.schema.get("properties", {}))
            fix = f"remove it or use one of: {', '.join(known)}"
        else:
            meaning = _description(schema, parts)
            fix = f"expected: {meaning}" if meaning else "see workflow/schemas/config.schema.yaml"
        lines.append(f"{prefix}{key_path(parts)}: {err.message}; {fix}")
    return lines
