# The onion-effect study (unlearnbench.studies.onion): sibling canaries on shared templates,
# the most repeated sibling of half the templates (their maskers) removed by retraining and by
# onion.method; the templates whose masker stays are the within-run control. Its models are
# trained by rule retrain (models onion~original, ~masked, ~random, ~reorder) on its own split.

# The onion models scored by evaluate_onion: the masked arm first (the study's retrained model:
# KL and forget quality of the others are measured against it).
ONION_SCORED = ["onion~masked", *(m for m in ONION_RETRAINS if m != "onion~masked")]
# What scoring an onion model reads: the study's split, canary table and masked request.
ONION_EVALUATE_DATA = {
    **EVALUATE_DATA,
    "retrained": model_files("results/models/{dataset}/seed~{seed}/onion~masked"),
    "train": f"{paths.ONION_DATA}/train.parquet",
    "canaries": f"{paths.ONION_DATA}/canaries.csv",
    "forget": onion_request("masked", "forget_set.json"),
    "retain": onion_request("masked", "retain_set.json"),
}


rule inject_onion_canaries:
    """The onion study's training split: the corpus's training split with the sibling canaries
    (onion.templates x onion.siblings insertions), half the templates treated (drawn per
    dataset and replicate), and its requests: the treated maskers (masked), as many random
    corpus rows (random), nothing (full)."""
    input:
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        code=code("inject_onion_canaries"),
    output:
        train=f"{paths.ONION_DATA}/train.parquet",
        canaries=f"{paths.ONION_DATA}/canaries.csv",
        manifest=ensure(f"{paths.ONION_DATA}/manifest.json", non_empty=True),
        requests=[
            onion_request(request, name)
            for request in ONION_REQUESTS
            for name in ("forget_set.json", "retain_set.json")
        ],
    log:
        log_path("inject_onion_canaries", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("inject_onion_canaries", "{dataset}", "seed~{seed}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        onion=without(config["onion"], "replicates", "method", "point"),
        secret_digits=config["canaries"]["secret_digits"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/inject_onion_canaries.py"


use rule evaluate as evaluate_onion with:
    input:
        **ONION_EVALUATE_DATA,
        models=[
            path
            for model in ONION_SCORED
            for path in model_files(f"results/models/{{dataset}}/seed~{{seed}}/{model}")
        ],
        code=code("evaluate"),
    output:
        metrics=metrics_of(ONION_SCORED),
    log:
        log_path("evaluate_onion", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("evaluate_onion", "{dataset}", "seed~{seed}")
    resources:
        mem_mb=mem_mb("evaluate", floor=3000),
        runtime=runtime_min("evaluate_onion", floor=60, like="evaluate"),
        gpu=0,


rule onion_unlearn:
    """The unlearning arm: onion.method removes the treated maskers from the study's original
    model at onion.point (the operating point its frontier chose on the same replicate), with
    the Fisher of the study's own D+ estimated in the job; the model is saved and scored like
    the retrained arms (results/eval/.../onion~unlearned.json)."""
    input:
        **ONION_EVALUATE_DATA,
        **operating_frontier(config["onion"]["point"], config["onion"]["method"]),
        model=model_files("results/models/{dataset}/seed~{seed}/onion~original"),
        retrained_metrics="results/eval/{dataset}/seed~{seed}/onion~masked.json",
        code=code("onion_unlearn"),
    output:
        model=model_files("results/models/{dataset}/seed~{seed}/onion~unlearned"),
        manifest=ensure(
            "results/models/{dataset}/seed~{seed}/onion~unlearned/unlearn.json", non_empty=True
        ),
        metrics=ensure("results/eval/{dataset}/seed~{seed}/onion~unlearned.json", non_empty=True),
    log:
        log_path("onion_unlearn", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("onion_unlearn", "{dataset}", "seed~{seed}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("onion_unlearn", floor=6000),
        runtime=runtime_min("onion_unlearn", floor=60),
        gpu=0,
    params:
        compute=COMPUTE,
        method=config["onion"]["method"],
        point=config["onion"]["point"],
        hyper=config["unlearn"]["methods"][config["onion"]["method"]],
        trajectory=config["unlearn"]["trajectory"],
        fisher=fisher_settings(config["onion"]["method"]),
        evaluate=config["evaluate"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/onion_unlearn.py"
