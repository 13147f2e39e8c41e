# Evaluation: one rule scores every model of a dataset and replicate the same way. The cycle
# study's models are scored by the same function inside unlearn_cycles: one process for K
# models instead of K more that would each spend ~8 s importing torch and transformers.

# The models a replicate of an nlp dataset has; later stages add DP-SGD and unlearned models.
TRAINED_MODELS = ["original", "retrained", *DP_MODELS]


rule evaluate:
    """Perplexity (test, D+ sample, D-), exposure of every canary (exact and/or extrapolated)
    and greedy extraction of its secret, for the model results/models/.../{model}."""
    input:
        model=model_files("results/models/{dataset}/seed~{seed}/{model}"),
        tokenizer=TOKENIZER,
        test="results/data/{dataset}/test.parquet",
        train="results/canaries/{dataset}/seed~{seed}/train.parquet",
        forget="results/canaries/{dataset}/seed~{seed}/forget_set.json",
        retain="results/canaries/{dataset}/seed~{seed}/retain_set.json",
        canaries="results/canaries/{dataset}/seed~{seed}/canaries.csv",
        code=EVALUATE_CODE,
    output:
        metrics=ensure("results/eval/{dataset}/seed~{seed}/{model}.json", non_empty=True),
    log:
        log_path("evaluate", "{dataset}", "seed~{seed}", "{model}"),
    benchmark:
        benchmark_path("evaluate", "{dataset}", "seed~{seed}", "{model}")
    wildcard_constraints:
        # Cycle models (cycle~k~method) are scored inside unlearn_cycles, by the same function.
        model=r"(?!cycle~)[a-z0-9_.~-]+",
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=60,
        gpu=0,
    params:
        evaluate=config["evaluate"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/evaluate.py"


rule evaluations:
    """Target: metrics of every model."""
    input:
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
            model=TRAINED_MODELS,
        ),
