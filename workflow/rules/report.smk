# Tables and figures of the study, and the front page of `snakemake --report`.
# Each rule reads exactly the metrics it shows, so a change reruns only what depends on it.
# Include this file last: the cost table lists the benchmark files of every other rule.
# Path helpers live in unlearnbench.reporting.paths (imported in common.smk; the linter wants
# no functions here). Table and figure jobs are light (seconds, no torch): they run on the
# machine that runs Snakemake (localrules), with the profile's default resources.


report: "../report/workflow.rst"


SECOND_ORDER_METHODS = [m for m in METHODS if m.startswith("fisher_")]
PER_REPLICATE = {"dataset": NLP_DATASETS, "seed": REPLICATES}
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
COST_OVERRIDES = {
    "prepare_corpus": {"dataset": DATASETS},
    "finetune": {"dataset": DATASETS},
    "estimate_fisher": {"dataset": DATASETS},
    "unlearn_cycles": {"method": config["unlearn"]["cycle_methods"]},
    "find_secrets": {"dataset": REALWORLD_DATASETS},
    "unlearn_realworld": {"dataset": REALWORLD_DATASETS},
}


localrules:
    tabulate_results,
    tabulate_dp,
    tabulate_cost,
    tabulate_realworld,
    plot_unlearning_trajectories,
    plot_privacy_utility,
    plot_unlearning_cycles,
    plot_weight_changes,
    plot_onion_effect,
    plot_fisher_scaling,
    verify,


rule tabulate_results:
    """Main table: exposure, extraction, perplexity and cost per dataset x model."""
    input:
        evaluations=paths.expand_grid(
            paths.EVALUATION, **PER_REPLICATE, model=["original", "retrained", *UNLEARNED_MODELS]
        ),
        manifests=paths.expand_grid(
            paths.TRAIN_MANIFEST, **PER_REPLICATE, model=["original", "retrained"]
        )
        + paths.expand_grid(paths.UNLEARN_MANIFEST, **PER_REPLICATE, model=UNLEARNED_MODELS),
        fisher=(
            paths.expand_grid(paths.FISHER_MANIFEST, **PER_REPLICATE)
            if SECOND_ORDER_METHODS
            else []
        ),
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


rule tabulate_dp:
    """DP-SGD at every epsilon beside the unlearning methods: perplexity and exposure."""
    input:
        evaluations=paths.expand_grid(
            paths.EVALUATION,
            **PER_REPLICATE,
            model=["original", "retrained", *DP_MODELS, *UNLEARNED_MODELS],
        ),
        manifests=paths.expand_grid(paths.TRAIN_MANIFEST, **PER_REPLICATE, model=DP_MODELS),
        code=code("tabulate_dp"),
    output:
        **paths.table_outputs("dp_privacy_utility", report),
    log:
        log_path("tabulate_dp"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
    script:
        "../scripts/tabulate_dp.py"


rule tabulate_cost:
    """Wall time and peak memory of every stage, from the benchmark files, grouped by rule."""
    input:
        benchmarks=lambda wildcards: paths.stage_benchmarks(
            workflow.rules,
            lambda rule: {**COST_WILDCARDS, **COST_OVERRIDES.get(rule, {})},
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
    """Memorised real-world strings (masked), what each method removed, the indelible ones."""
    input:
        secrets=paths.expand_grid(
            paths.SECRETS,
            dataset=REALWORLD_DATASETS,
            seed=REPLICATES,
            model=["original", *UNLEARNED_MODELS],
        ),
        code=code("tabulate_realworld"),
    output:
        **paths.table_outputs("realworld_secrets", report),
    log:
        log_path("tabulate_realworld"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
        removed_below_bits=REMOVED_BELOW_BITS,
        max_rows=MAX_SECRET_ROWS,
    script:
        "../scripts/tabulate_realworld.py"


rule plot_unlearning_trajectories:
    """Removed-canary exposure vs unlearning step, per method and repetition count."""
    input:
        unlearn=paths.expand_grid(paths.UNLEARN_MANIFEST, **PER_REPLICATE, model=UNLEARNED_MODELS),
        original=paths.expand_grid(paths.EVALUATION, **PER_REPLICATE, model=["original"]),
        code=code("plot_unlearning_trajectories"),
    output:
        **paths.figure_outputs("unlearning_trajectories", report),
    log:
        log_path("plot_unlearning_trajectories"),
    conda:
        "../../envs/unlearnbench.yaml"
    params:
        methods=METHODS,
    script:
        "../scripts/plot_unlearning_trajectories.py"


rule plot_privacy_utility:
    """Exposure vs test perplexity for every unlearning method and every DP epsilon."""
    input:
        evaluations=paths.expand_grid(
            paths.EVALUATION,
            **PER_REPLICATE,
            model=["original", "retrained", *DP_MODELS, *UNLEARNED_MODELS],
        ),
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
    """Test perplexity and exposure after each of K sequential unlearning requests."""
    input:
        evaluations=paths.expand_grid(
            paths.EVALUATION, **PER_REPLICATE, model=["original", *CYCLE_MODELS]
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
    """Histograms of theta' - theta per method and layer type (first replicate)."""
    input:
        unlearn=paths.expand_grid(
            paths.UNLEARN_MANIFEST,
            dataset=NLP_DATASETS,
            seed=REPLICATES[:1],
            model=UNLEARNED_MODELS,
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
    """Control-canary exposure change after targeted vs random removal."""
    input:
        onion=paths.expand_grid(paths.ONION, **PER_REPLICATE, selection=paths.ONION_SELECTIONS),
        code=code("plot_onion_effect"),
    output:
        **paths.figure_outputs("onion_effect", report),
    log:
        log_path("plot_onion_effect"),
    conda:
        "../../envs/unlearnbench.yaml"
    script:
        "../scripts/plot_onion_effect.py"


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
        rules.tabulate_dp.output,
        rules.tabulate_cost.output,
        rules.tabulate_realworld.output,
        rules.plot_unlearning_trajectories.output,
        rules.plot_privacy_utility.output,
        rules.plot_unlearning_cycles.output,
        rules.plot_weight_changes.output,
        rules.plot_onion_effect.output,
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
