"""Checking a configuration before any job runs, so that a wrong config fails in seconds with
``<key>: <problem>; <fix>`` instead of hours later in a job.

- ``files``: each config file read strictly (a mapping, no key twice, values the schema takes).
- ``schema``: the merged config against the JSON schema (strict integers, finite numbers,
  closed objects, bounds); defaults filled in.
- ``rules``: cross-field rules a schema cannot express (``hub_model``: a hub model's pinned
  revision, and a cached one's vocabulary against its tokenizer).
- ``offline``: with HF_HUB_OFFLINE, every hub asset already in the local cache.
The resource plan (``unlearnbench.planner``) follows once the rules' resources are known.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .files import check_config_files, read_config_file
from .offline import check_offline
from .rules import (
    MIN_SPACE_PER_CANARY,
    NOISE_FREE_LABEL,
    check_config,
    dp_epsilons,
    eps_label,
    max_train_examples,
    resolve_dp_budget,
)
from .schema import ConfigError, load_schema, schema_errors

__all__ = [
    "MIN_SPACE_PER_CANARY",
    "NOISE_FREE_LABEL",
    "ConfigError",
    "check_config",
    "check_config_files",
    "check_offline",
    "dp_epsilons",
    "eps_label",
    "exit_on_config_error",
    "load_schema",
    "max_train_examples",
    "read_config_file",
    "resolve_dp_budget",
    "validate_config",
    "without",
]


def without(block: dict[str, Any], *keys: str) -> dict[str, Any]:
    """A config block minus the keys that only choose jobs (which replicates run a study), not
    what a job computes: the rest is the job's params, so changing those keys reruns nothing."""
    return {key: value for key, value in block.items() if key not in keys}


def validate_config(config: dict[str, Any], schema: dict[str, Any] | None = None) -> dict:
    """Validate ``config`` in place (defaults filled) and return it; raise ConfigError."""
    if not isinstance(config, dict):
        raise ConfigError(
            f"<top level>: the config is a {type(config).__name__}, not a mapping; "
            "write config files as `key: value` lines"
        )
    schema = schema if schema is not None else load_schema()
    lines = schema_errors(config, schema)
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    resolve_dp_budget(config)
    check_config(config)
    check_offline(config)
    return config


@contextmanager
def exit_on_config_error() -> Iterator[None]:
    """In the Snakefile: a ConfigError ends Snakemake with its message alone (no traceback:
    the message names the key and the fix); any other error is a bug and keeps its trace."""
    try:
        yield
    except ConfigError as err:
        sys.exit(f"unlearnbench: {err}")
