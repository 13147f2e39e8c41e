# Evaluation: one function scores every model of a dataset and replicate the same way. The
# rules here run it on the trained models; sweep_frontier and unlearn_cycles run it on the
# models they make, in their own process. At the default size a process spends ~10 s
# importing torch and transformers, more than scoring a model (~2 s), so each job here scores
# a group of models: the retrained model (first: the others are compared with it), the
# original and the retrain's twin (they change together: same recipe, same canaries), and all
# DP-SGD models (adding an epsilon rescores its siblings and leaves the original's metrics,
# which the frontiers and the main table read, alone).

# The models of an nlp replicate that the evaluate rules score, the retrained model first.
SCORED_FIRST = ["retrained", "original", "retrained_reorder"]
TRAINED_MODELS = [*SCORED_FIRST, *DP_MODELS]


rule evaluate:
    """Every metric of evaluation.score_model (perplexity incl. validation, KL to the retrained
    model, canary exposure by role, extraction, membership inference, forget quality) for the
    retrained model, the original and the retrain's twin, each to
    results/eval/{dataset}/seed~{seed}/{model}.json."""
    input:
        **EVALUATE_DATA,
        models=[
            path
            for model in SCORED_FIRST
            for path in model_files(f"results/models/{{dataset}}/seed~{{seed}}/{model}")
        ],
        code=code("evaluate"),
    output:
        metrics=[
            ensure(f"results/eval/{{dataset}}/seed~{{seed}}/{model}.json", non_empty=True)
            for model in SCORED_FIRST
        ],
    log:
        log_path("evaluate", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("evaluate", "{dataset}", "seed~{seed}")
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("evaluate", floor=3000),
        runtime=runtime_min("evaluate", floor=60),
        gpu=0,
    params:
        compute=COMPUTE,
        evaluate=config["evaluate"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/evaluate.py"


if DP_MODELS:

    use rule evaluate as evaluate_dp with:
        input:
            **scored_after_retrained(DP_MODELS),
        output:
            metrics=metrics_of(DP_MODELS),
        log:
            log_path("evaluate_dp", "{dataset}", "seed~{seed}"),
        benchmark:
            benchmark_path("evaluate_dp", "{dataset}", "seed~{seed}")
        resources:
            mem_mb=mem_mb("evaluate_dp", floor=3000),
            runtime=runtime_min("evaluate_dp", floor=60),
            gpu=0,


# The cycle study's gold standards, one job per replicate: every cycle request's retrained
# model but the last (the onion study's models are scored by evaluate_onion, onion.smk).
if CYCLE_RETRAINS:

    use rule evaluate as evaluate_cycle_retrains with:
        input:
            **scored_after_retrained(CYCLE_RETRAINS),
        output:
            metrics=metrics_of(CYCLE_RETRAINS),
        log:
            log_path("evaluate_cycle_retrains", "{dataset}", "seed~{seed}"),
        benchmark:
            benchmark_path("evaluate_cycle_retrains", "{dataset}", "seed~{seed}")
        resources:
            mem_mb=mem_mb("evaluate", floor=3000),
            runtime=runtime_min("evaluate_cycle_retrains", floor=60, like="evaluate"),
            gpu=0,


rule evaluations:
    """Target: metrics of every trained model."""
    input:
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
            model=SCORED_FIRST,
        ),
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=DP_REPLICATES,
            model=DP_MODELS,
        ),
