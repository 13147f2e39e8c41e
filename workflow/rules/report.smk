# Tables and figures of the study, and the front page of `snakemake --report`.
# Each rule reads exactly the metrics it shows, so a change reruns only what depends on it.
# Include this file last: the cost table lists the benchmark files of every other rule.
# Path helpers live in unlearnbench.reporting.targets (imported in common.smk; the linter wants
# no functions here).


report: "../report/workflow.rst"


SECOND_ORDER_METHODS = [m for m in METHODS if m.startswith("fisher_")]
PER_REPLICATE = {"dataset": NLP_DATASETS, "seed": REPLICATES}
# Package modules (code= inputs) of the table rules; figures also import the tables' labels.
TABLE_CODE = [
    "reporting/__init__",
    "reporting/loaders",
    "reporting/render",
    "reporting/tables",
    "corpora/__init__",
    "corpora/privacy",
]
FIGURE_CODE = [*TABLE_CODE, "reporting/plotting"]
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


rule tabulate_results:
    """Main table: exposure, extraction, perplexity and cost per dataset x model."""
    input:
        evaluations=targets.expand_grid(
            targets.EVALUATION, **PER_REPLICATE, model=["original", "retrained", *UNLEARNED_MODELS]
        ),
        manifests=targets.expand_grid(
            targets.TRAIN_MANIFEST, **PER_REPLICATE, model=["original", "retrained"]
        )
        + targets.expand_grid(targets.UNLEARN_MANIFEST, **PER_REPLICATE, model=UNLEARNED_MODELS),
        fisher=(
            targets.expand_grid(targets.FISHER_MANIFEST, **PER_REPLICATE)
            if SECOND_ORDER_METHODS
            else []
        ),
        code=code(*TABLE_CODE),
    output:
        **targets.table_outputs("main_results", report),
    log:
        log_path("tabulate_results"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        methods=METHODS,
    script:
        "../scripts/tabulate_results.py"


rule tabulate_dp:
    """DP-SGD at every epsilon beside the unlearning methods: perplexity and exposure."""
    input:
        evaluations=targets.expand_grid(
            targets.EVALUATION,
            **PER_REPLICATE,
            model=["original", "retrained", *DP_MODELS, *UNLEARNED_MODELS],
        ),
        manifests=targets.expand_grid(targets.TRAIN_MANIFEST, **PER_REPLICATE, model=DP_MODELS),
        code=code(*TABLE_CODE),
    output:
        **targets.table_outputs("dp_privacy_utility", report),
    log:
        log_path("tabulate_dp"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        methods=METHODS,
    script:
        "../scripts/tabulate_dp.py"


rule tabulate_cost:
    """Wall time and peak memory of every stage, from the benchmark files, grouped by rule."""
    input:
        benchmarks=lambda wildcards: targets.stage_benchmarks(
            workflow.rules,
            lambda rule: {**COST_WILDCARDS, **COST_OVERRIDES.get(rule, {})},
        ),
        code=code(*TABLE_CODE),
    output:
        **targets.table_outputs("cost", report),
    log:
        log_path("tabulate_cost"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/tabulate_cost.py"


rule tabulate_realworld:
    """Memorised real-world strings (masked), what each method removed, the indelible ones."""
    input:
        secrets=targets.expand_grid(
            targets.SECRETS,
            dataset=REALWORLD_DATASETS,
            seed=REPLICATES,
            model=["original", *UNLEARNED_MODELS],
        ),
        code=code(*TABLE_CODE),
    output:
        **targets.table_outputs("realworld_secrets", report),
    log:
        log_path("tabulate_realworld"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        methods=METHODS,
        removed_below_bits=REMOVED_BELOW_BITS,
        max_rows=MAX_SECRET_ROWS,
    script:
        "../scripts/tabulate_realworld.py"


# Figures import the tables' labels, hence the table modules.
FIGURE_CODE = [*TABLE_CODE, "reporting/plotting"]


rule plot_unlearning_trajectories:
    """Removed-canary exposure vs unlearning step, per method and repetition count."""
    input:
        unlearn=targets.expand_grid(
            targets.UNLEARN_MANIFEST, **PER_REPLICATE, model=UNLEARNED_MODELS
        ),
        original=targets.expand_grid(targets.EVALUATION, **PER_REPLICATE, model=["original"]),
        code=code(*FIGURE_CODE, "reporting/figures_unlearning"),
    output:
        **targets.figure_outputs("unlearning_trajectories", report),
    log:
        log_path("plot_unlearning_trajectories"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        methods=METHODS,
    script:
        "../scripts/plot_unlearning_trajectories.py"


rule plot_privacy_utility:
    """Exposure vs test perplexity for every unlearning method and every DP epsilon."""
    input:
        evaluations=targets.expand_grid(
            targets.EVALUATION,
            **PER_REPLICATE,
            model=["original", "retrained", *DP_MODELS, *UNLEARNED_MODELS],
        ),
        code=code(*FIGURE_CODE, "reporting/figures_studies"),
    output:
        **targets.figure_outputs("privacy_utility", report),
    log:
        log_path("plot_privacy_utility"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        methods=METHODS,
    script:
        "../scripts/plot_privacy_utility.py"


rule plot_unlearning_cycles:
    """Test perplexity and exposure after each of K sequential unlearning requests."""
    input:
        evaluations=targets.expand_grid(
            targets.EVALUATION, **PER_REPLICATE, model=["original", *CYCLE_MODELS]
        ),
        code=code(*FIGURE_CODE, "reporting/figures_unlearning"),
    output:
        **targets.figure_outputs("unlearning_cycles", report),
    log:
        log_path("plot_unlearning_cycles"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        methods=METHODS,
    script:
        "../scripts/plot_unlearning_cycles.py"


rule plot_weight_changes:
    """Histograms of theta' - theta per method and layer type (first replicate)."""
    input:
        unlearn=targets.expand_grid(
            targets.UNLEARN_MANIFEST,
            dataset=NLP_DATASETS,
            seed=REPLICATES[:1],
            model=UNLEARNED_MODELS,
        ),
        code=code(*FIGURE_CODE, "reporting/figures_unlearning"),
    output:
        **targets.figure_outputs("weight_changes", report),
    log:
        log_path("plot_weight_changes"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        methods=METHODS,
    script:
        "../scripts/plot_weight_changes.py"


rule plot_onion_effect:
    """Control-canary exposure change after targeted vs random removal."""
    input:
        onion=targets.expand_grid(
            targets.ONION, **PER_REPLICATE, selection=targets.ONION_SELECTIONS
        ),
        code=code(*FIGURE_CODE, "reporting/figures_studies"),
    output:
        **targets.figure_outputs("onion_effect", report),
    log:
        log_path("plot_onion_effect"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    script:
        "../scripts/plot_onion_effect.py"


rule plot_fisher_scaling:
    """Fisher estimation time and memory vs the number of gradients m and model size d."""
    input:
        scaling=targets.SCALING,
        code=code(*FIGURE_CODE, "reporting/figures_studies"),
    output:
        **targets.figure_outputs("fisher_scaling", report),
    log:
        log_path("plot_fisher_scaling"),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
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
