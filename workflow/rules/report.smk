# Tables and figures of the study, and the front page of `snakemake --report`.
# Each rule reads exactly the metrics it shows, so a change reruns only what depends on it.
# Include this file last: the cost table lists the benchmark files of every other rule.
# Path helpers live in unlearnbench.reporting.paths (imported in common.smk; the linter wants
# no functions here). Table and figure jobs are light (seconds, no torch): they run on the
# machine that runs Snakemake (localrules), with the profile's default resources.


report: "../report/workflow.rst"


PER_REPLICATE = {"dataset": NLP_DATASETS, "seed": REPLICATES}
REFERENCE_MODELS = ["original", *RETRAINED_MODELS]
FRONTIERS = paths.expand_grid(paths.FRONTIER, **PER_REPLICATE, method=METHODS)
# Real-world case study: a string counts as removed below this score (bits, realworld config);
# the table shows this many strings (plus every indelible one).
REMOVED_BELOW_BITS = config["realworld"]["removed_below"]
MAX_SECRET_ROWS = 50
# Values of each wildcard in other rules' benchmark paths, for the cost table (jobs = all
# combinations); a rule whose benchmark uses another wildcard fails with its name when the DAG
# is built. Rules that run on other datasets or models than the nlp default say so below.
COST_WILDCARDS = {
    "dataset": NLP_DATASETS,
    "seed": REPLICATES,
    "method": METHODS,
    "eps": EPSILONS,
}
COST_WILDCARDS["retrain"] = RETRAINED_MODELS
REALWORLD_RUNS = {"dataset": REALWORLD_DATASETS, "seed": REALWORLD_REPLICATES}
# Rules whose jobs are not every combination: a list of value sets, their jobs' union.
COST_OVERRIDES = {
    "prepare_corpus": [{"dataset": DATASETS}],
    "finetune": [{}, REALWORLD_RUNS],
    # the real-world corpus gets a Fisher only when one of its methods reads it
    "estimate_fisher": [{}]
    + ([REALWORLD_RUNS] if any(needs_fisher(m) for m in REALWORLD_METHODS) else []),
    "retrain": [
        {},
        {"seed": CYCLE_REPLICATES, "retrain": CYCLE_RETRAINS},
        {"seed": ONION_REPLICATES, "retrain": ONION_RETRAINS},
    ],
    "retrain_realworld": [{**REALWORLD_RUNS, "retrain": REALWORLD_RETRAINS}],
    "evaluate_cycle_retrains": [{"seed": CYCLE_REPLICATES}],
    "inject_onion_canaries": [{"seed": ONION_REPLICATES}],
    "evaluate_onion": [{"seed": ONION_REPLICATES}],
    "train_dp": [{"seed": DP_REPLICATES}],
    "evaluate_dp": [{"seed": DP_REPLICATES}],
    "unlearn_cycles": [{"seed": CYCLE_REPLICATES, "method": config["unlearn"]["cycle_methods"]}],
    "onion_unlearn": [{"seed": ONION_REPLICATES}],
    "find_secrets": [REALWORLD_RUNS],
    "unlearn_realworld": [{**REALWORLD_RUNS, "method": REALWORLD_METHODS}],
}


localrules:
    tabulate_results,
    tabulate_claims,
    tabulate_dp,
    tabulate_cost,
    tabulate_realworld,
    plot_privacy_utility,
    plot_unlearning_cycles,
    plot_weight_changes,
    plot_onion_effect,
    plot_realworld,
    plot_fisher_scaling,
    verify,


rule tabulate_results:
    """Main table: every method at its two operating points (matched erasure, matched
    utility) beside the original, the retrained model and its twin (noise floor)."""
    input:
        evaluations=paths.expand_grid(paths.EVALUATION, **PER_REPLICATE, model=REFERENCE_MODELS),
        frontiers=FRONTIERS,
        code=code("tabulate_results"),
    output:
        **paths.table_outputs("main_results", report),
    log:
        log_path("tabulate_results"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
    script:
        "../scripts/tabulate_results.py"


rule tabulate_claims:
    """Each claim of config.claims judged: the fair protocol's on the verdict datasets'
    replicates, the side studies' (claims.studies) on theirs: estimate, CI (two-level
    bootstrap: replicates, then canaries or strings), Holm-corrected p and verdict."""
    input:
        frontiers=paths.expand_grid(
            paths.FRONTIER, dataset=VERDICT_DATASETS, seed=REPLICATES, method=METHODS
        ),
        # The side studies' files (claims.studies): every study model's metrics beside the
        # original and retrained ones of its replicates, the onion study's canary tables,
        # the case study's scored strings.
        study_evaluations=sorted(
            set(
                paths.expand_grid(
                    paths.EVALUATION,
                    dataset=NLP_DATASETS,
                    seed=CYCLE_REPLICATES,
                    model=["retrained", *CYCLE_RETRAINS, *CYCLE_MODELS],
                )
                + paths.expand_grid(
                    paths.EVALUATION,
                    dataset=NLP_DATASETS,
                    seed=ONION_REPLICATES,
                    model=ONION_MODELS,
                )
                + paths.expand_grid(
                    paths.EVALUATION,
                    dataset=NLP_DATASETS,
                    seed=DP_REPLICATES,
                    model=["original", "retrained", *DP_MODELS],
                )
            )
        ),
        onion_canaries=paths.expand_grid(
            f"{paths.ONION_DATA}/canaries.csv", dataset=NLP_DATASETS, seed=ONION_REPLICATES
        ),
        secrets=paths.expand_grid(
            paths.SECRETS,
            dataset=REALWORLD_DATASETS,
            seed=REALWORLD_REPLICATES,
            model=["retrained", *(f"unlearned~{method}" for method in REALWORLD_METHODS)],
        ),
        code=code("tabulate_claims"),
    output:
        **paths.table_outputs("claims", report),
    log:
        log_path("tabulate_claims"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        rules=config["claims"]["rules"],
        studies=config["claims"]["studies"],
        datasets=VERDICT_DATASETS,
        bootstrap=config["claims"]["bootstrap"],
        confirmatory_replicates=config["claims"]["confirmatory_replicates"],
    script:
        "../scripts/tabulate_claims.py"


rule tabulate_dp:
    """DP-SGD at every epsilon beside the original and the retrained models."""
    input:
        evaluations=paths.expand_grid(
            paths.EVALUATION, dataset=NLP_DATASETS, seed=DP_REPLICATES, model=REFERENCE_MODELS
        )
        + paths.expand_grid(
            paths.EVALUATION, dataset=NLP_DATASETS, seed=DP_REPLICATES, model=DP_MODELS
        ),
        manifests=paths.expand_grid(
            paths.TRAIN_MANIFEST, dataset=NLP_DATASETS, seed=DP_REPLICATES, model=DP_MODELS
        ),
        code=code("tabulate_dp"),
    output:
        **paths.table_outputs("dp_privacy_utility", report),
    log:
        log_path("tabulate_dp"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
        repetitions=sorted(set(config["canaries"]["repetitions"])),
    script:
        "../scripts/tabulate_dp.py"


rule tabulate_cost:
    """Wall time and peak memory of every stage, from the benchmark files, grouped by rule."""
    input:
        benchmarks=lambda wildcards: paths.stage_benchmarks(
            workflow.rules,
            lambda rule: [{**COST_WILDCARDS, **o} for o in COST_OVERRIDES.get(rule, [{}])],
        ),
        code=code("tabulate_cost"),
    output:
        **paths.table_outputs("cost", report),
    log:
        log_path("tabulate_cost"),
    conda:
        "../../envs/unlearnbench.yaml"
    script:
        "../scripts/tabulate_cost.py"


rule tabulate_realworld:
    """Memorised real-world strings (masked), what each method removed, the retrained model's
    score (the gold standard) and its twin's (the noise floor), the indelible ones."""
    input:
        secrets=paths.expand_grid(
            paths.SECRETS,
            dataset=REALWORLD_DATASETS,
            seed=REALWORLD_REPLICATES,
            model=[
                "original",
                *REALWORLD_RETRAINS,
                *(f"unlearned~{method}" for method in REALWORLD_METHODS),
            ],
        ),
        code=code("tabulate_realworld"),
    output:
        **paths.table_outputs("realworld_secrets", report),
    log:
        log_path("tabulate_realworld"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=REALWORLD_METHODS,
        removed_below_bits=REMOVED_BELOW_BITS,
        max_rows=MAX_SECRET_ROWS,
        indelible_margin=config["realworld"]["indelible_margin"],
    script:
        "../scripts/tabulate_realworld.py"


rule plot_privacy_utility:
    """The privacy-utility plane: every method's frontier (removed-canary exposure against test
    perplexity) with its two operating points, the retrained model with the noise-floor band
    of its twin, the original and the DP-SGD models."""
    input:
        evaluations=paths.expand_grid(paths.EVALUATION, **PER_REPLICATE, model=REFERENCE_MODELS)
        + paths.expand_grid(
            paths.EVALUATION, dataset=NLP_DATASETS, seed=DP_REPLICATES, model=DP_MODELS
        ),
        frontiers=FRONTIERS,
        code=code("plot_privacy_utility"),
    output:
        **paths.figure_outputs("privacy_utility", report),
    log:
        log_path("plot_privacy_utility"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
    script:
        "../scripts/plot_privacy_utility.py"


rule plot_unlearning_cycles:
    """Test perplexity and exposure after each of K sequential unlearning requests, beside
    each request's retrained model (its gold standard)."""
    input:
        evaluations=paths.expand_grid(
            paths.EVALUATION,
            dataset=NLP_DATASETS,
            seed=CYCLE_REPLICATES,
            model=["original", "retrained", *CYCLE_RETRAINS, *CYCLE_MODELS],
        ),
        code=code("plot_unlearning_cycles"),
    output:
        **paths.figure_outputs("unlearning_cycles", report),
    log:
        log_path("plot_unlearning_cycles"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
    script:
        "../scripts/plot_unlearning_cycles.py"


rule plot_weight_changes:
    """Histograms of theta' - theta per method and layer type, at each method's matched-utility
    point (first replicate)."""
    input:
        frontiers=paths.expand_grid(
            paths.FRONTIER, dataset=NLP_DATASETS, seed=REPLICATES[:1], method=METHODS
        ),
        code=code("plot_weight_changes"),
    output:
        **paths.figure_outputs("weight_changes", report),
    log:
        log_path("plot_weight_changes"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
    script:
        "../scripts/plot_weight_changes.py"


rule plot_onion_effect:
    """Shift of each sibling canary (exposure and secret log-perplexity) under every arm of the
    onion study, treated templates (masker removed) beside control templates (masker kept)."""
    input:
        evaluations=paths.expand_grid(
            paths.EVALUATION, dataset=NLP_DATASETS, seed=ONION_REPLICATES, model=ONION_MODELS
        ),
        canaries=paths.expand_grid(
            f"{paths.ONION_DATA}/canaries.csv", dataset=NLP_DATASETS, seed=ONION_REPLICATES
        ),
        code=code("plot_onion_effect"),
    output:
        **paths.figure_outputs("onion_effect", report),
    log:
        log_path("plot_onion_effect"),
    conda:
        "../../envs/unlearnbench.yaml"
    script:
        "../scripts/plot_onion_effect.py"


rule plot_realworld:
    """Each memorised real-world string's score under the original model, the retrained model
    and every method of the case study."""
    input:
        secrets=paths.expand_grid(
            paths.SECRETS,
            dataset=REALWORLD_DATASETS,
            seed=REALWORLD_REPLICATES,
            model=[
                "original",
                *REALWORLD_RETRAINS,
                *(f"unlearned~{method}" for method in REALWORLD_METHODS),
            ],
        ),
        code=code("plot_realworld"),
    output:
        **paths.figure_outputs("realworld_memorisation", report),
    log:
        log_path("plot_realworld"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=REALWORLD_METHODS,
        memorised_above=config["realworld"]["memorised_above"],
        removed_below=config["realworld"]["removed_below"],
    script:
        "../scripts/plot_realworld.py"


rule plot_fisher_scaling:
    """Fisher estimation time and memory vs the number of gradients m and model size d."""
    input:
        scaling=paths.SCALING,
        code=code("plot_fisher_scaling"),
    output:
        **paths.figure_outputs("fisher_scaling", report),
    log:
        log_path("plot_fisher_scaling"),
    conda:
        "../../envs/unlearnbench.yaml"
    script:
        "../scripts/plot_fisher_scaling.py"


rule tables_and_figures:
    """Target: every table and figure (then: snakemake --report results/report.html)."""
    input:
        rules.tabulate_results.output,
        rules.tabulate_claims.output,
        rules.tabulate_dp.output,
        rules.tabulate_cost.output,
        rules.tabulate_realworld.output,
        rules.plot_privacy_utility.output,
        rules.plot_unlearning_cycles.output,
        rules.plot_weight_changes.output,
        rules.plot_onion_effect.output,
        rules.plot_realworld.output,
        rules.plot_fisher_scaling.output,


rule verify:
    """Target (not part of `all`): re-hash results/ against what every stage recorded (the
    files in each manifest, each result's own checksum) and list what was changed by hand;
    fails if anything was. Run: snakemake verify."""
    input:
        code=code("verify"),
    log:
        log_path("verify"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        root="results",
    script:
        "../scripts/verify.py"
