"""`snakemake -n` on every shipped config overlay: the DAG has the expected jobs per rule."""

from __future__ import annotations

import pytest
from snakemake_runner import job_counts, run_snakemake


# Jobs per rule = what the config implies: one prepare_corpus per dataset, one tokenizer and
# base model, one inject_canaries / finetune / retrain per nlp dataset and replicate, one
# train_dp per replicate and epsilon; every trained model is evaluated.
def expected(datasets, nlp, replicates, epsilons):
    per_run = nlp * replicates
    return {
        "prepare_corpus": datasets,
        "train_tokenizer": 1,
        "inject_canaries": per_run,
        "pretrain_base": 1,
        "finetune": per_run,
        "retrain": per_run,
        "train_dp": epsilons * per_run,
        "evaluate": (2 + epsilons) * per_run,
        "all": 1,
    }


EXPECTED = {
    (): expected(datasets=6, nlp=4, replicates=1, epsilons=3),
    ("config/smoke.yaml",): expected(datasets=3, nlp=2, replicates=1, epsilons=2),
    ("config/paper.yaml",): expected(datasets=6, nlp=4, replicates=3, epsilons=3),
}


@pytest.mark.parametrize("overlay", list(EXPECTED), ids=lambda o: o[0] if o else "default")
def test_dry_run_job_counts(workflow_copy, overlay):
    args = ["-n", "--cores", "1"]
    if overlay:
        args += ["--configfile", *overlay]
    proc = run_snakemake(workflow_copy, *args)
    assert job_counts(proc.stdout) == EXPECTED[overlay]


@pytest.mark.parametrize(
    ("overlay_text", "key"),
    [
        ("data:\n  max_examples: -5\n", "data.max_examples"),
        ("canaries:\n  bogus: 1\n", "canaries"),
        ("pretrain:\n  datasets: [usenet]\n", "pretrain.datasets"),
    ],
)
def test_bad_config_fails_before_any_job(workflow_copy, overlay_text, key):
    (workflow_copy / "bad.yaml").write_text(overlay_text)
    proc = run_snakemake(
        workflow_copy, "-n", "--cores", "1", "--configfile", "bad.yaml", check=False
    )
    assert proc.returncode != 0
    assert f"{key}:" in proc.stdout + proc.stderr
    assert not (workflow_copy / "results").exists()
