"""Every job of the smoke study ran only package code its rule lists as ``code=`` inputs.

Measured, not derived: each result's provenance lists the ``unlearnbench`` modules its process
had loaded when the result was written (function-level imports included, as they ran), and
Snakemake's own record of the job (``.snakemake/metadata``) lists the inputs the rule declared.
A module that ran but is not an input would be an edit that reruns nothing.
"""

from __future__ import annotations

import json
import os
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest
from unlearnbench.import_graph import module_file

pytestmark = pytest.mark.slow


def job_record(study: Path, output: str) -> dict | None:
    """Snakemake's metadata record of the job that wrote ``output`` (a path relative to the
    study): a file named by the path's urlsafe base64, cut into folders of at most NAME_MAX - 1
    characters, each but the last marked with "@" (snakemake/persistence/file.py)."""
    folder = study / ".snakemake" / "metadata"
    size = os.pathconf(folder, "PC_NAME_MAX") - 1
    encoded = urlsafe_b64encode(output.encode()).decode()
    parts = [encoded[i : i + size] for i in range(0, len(encoded), size)]
    path = folder.joinpath(*["@" + part for part in parts[:-1]], parts[-1])
    return json.loads(path.read_text()) if path.is_file() else None


def test_every_module_a_job_loaded_is_among_its_rules_code_inputs(smoke_study):
    package = smoke_study / "workflow" / "unlearnbench"
    checked = set()
    for result in sorted((smoke_study / "results").rglob("*.json")):
        relative = str(result.relative_to(smoke_study))
        manifest = json.loads(result.read_text())
        if not isinstance(manifest, dict) or "modules" not in manifest.get("provenance", {}):
            continue
        record = job_record(smoke_study, relative)
        assert record is not None, f"{relative}: no Snakemake record of the job that wrote it"
        inputs = set(record["input"])
        for module in manifest["provenance"]["modules"]:
            file = module_file(module, package)
            assert file is not None, f"{relative}: {module} is not a package file"
            expected = str(file.relative_to(smoke_study))
            assert expected in inputs, f"rule {record['rule']} ran {module}, not a code= input"
        checked.add(record["rule"])
    # every rule that records provenance was seen (the report rules write tables, not JSON)
    assert {
        "prepare_corpus",
        "finetune",
        "sweep_frontier",
        "evaluate",
        "unlearn_realworld",
    } <= checked
