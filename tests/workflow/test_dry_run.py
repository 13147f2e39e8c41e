"""`snakemake -n` on every shipped config overlay: the DAG has the expected jobs per rule.
(Bad configs, refused before any job: test_bad_configs.py.)"""

from __future__ import annotations

import pytest
from snakemake_runner import job_counts, run_snakemake

# Jobs per rule = what the config implies: one prepare_corpus per dataset, one tokenizer and
# base model; per nlp dataset and replicate: canaries, original, retrained, one DP model per
# epsilon, the Fisher, one unlearned model per method and the cycle study per cycle method
# (both score their own models), the onion study (both selections) and two evaluation jobs
# (original + retrained; all DP-SGD models); per real-world dataset and replicate: the
# original, the Fisher, the secrets found, and one unlearned (and re-scored) model per method;
# then the report.
REPORT_RULES = [
    "tabulate_results",
    "tabulate_dp",
    "tabulate_cost",
    "tabulate_realworld",
    "plot_unlearning_trajectories",
    "plot_privacy_utility",
    "plot_unlearning_cycles",
    "plot_weight_changes",
    "plot_onion_effect",
    "plot_fisher_scaling",
]


def expected(datasets, nlp, realworld, replicates, epsilons, methods, cycle_methods):
    per_run, real_runs = nlp * replicates, realworld * replicates
    return {
        "prepare_corpus": datasets,
        "train_tokenizer": 1,
        "inject_canaries": per_run,
        "pretrain_base": 1,
        "finetune": per_run + real_runs,
        "retrain": per_run,
        "train_dp": epsilons * per_run,
        "estimate_fisher": per_run + real_runs,
        "unlearn": methods * per_run,
        "unlearn_realworld": methods * real_runs,
        "unlearn_cycles": cycle_methods * per_run,
        "onion_unlearn": per_run,  # both selections in one job
        "find_secrets": real_runs,
        "evaluate": per_run,  # original and retrained; unlearning jobs score their own models
        "evaluate_dp": per_run,  # every DP-SGD model of the replicate
        "fisher_scaling": 1,
        **dict.fromkeys(REPORT_RULES, 1),
        "all": 1,
    }


EXPECTED = {
    (): expected(
        datasets=6,
        nlp=4,
        realworld=2,
        replicates=1,
        epsilons=3,
        methods=4,
        cycle_methods=2,
    ),
    ("config/smoke.yaml",): expected(
        datasets=3,
        nlp=2,
        realworld=1,
        replicates=1,
        epsilons=2,
        methods=4,
        cycle_methods=2,
    ),
    ("config/paper.yaml",): expected(
        datasets=6,
        nlp=4,
        realworld=2,
        replicates=3,
        epsilons=3,
        methods=4,
        cycle_methods=2,
    ),
}


@pytest.mark.parametrize("overlay", list(EXPECTED), ids=lambda o: o[0] if o else "default")
def test_dry_run_job_counts(workflow_copy, overlay):
    args = ["-n", "--cores", "1"]
    if overlay:
        args += ["--configfile", *overlay]
    proc = run_snakemake(workflow_copy, *args)
    assert job_counts(proc.stdout) == EXPECTED[overlay]
