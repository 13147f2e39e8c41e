"""Every intermediate file is recorded when written and checked when read.

Snakemake decides what to rerun from modification times and recorded inputs, not contents: a
training split cut short, a canary table truncated on a line boundary, or a metrics file
edited by hand would be read and scored as if nothing had happened. So a stage that writes
intermediate tables lists them in its manifest (``files``: bytes, sha256, rows), every reader
checks a file against the ``manifest.json`` beside it before using it, and every result JSON
carries a checksum of its own content. A file that does not match is moved aside (so that the
next ``snakemake`` run rebuilds it: its producer's output is missing) and the reader fails,
naming the file; it is never scored. ``verify_tree`` re-checks a whole results folder (the
``verify`` target).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CHECKSUM = "checksum"  # a result JSON's sha256 of its own content without this key
DAMAGED_SUFFIX = ".damaged"


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rows(path: str | Path) -> int | None:
    """Rows of a table (parquet: its metadata; CSV: lines after the header; a row manifest:
    its indices), None for other files."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".csv":
        with open(path, "rb") as f:
            return max(sum(1 for line in f if line.strip()) - 1, 0)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("indices"), list):
            return len(data["indices"])
    return None


def describe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return {"bytes": path.stat().st_size, "sha256": sha256(path), "rows": rows(path)}


def describe_files(
    paths: Iterable[str | Path], relative_to: str | Path | None = None
) -> dict[str, dict[str, Any]]:
    """The ``files`` section of a manifest: each file by name when it shares the manifest's
    folder, else by its path relative to ``relative_to`` (the manifest's folder)."""
    if relative_to is None:
        return {Path(p).name: describe(p) for p in paths}
    return {os.path.relpath(p, relative_to): describe(p) for p in paths}


def content_checksum(result: dict[str, Any]) -> str:
    body = {k: v for k, v in result.items() if k != CHECKSUM}
    text = json.dumps(body, indent=2, sort_keys=True, allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


class DamagedFile(ValueError):
    """A file that differs from what its producer recorded."""


def _quarantine(path: Path) -> Path:
    aside = path.with_name(path.name + DAMAGED_SUFFIX)
    os.replace(path, aside)
    return aside


def _mismatch(path: Path, recorded: dict[str, Any]) -> str | None:
    if not path.is_file():
        return "it is missing"
    size = path.stat().st_size
    if size != recorded["bytes"]:
        try:
            found = rows(path)
        except Exception:  # a table cut short may not even parse: the size says enough
            found = None
        counted = "" if found is None else f", {found} rows where {recorded['rows']} were written"
        return f"{size} bytes where {recorded['bytes']} were written{counted}"
    if sha256(path) != recorded["sha256"]:
        return "its content differs from what was written (sha256)"
    return None


@cache
def _checked(path: str, mtime_ns: int, size: int) -> None:
    """One check per file version and process (a stage reads the same split many times)."""
    file = Path(path)
    manifest = file.with_name(MANIFEST)
    if file.name == MANIFEST or not manifest.is_file():
        return  # not a recorded intermediate (a test's own file, a temporary request)
    recorded = json.loads(manifest.read_text()).get("files", {}).get(file.name)
    if recorded is None:
        return
    problem = _mismatch(file, recorded)
    if problem:
        aside = _quarantine(file)
        raise DamagedFile(
            f"{file}: {problem} (recorded in {manifest}); it was changed after its stage wrote "
            f"it, so it is not used: moved aside to {aside.name}, and the next snakemake run "
            "rebuilds it"
        )


def check(path: str | Path) -> Path:
    """``path`` after checking it against the manifest beside it; DamagedFile if it differs."""
    path = Path(path)
    stat = path.stat()
    _checked(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return path


def verify_tree(root: str | Path) -> dict[str, list[str]]:
    """Re-check every recorded file and every result's own checksum under ``root``.

    Returns ``changed`` (files that differ from their record: ``path: why``), ``checked``
    (count as one entry per file) and ``unrecorded`` (outputs no manifest lists, e.g. tables).
    """
    root = Path(root)
    changed, checked, recorded = [], [], set()
    for result in sorted(root.rglob("*.json")):
        try:
            data = json.loads(result.read_text())
        except (OSError, json.JSONDecodeError) as err:
            changed.append(f"{result}: not readable JSON ({err})")
            continue
        if not isinstance(data, dict):
            continue
        if CHECKSUM in data:
            checked.append(str(result))
            if content_checksum(data) != data[CHECKSUM]:
                changed.append(f"{result}: its content differs from what its stage wrote")
        for name, entry in data.get("files", {}).items():
            file = Path(os.path.normpath(result.parent / name))
            recorded.add(file)
            checked.append(str(file))
            problem = _mismatch(file, entry)
            if problem:
                changed.append(f"{file}: {problem} (recorded in {result.name})")
    skip = ("logs", "benchmarks", "checkpoints")
    unrecorded = [
        str(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and p.suffix != ".json"
        and p not in recorded
        and not any(part in skip for part in p.relative_to(root).parts)
    ]
    return {"changed": changed, "checked": checked, "unrecorded": unrecorded}
