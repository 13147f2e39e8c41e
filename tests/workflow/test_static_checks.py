"""Lint and format checks, as tests so that the README's one test command runs them too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from snakemake_runner import REPO, run_snakemake

BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_snakemake_lint(workflow_copy):
    proc = run_snakemake(workflow_copy, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "cmd",
    [
        ("snakefmt", "--check", "Snakefile", "workflow/rules"),
        ("ruff", "check", "."),
        ("ruff", "format", "--check", "."),
    ],
    ids=lambda cmd: " ".join(cmd[:2]),
)
def test_code_style(cmd):
    proc = _run(str(BIN / cmd[0]), *cmd[1:])
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"


def test_conda_env_matches_requirements():
    """envs/unlearnbench.yaml (for --sdm conda) pins the same versions as envs/requirements.txt."""
    import yaml

    def pins(lines):
        out = {}
        for line in lines:
            line = line.split("#")[0].strip()
            if "==" in line:
                name, version = line.split("==")
                out[name.strip().lower()] = version.strip()
        return out

    requirements = pins((REPO / "envs/requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs/unlearnbench.yaml").read_text())
    conda_pip = pins(next(d for d in env["dependencies"] if isinstance(d, dict))["pip"])
    for name, version in conda_pip.items():
        if name != "torch":
            assert requirements.get(name) == version, (
                f"{name}: conda {version}, pip {requirements.get(name)}"
            )
    runtime = {n for n in requirements if n not in {"pytest", "ruff", "snakefmt"}}
    runtime -= {n for n in runtime if n.startswith("snakemake")}
    assert runtime <= set(conda_pip), f"missing from the conda env: {runtime - set(conda_pip)}"
