"""Shared fixtures: the package on sys.path, and a throw-away copy of the workflow."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from snakemake_runner import REPO, copy_workflow

sys.path.insert(0, str(REPO / "workflow"))


@pytest.fixture
def workflow_copy(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "wf")
