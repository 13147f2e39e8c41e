"""Running the workflow from tests: a throw-away copy of a checkout and a snakemake wrapper.

A plain module (not conftest) so test files in any folder can import it by name.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "envs", "pyproject.toml")


def copy_workflow(dest: Path) -> Path:
    """Copy what a user's checkout holds (no results, caches or venv) into ``dest``."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".snakemake", "results")
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


def run_without_torch(code: str) -> None:
    """Run ``code`` in a fresh interpreter at the repository root (``workflow`` and ``tests`` on
    its path); it must succeed and never import torch (what the DAG build may import)."""
    script = f"import sys; sys.path[:0] = ['workflow', 'tests']\n{code}\n" + (
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, timeout: float = 900, env: dict | None = None
):
    """Run snakemake in ``workdir``; on failure show its output in the assertion message."""
    proc = subprocess.run(
        [SNAKEMAKE, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table that `snakemake -n` prints: {rule: count}."""
    counts = {}
    table = output.split("Job stats:", 1)[-1]
    for line in table.splitlines():
        match = re.fullmatch(r"\s*([A-Za-z_]\w*)\s+(\d+)\s*", line)
        if match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
    return counts


# The overlay every end-to-end test runs with (seconds per rule).
SMOKE = ("--configfile", "config/smoke.yaml")


def merged(base: dict, overlay: dict) -> dict:
    """Snakemake's overlay rule: objects merge key by key, everything else is replaced."""
    out = dict(base)
    for key, value in overlay.items():
        both_dicts = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = merged(base[key], value) if both_dicts else value
    return out


def config_of(*names: str) -> dict:
    """A config as Snakemake builds it from config/<name> files: the first, then overlays."""
    config: dict = {}
    for name in names:
        config = merged(config, yaml.safe_load((REPO / "config" / name).read_text()))
    return config
