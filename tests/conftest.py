"""Shared fixtures: the package on sys.path, and a throw-away copy of the workflow."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from snakemake_runner import REPO, SMOKE, copy_workflow, run_snakemake

sys.path.insert(0, str(REPO / "workflow"))


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "wf")


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> Path:
    """One run of the whole smoke study (every rule), shared by the integration and rerun
    tests. Tests that change files work on a copy (``study_copy``), never on this one."""
    wf = copy_workflow(tmp_path_factory.mktemp("smoke") / "wf")
    run_snakemake(wf, "all", "--cores", "2", *SMOKE)
    return wf


@pytest.fixture
def study_copy(smoke_study, tmp_path) -> Path:
    """A private copy of the completed smoke study, mtimes and Snakemake metadata included."""
    dest = tmp_path / "study"
    shutil.copytree(smoke_study, dest, symlinks=True)
    return dest
