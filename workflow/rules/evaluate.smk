# Evaluation: one function scores every model of a dataset and replicate the same way. The
# rules here run it on the trained models; unlearn and unlearn_cycles run it on the models
# they make, in their own process. At the default size a process spends ~10 s
# importing torch and transformers, more than scoring a model (~5 s), so each job here scores
# a group of models: the original with the retrained model (they change together: same recipe,
# same canaries), and all DP-SGD models (adding an epsilon rescores its siblings, ~5 s each,
# and leaves the original's metrics, which the onion study and the main table read, alone).

# The models of an nlp replicate that the evaluate rules score.
TRAINED_MODELS = ["original", "retrained", *DP_MODELS]


rule evaluate:
    """Perplexity (test, D+ sample, D-), exposure of every canary (exact and/or extrapolated)
    and greedy extraction of its secret, for the original and the retrained model, each to
    results/eval/{dataset}/seed~{seed}/{model}.json."""
    input:
        **EVALUATE_DATA,
        models=[
            path
            for model in ["original", "retrained"]
            for path in model_files(f"results/models/{{dataset}}/seed~{{seed}}/{model}")
        ],
        code=code("evaluate"),
    output:
        metrics=[
            ensure(f"results/eval/{{dataset}}/seed~{{seed}}/{model}.json", non_empty=True)
            for model in ["original", "retrained"]
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
        runtime=60,
        gpu=0,
    params:
        evaluate=config["evaluate"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/evaluate.py"


if DP_MODELS:

    use rule evaluate as evaluate_dp with:
        input:
            **EVALUATE_DATA,
            models=[
                path
                for model in DP_MODELS
                for path in model_files(f"results/models/{{dataset}}/seed~{{seed}}/{model}")
            ],
            code=code("evaluate"),
        output:
            metrics=[
                ensure(f"results/eval/{{dataset}}/seed~{{seed}}/{model}.json", non_empty=True)
                for model in DP_MODELS
            ],
        log:
            log_path("evaluate_dp", "{dataset}", "seed~{seed}"),
        benchmark:
            benchmark_path("evaluate_dp", "{dataset}", "seed~{seed}")
        resources:
            mem_mb=mem_mb("evaluate_dp", floor=3000),
            runtime=60,
            gpu=0,


rule evaluations:
    """Target: metrics of every trained model."""
    input:
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
            model=TRAINED_MODELS,
        ),
