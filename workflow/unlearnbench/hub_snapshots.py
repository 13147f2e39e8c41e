"""Where a hub model's files sit on this machine: the hub cache's snapshot of a revision.

Standard library only, and apart from the config checks (``settings.hub_model``), so that the
stages that record a hub model's resolved commit (the tokenizer and base-model fetches) do not
import the config machinery: an edit of a config check reruns no job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache(environ: Mapping[str, str] = os.environ) -> Path:
    """The hub cache folder huggingface_hub uses under these environment variables."""
    home = Path(environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return Path(environ.get("HF_HUB_CACHE", environ.get("HUGGINGFACE_HUB_CACHE", home / "hub")))


def is_local(source: str) -> bool:
    return Path(source).is_dir()


def snapshot(
    source: str, revision: str | None, environ: Mapping[str, str] = os.environ
) -> Path | None:
    """The folder holding ``source`` at ``revision`` on this machine, or None (not cached)."""
    if is_local(source):
        return Path(source)
    if revision is None:
        return None
    repo = hub_cache(environ) / f"models--{source.replace('/', '--')}"
    commit = revision
    if not COMMIT.match(revision):  # a branch or tag: the cache records its commit in refs/
        ref = repo / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    folder = repo / "snapshots" / commit
    return folder if folder.is_dir() else None


def commit_of(
    source: str, revision: str | None, environ: Mapping[str, str] = os.environ
) -> str | None:
    """The commit a hub model's ``revision`` resolves to in the local cache (None: a local
    directory, or not cached), for manifests."""
    if is_local(source):
        return None
    folder = snapshot(source, revision, environ)
    return None if folder is None else folder.name
