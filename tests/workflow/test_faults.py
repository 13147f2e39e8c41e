"""Faults lose nothing: a killed training resumes bitwise, a failing job leaves no partial
output while other branches finish, a second run in the same directory is refused by the lock,
damaged model or Fisher files stop with an error naming the file and the fix, a truncated
table is named, never scored and rebuilt by the next run, and `snakemake verify` lists what
was changed by hand.

All tests work on a private copy of the completed smoke study (``study_copy``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from snakemake_runner import SNAKEMAKE, run_snakemake

pytestmark = pytest.mark.slow

ORIGINAL = "results/models/news/seed~0/original"
CHECKPOINTS = "results/checkpoints/finetune/news/seed~0"
# Longer fine-tuning with a checkpoint after every step, so the run can be caught mid-epoch.
SLOW_FINETUNE = "train:\n  finetune:\n    epochs: 30\n    checkpoint_every: 1\n"
CONFIGS = ("--configfile", "config/smoke.yaml", "faults.yaml")


def start(study: Path, *args: str) -> subprocess.Popen:
    """snakemake in its own process group (so the test can stop or kill the whole run)."""
    return subprocess.Popen(
        [SNAKEMAKE, *args],
        cwd=study,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def checkpoint_written(study: Path) -> bool:
    folder = study / CHECKPOINTS
    return folder.is_dir() and any(p.suffix == ".json" for p in folder.iterdir())


def test_killed_training_resumes_bitwise_and_a_second_run_is_locked_out(study_copy):
    study = study_copy
    (study / "faults.yaml").write_text(SLOW_FINETUNE)
    target = f"{ORIGINAL}/train.json"
    shutil.rmtree(study / ORIGINAL)

    run = start(study, target, "--cores", "1", *CONFIGS)
    try:
        wait_for(lambda: checkpoint_written(study), 300, "the first training checkpoint")
        os.killpg(run.pid, signal.SIGSTOP)  # frozen mid-training, holding the lock
        second = run_snakemake(study, target, "--cores", "1", *CONFIGS, check=False)
        assert second.returncode != 0
        assert "lock" in (second.stdout + second.stderr).lower()
        os.killpg(run.pid, signal.SIGKILL)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    assert not (study / ORIGINAL / "model.safetensors").exists()

    run_snakemake(study, "--unlock", *CONFIGS)
    resumed = run_snakemake(study, target, "--cores", "1", "--rerun-incomplete", *CONFIGS)
    log = (study / "results/logs/finetune/news/seed~0.log").read_text()
    assert "resuming from step" in log, resumed.stdout[-2000:]
    resumed_bytes = (study / ORIGINAL / "model.safetensors").read_bytes()
    assert not checkpoint_written(study)  # removed once training completed

    shutil.rmtree(study / ORIGINAL)
    run_snakemake(study, target, "--cores", "1", *CONFIGS)
    assert (study / ORIGINAL / "model.safetensors").read_bytes() == resumed_bytes


def test_failing_job_leaves_nothing_and_other_branches_finish(study_copy):
    study = study_copy
    # Epsilon 0.001 at delta = 1/N: reachable for the fewest sequences the config allows (the
    # 36 canary copies: delta 1/36), so the config check lets it through, but no noise reaches
    # it on the 196 sequences the smoke data hold (PRV spends 0.0049 even at noise 1000): the
    # train_dp job fails for it. (An epsilon out of reach for every N is refused before any
    # job: tests/unit/settings/test_dp_rules.py.)
    (study / "faults.yaml").write_text("train_dp:\n  epsilons: [1, 8, 0.001]\n  delta: null\n")
    (study / "results/eval/news/seed~0/original.json").unlink()
    proc = run_snakemake(study, "all", "--cores", "2", "--keep-going", *CONFIGS, check=False)
    assert proc.returncode != 0
    assert (study / "results/eval/news/seed~0/original.json").stat().st_size > 0
    for dataset in ("news", "python_docs"):
        failed = study / f"results/models/{dataset}/seed~0/dp_eps~0.001"
        assert not (failed / "model.safetensors").exists()
        assert not (failed / "train.json").exists()
        log = study / f"results/logs/train_dp/{dataset}/seed~0/eps~0.001.log"
        assert "train_dp.epsilons: target epsilon 0.001 is unreachable" in log.read_text()


@pytest.mark.parametrize(
    ("damaged", "target", "message"),
    [
        (
            f"{ORIGINAL}/model.safetensors",
            "results/eval/news/seed~0/original.json",
            "model files are corrupted or truncated",
        ),
        (
            "results/fisher/news/seed~0/fisher.safetensors",
            "results/frontier/news/seed~0/fisher_removal.json",
            "corrupted or truncated",
        ),
    ],
)
def test_damaged_files_give_a_clear_error(study_copy, damaged, target, message):
    study = study_copy
    path = study / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (study / "faults.yaml").write_text("{}\n")
    proc = run_snakemake(study, target, "--cores", "1", "--force", *CONFIGS, check=False)
    assert proc.returncode != 0
    logs = "\n".join(p.read_text() for p in (study / "results/logs").rglob("*.log"))
    text = proc.stdout + proc.stderr + logs
    assert f"{Path(damaged).name}" in text or str(Path(damaged).parent) in text
    assert message in text
    assert "delete" in text  # the fix: delete it and rerun the rule that produces it


CANARIES = "results/canaries/news/seed~0/canaries.csv"
ORIGINAL_METRICS = "results/eval/news/seed~0/original.json"


@pytest.mark.parametrize("cut", ["mid_line", "line_boundary"])
def test_a_truncated_table_is_named_never_scored_and_rebuilt(study_copy, cut):
    """A canary table cut short was read as it was: mid-line it failed with a traceback that did
    not name the file, on a line boundary it was scored with 2 of 4 canaries."""
    study = study_copy
    table = study / CANARIES
    original = table.read_bytes()
    lines = original.splitlines(keepends=True)
    table.write_bytes(b"".join(lines[:3]) + (lines[3][:7] if cut == "mid_line" else b""))
    metrics = (study / ORIGINAL_METRICS).read_text()
    (study / "faults.yaml").write_text("{}\n")
    proc = run_snakemake(
        study, ORIGINAL_METRICS, "--cores", "1", "--forcerun", "evaluate", *CONFIGS, check=False
    )
    log = (study / "results/logs/evaluate/news/seed~0.log").read_text()
    assert proc.returncode != 0
    assert f"{CANARIES}: " in log and "the next snakemake run rebuilds it" in log, log[-2000:]
    assert not table.exists() and table.with_name("canaries.csv.damaged").exists()
    # the next run rebuilds the table (its stage's output is missing) and scores again
    run_snakemake(study, ORIGINAL_METRICS, "--cores", "1", *CONFIGS)
    assert table.read_bytes() == original

    def without_run_details(text: str) -> dict:
        data = json.loads(text)
        return {k: v for k, v in data.items() if k not in ("provenance", "cost", "checksum")}

    assert without_run_details((study / ORIGINAL_METRICS).read_text()) == without_run_details(
        metrics
    )


def test_verify_lists_a_result_edited_by_hand(study_copy):
    study = study_copy
    clean = run_snakemake(study, "verify", "--cores", "1", *CONFIGS[:2])
    assert "recorded files are as their stages wrote them" in clean.stdout + clean.stderr
    metrics = study / ORIGINAL_METRICS
    data = json.loads(metrics.read_text())
    data["summary"]["exposure_exact_forget_mean"] = 0.0  # a better-looking number
    metrics.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    split = study / "results/data/news/test.parquet"
    split.write_bytes(split.read_bytes()[:-10])
    proc = run_snakemake(study, "verify", "--cores", "1", *CONFIGS[:2], check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{ORIGINAL_METRICS}: its content differs from what its stage wrote" in out, out
    assert "results/data/news/test.parquet: " in out and "2 of " in out
