"""One run of the whole smoke study, shared by the integration tests."""

from __future__ import annotations

import pytest
from snakemake_runner import SMOKE, copy_workflow, run_snakemake


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    wf = copy_workflow(tmp_path_factory.mktemp("smoke") / "wf")
    run_snakemake(wf, "all", "--cores", "2", *SMOKE)
    return wf
