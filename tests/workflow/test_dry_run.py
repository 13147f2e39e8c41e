"""`snakemake -n` on every shipped config overlay: the DAG has the expected jobs per rule.
(Bad configs, refused before any job: test_bad_configs.py.)"""

from __future__ import annotations

import os

import pytest
from snakemake_runner import job_counts, run_snakemake

# Jobs per rule = what the config implies: one prepare_corpus per dataset (pretraining-only
# ones included), one tokenizer and base model; per nlp dataset and replicate: canaries, the
# original, two retrains (the target and its twin), the Fisher, one frontier per method, one
# evaluate job (retrained, original, twin); per nlp dataset and DP replicate: a DP model per
# epsilon and one evaluate_dp job; per cycle replicate one cycle job per cycle method; per
# onion replicate the onion study; per real-world dataset and real-world replicate: the
# original, the Fisher, the secrets found, one unlearned (and re-scored) model per method;
# then the report.
REPORT_RULES = [
    "tabulate_results",
    "tabulate_claims",
    "tabulate_dp",
    "tabulate_cost",
    "tabulate_realworld",
    "plot_privacy_utility",
    "plot_unlearning_cycles",
    "plot_weight_changes",
    "plot_onion_effect",
    "plot_realworld",
    "plot_fisher_scaling",
]


def expected(
    datasets,
    nlp,
    realworld,
    replicates,
    epsilons,
    methods,
    cycle_methods,
    side_replicates,
    realworld_methods,
    requests=2,
    hub=False,
):
    """``hub``: the model comes from the hub with its tokenizer (fetched, not trained);
    ``side_replicates``: how many replicates the DP, cycle, onion and real-world studies
    run on (their own `replicates` subsets); ``realworld_methods``: the real-world study's
    methods (its Fisher is estimated because Fisher Removal is among them); ``requests``: the
    cycle study's K."""
    runs, side = nlp * replicates, nlp * side_replicates
    real_runs = realworld * side_replicates
    counts = {
        "prepare_corpus": datasets,
        "fetch_tokenizer" if hub else "train_tokenizer": 1,
        "inject_canaries": runs,
        "fetch_base_model" if hub else "pretrain_base": 1,
        "finetune": runs + real_runs,
        # the retrained model and its twin; each cycle request's but the last; the onion
        # study's four retrained arms (original, masked, random, reorder)
        "retrain": 2 * runs + (requests - 1) * side + 4 * side,
        "cycle_request": (requests - 1) * side,
        "inject_onion_canaries": side,
        "evaluate_cycle_retrains": side if requests > 1 else 0,
        "evaluate_onion": side,
        "retrain_realworld": 2 * real_runs,  # the gold standard and its twin
        "train_dp": epsilons * side,
        "estimate_fisher": runs + real_runs,
        "sweep_frontier": methods * runs,
        "unlearn_realworld": realworld_methods * real_runs,
        "unlearn_cycles": cycle_methods * side,
        "onion_unlearn": side,  # the unlearned arm, saved and scored
        "find_secrets": real_runs,
        "evaluate": runs,  # retrained, original and its twin; frontiers score their own
        "evaluate_dp": side if epsilons else 0,  # every DP-SGD model of the replicate
        "fisher_scaling": 1,
        **dict.fromkeys(REPORT_RULES, 1),
        "all": 1,
    }
    return {rule: n for rule, n in counts.items() if n}  # a rule without jobs is not listed


EXPECTED = {
    (): expected(
        datasets=5,
        nlp=2,
        realworld=1,
        replicates=3,
        epsilons=2,
        methods=6,
        cycle_methods=2,
        side_replicates=1,
        realworld_methods=3,
        requests=3,
    ),
    ("config/smoke.yaml",): expected(
        datasets=3,
        nlp=2,
        realworld=1,
        replicates=2,
        epsilons=2,
        methods=6,
        cycle_methods=2,
        side_replicates=1,
        realworld_methods=3,
        requests=1,
    ),
    ("config/paper.yaml",): expected(
        datasets=6,
        nlp=4,
        realworld=2,
        replicates=3,
        epsilons=4,
        methods=7,
        cycle_methods=2,
        side_replicates=3,
        realworld_methods=7,
        requests=3,
        hub=True,  # fetch_tokenizer and fetch_base_model; no train_tokenizer, no pretrain_base
    ),
    ("config/paper.yaml", "config/paper_smoke.yaml"): expected(
        datasets=1,
        nlp=1,
        realworld=0,
        replicates=1,
        epsilons=1,  # one DP-SGD model on the hub OPT, no noise-free control
        methods=2,
        cycle_methods=1,
        side_replicates=1,
        realworld_methods=0,
        requests=1,
        hub=True,
    ),
}


@pytest.mark.parametrize("overlay", list(EXPECTED), ids=lambda o: o[0] if o else "default")
def test_dry_run_job_counts(workflow_copy, overlay, tmp_path):
    args = ["-n", "--cores", "1"]
    if overlay:
        args += ["--configfile", *overlay]
    # An empty hub cache: planning a hub model reads no network and no cached model. The paper
    # scale is planned for a cluster node (its Fisher alone needs over 100 GB: the local
    # machine's memory would refuse it), as UNLEARNBENCH_MACHINE_MB lets a login node do.
    env = {**os.environ, "HF_HOME": str(tmp_path / "empty"), "UNLEARNBENCH_MACHINE_MB": "2097152"}
    proc = run_snakemake(workflow_copy, *args, env=env)
    assert job_counts(proc.stdout) == EXPECTED[overlay]
