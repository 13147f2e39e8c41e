"""Checking a configuration before any job runs.

``validate_config`` applies the JSON schema (closed objects, types, bounds; fills defaults) and
then ``check_config``, the cross-field rules a schema cannot express. Every error names the
config key and the fix, in the form ``<key.path>: <problem>; <fix>``, so a user never has to read
a stack trace to repair a config.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

# A canary space must be much larger than the number of canaries: secrets are drawn without
# repetition and must not occur in the corpus, and every other canary's secret is a candidate
# that competes in the rank.
MIN_SPACE_PER_CANARY = 10


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the fix."""


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def _key_path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _with_defaults(validator_class):
    """A validator that fills ``default`` values in place, as Snakemake's ``validate`` does."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, _copy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    # Defaults must not be shared between config objects (e.g. two datasets' `hub` blocks).
    return yaml.safe_load(yaml.safe_dump(value))


def _schema_at(schema: dict[str, Any], parts: Iterable[Any]) -> dict[str, Any]:
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


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict:
    """Validate ``config`` in place (defaults filled) and return it; raise ConfigError."""
    schema = schema if schema is not None else load_schema()
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for err in errors:
            parts = list(err.absolute_path)
            if err.validator == "additionalProperties":
                known = sorted(err.schema.get("properties", {}))
                fix = f"remove it or use one of: {', '.join(known)}"
            else:
                meaning = _schema_at(schema, parts).get("description", "")
                fix = (
                    f"expected: {meaning}" if meaning else "see workflow/schemas/config.schema.yaml"
                )
            lines.append(f"{_key_path(parts)}: {err.message}; {fix}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    check_config(config)
    return config


def check_config(config: dict[str, Any]) -> None:
    """Cross-field rules; raises ConfigError naming the first broken rule."""
    names = [d["name"] for d in config["datasets"]]
    kinds = {d["name"]: d["kind"] for d in config["datasets"]}
    _fail_if(
        len(set(names)) != len(names),
        "datasets",
        f"dataset names must be unique, got {names}",
        "rename the duplicates",
    )
    for i, ds in enumerate(config["datasets"]):
        has_path = ds["hub"].get("path") is not None
        _fail_if(
            ds["source"] == "hub" and not has_path,
            f"datasets[{i}].hub.path",
            f"dataset {ds['name']!r} has source 'hub' but no hub.path",
            "set hub.path to a hub dataset id (e.g. Salesforce/wikitext) or a builder "
            "(text, json, parquet) with hub.data_files",
        )
        _fail_if(
            ds["source"] != "hub" and has_path,
            f"datasets[{i}].hub",
            f"dataset {ds['name']!r} reads the offline source {ds['source']!r}, so its hub "
            "settings would be ignored",
            "remove the hub block or set source: hub",
        )
    for name in config["pretrain"]["datasets"]:
        _fail_if(
            name not in kinds,
            "pretrain.datasets",
            f"{name!r} is not a configured dataset",
            f"use names from datasets: {', '.join(names)}",
        )
        _fail_if(
            kinds[name] != "nlp",
            "pretrain.datasets",
            f"{name!r} is a realworld dataset: pretraining on it would let the base model see the "
            "very strings the unintended-memorisation study measures",
            "pretrain on nlp datasets only",
        )
    _check_data(config["data"])
    model = config["model"]
    _fail_if(
        model["n_embd"] % model["n_head"] != 0,
        "model.n_head",
        f"{model['n_head']} heads do not divide model.n_embd = {model['n_embd']}",
        "choose n_embd as a multiple of n_head",
    )
    if any(kind == "nlp" for kind in kinds.values()):
        _check_canaries(config["canaries"], config["data"])
        _check_exposure(config["evaluate"]["exposure"], config["canaries"])
        _check_dp(config["train_dp"], config["canaries"], config["data"])
        n_canaries = len(config["canaries"]["repetitions"]) * config["canaries"]["per_repetition"]
        _fail_if(
            config["onion"]["remove"] >= n_canaries,
            "onion.remove",
            f"removing {config['onion']['remove']} of the {n_canaries} canaries leaves no "
            "control canary to observe",
            f"set onion.remove below {n_canaries}",
        )


def _check_data(data: dict[str, Any]) -> None:
    held_out = data["validation_fraction"] + data["test_fraction"]
    _fail_if(
        held_out >= 0.9,
        "data.test_fraction",
        f"validation_fraction + test_fraction = {held_out:g} leaves almost nothing to train on",
        "keep their sum below 0.9",
    )
    _fail_if(
        data["min_example_chars"] > data["max_example_chars"],
        "data.min_example_chars",
        f"{data['min_example_chars']} exceeds data.max_example_chars = {data['max_example_chars']}",
        "lower min_example_chars or raise max_example_chars",
    )


def max_train_examples(data: dict[str, Any]) -> int:
    """Upper bound of a training split's size before canaries, from the caps alone."""
    held_out = data["validation_fraction"] + data["test_fraction"]
    return int(data["max_examples"] * (1 - held_out))


def _check_canaries(can: dict[str, Any], data: dict[str, Any]) -> None:
    n_canaries = len(can["repetitions"]) * can["per_repetition"]
    n_forget = len(can["repetitions"]) * can["forget_per_repetition"]
    space = 10 ** can["secret_digits"]
    _fail_if(
        can["forget_per_repetition"] > can["per_repetition"],
        "canaries.forget_per_repetition",
        f"{can['forget_per_repetition']} exceeds canaries.per_repetition = {can['per_repetition']}",
        "lower forget_per_repetition or raise per_repetition",
    )
    _fail_if(
        can["requests"] > n_forget,
        "canaries.requests",
        f"{can['requests']} unlearning requests but only {n_forget} forget canaries, so some "
        "request would be empty",
        "lower requests or raise canaries.forget_per_repetition",
    )
    _fail_if(
        space < MIN_SPACE_PER_CANARY * n_canaries,
        "canaries.secret_digits",
        f"a space of 10^{can['secret_digits']} secrets is too small for {n_canaries} canaries "
        f"(need at least {MIN_SPACE_PER_CANARY} candidates per canary)",
        "raise secret_digits or use fewer canaries",
    )
    bound = max_train_examples(data)
    _fail_if(
        max(can["repetitions"]) > bound,
        "canaries.repetitions",
        f"a canary inserted {max(can['repetitions'])} times would exceed the at most {bound} "
        "training examples allowed by data.max_examples",
        "lower the repetition counts or raise data.max_examples",
    )


def _check_dp(dp: dict[str, Any], can: dict[str, Any], data: dict[str, Any]) -> None:
    """delta must not exceed 1/N. N is only known once the data exist, but the config bounds
    it (capped split plus canary copies); checking against that bound here catches a wrong
    delta before hours of jobs, and train_dp checks the exact N again."""
    if dp["delta"] is None:
        return
    n_max = max_train_examples(data) + sum(can["repetitions"]) * can["per_repetition"]
    _fail_if(
        dp["delta"] > 1 / n_max,
        "train_dp.delta",
        f"{dp['delta']} exceeds 1/N = {1 / n_max:.3g} for the up to N = {n_max} training "
        "sequences this config allows; a delta that large admits publishing an example verbatim",
        "leave train_dp.delta unset (null = 1/N) or choose a smaller value, e.g. 1e-5",
    )


def _check_exposure(exp: dict[str, Any], can: dict[str, Any]) -> None:
    space = 10 ** can["secret_digits"]
    _fail_if(
        exp["estimator"] != "extrapolated" and space > exp["max_exact_space"],
        "evaluate.exposure.estimator",
        f"exact enumeration of |R| = 10^{can['secret_digits']} candidates exceeds "
        f"evaluate.exposure.max_exact_space = {exp['max_exact_space']}",
        "use estimator: extrapolated, or raise max_exact_space (time grows with |R|)",
    )


def _fail_if(condition: bool, key: str, problem: str, fix: str) -> None:
    if condition:
        raise ConfigError(f"{key}: {problem}; {fix}")
