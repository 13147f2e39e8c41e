"""Offline runs: every hub asset the config needs must already be in the local cache.

With ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) nothing can be downloaded, so a hub
dataset or model missing from the cache would fail hours into a run, in the job that first
loads it. Checked here before any job, naming every missing asset and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..hub_snapshots import hub_cache
from .hub_model import missing_files
from .schema import ConfigError

TRUE = {"1", "true", "yes", "on"}
URL_PREFIXES = ("http://", "https://", "hf://", "s3://", "gs://")


OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def offline(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name, "").lower() in TRUE for name in OFFLINE_VARIABLES)


def _datasets_cache(environ: Mapping[str, str]) -> Path:
    home = Path(environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return Path(environ.get("HF_DATASETS_CACHE", home / "datasets"))


def _cached_dataset(hub: Mapping[str, Any], environ: Mapping[str, str]) -> bool:
    """A hub dataset repository in the hub cache, or prepared in the datasets cache."""
    path = hub["path"]
    repo = hub_cache(environ) / f"datasets--{path.replace('/', '--')}" / "snapshots"
    prepared = _datasets_cache(environ) / path.replace("/", "___")
    return (repo.is_dir() and any(repo.iterdir())) or prepared.is_dir()


def _data_files(hub: Mapping[str, Any]) -> list[str]:
    files = hub.get("data_files")
    return [] if files is None else [files] if isinstance(files, str) else list(files)


def missing_assets(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> list:
    """``(key, asset, why)`` for every hub asset an offline run would need but not find."""
    missing = []
    for i, ds in enumerate(config["datasets"]):
        if ds["source"] != "hub":
            continue
        hub = ds["hub"]
        files = _data_files(hub)
        if files:  # a builder (text, json, parquet) over data files
            for f in files:
                if f.startswith(URL_PREFIXES):
                    missing.append((f"datasets[{i}].hub.data_files", f, "a remote file"))
                elif not Path(f).exists():
                    missing.append((f"datasets[{i}].hub.data_files", f, "no such local file"))
        elif not _cached_dataset(hub, environ):
            missing.append((f"datasets[{i}].hub.path", hub["path"], "not in the local cache"))
    model = config.get("model", {"source": "scratch"})  # the schema's default
    if model["source"] != "scratch":
        lacking = missing_files(model, environ)
        if lacking:
            missing.append(("model.source", f"{model['source']}@{model['revision']}", lacking))
    return missing


def check_offline(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> None:
    if not offline(environ):
        return
    missing = missing_assets(config, environ)
    if missing:
        lines = [
            f"{key}: {asset!r} is {why}, and this run is offline ({' or '.join(OFFLINE_VARIABLES)} "
            "set); load it once into this cache on a machine with network, or unset the variable"
            for key, asset, why in missing
        ]
        raise ConfigError("hub assets missing for an offline run:\n  " + "\n  ".join(lines))
