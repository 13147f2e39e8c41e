# The real-world case study: no canaries; the sensitive strings that occur naturally in the
# corpus (e-mail addresses, phone numbers) and that the original model memorised are found,
# the most memorised are unlearned with every method, and each unlearned model is re-scored in
# the job that made it.
# Strings appear only masked with a short hash in every output.


# What the stages read of realworld.* (indelible_margin is the table's: changing it reruns
# only tabulate_realworld; point is the unlearning jobs' own).
REALWORLD_STAGE_SETTINGS = without(
    config["realworld"], "replicates", "methods", "indelible_margin", "point"
)
# The gold standard and its twin (another data order: the noise floor of "as retrained").
REALWORLD_RETRAINS = ["retrained", "retrained_reorder"]


rule find_secrets:
    """Score the e-mail addresses and phone numbers of the training split under the original
    model against the base model, calibrated on held-out strings (validation/test, never
    trained); the most memorised form the unlearning request (forget/retain manifests)."""
    input:
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        reference=model_files("results/models/base"),
        tokenizer=TOKENIZER,
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        code=code("find_secrets"),
    output:
        secrets="results/realworld/{dataset}/seed~{seed}/secrets_original.csv",
        heldout="results/realworld/{dataset}/seed~{seed}/heldout_original.csv",
        forget=ensure("results/realworld/{dataset}/seed~{seed}/forget_set.json", non_empty=True),
        retain=ensure("results/realworld/{dataset}/seed~{seed}/retain_set.json", non_empty=True),
        manifest=ensure("results/realworld/{dataset}/seed~{seed}/manifest.json", non_empty=True),
    log:
        log_path("find_secrets", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("find_secrets", "{dataset}", "seed~{seed}")
    wildcard_constraints:
        dataset=one_of(REALWORLD_DATASETS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("find_secrets", floor=3000),
        runtime=runtime_min("find_secrets", floor=60),
        gpu=0,
    params:
        compute=COMPUTE,
        realworld=REALWORLD_STAGE_SETTINGS,
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/find_secrets.py"


rule unlearn_realworld:
    """One unlearning request on a real-world corpus (the strings find_secrets chose), then the
    strings of the request and the other memorised ones re-scored under the unlearned model:
    which were removed, which survive. Scoring runs in this job for the reason rule unlearn
    gives; a change of realworld settings reruns it."""
    input:
        unpack(fisher_input),
        forget="results/realworld/{dataset}/seed~{seed}/forget_set.json",
        retain="results/realworld/{dataset}/seed~{seed}/retain_set.json",
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        reference="results/realworld/{dataset}/seed~{seed}/secrets_original.csv",
        heldout_reference="results/realworld/{dataset}/seed~{seed}/heldout_original.csv",
        tokenizer=TOKENIZER,
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        code=code("unlearn_realworld"),
    output:
        model=model_files("results/models/{dataset}/seed~{seed}/unlearned~{method}"),
        manifest=ensure(
            "results/models/{dataset}/seed~{seed}/unlearned~{method}/unlearn.json", non_empty=True
        ),
        secrets="results/realworld/{dataset}/seed~{seed}/secrets_unlearned~{method}.csv",
        scored=ensure(
            "results/realworld/{dataset}/seed~{seed}/scored_unlearned~{method}.json",
            non_empty=True,
        ),
    log:
        log_path("unlearn_realworld", "{dataset}", "seed~{seed}", "{method}"),
    benchmark:
        benchmark_path("unlearn_realworld", "{dataset}", "seed~{seed}", "{method}")
    wildcard_constraints:
        dataset=one_of(REALWORLD_DATASETS),
        method=one_of(REALWORLD_METHODS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("unlearn_realworld", floor=6000),
        runtime=runtime_min("unlearn_realworld", floor=60),
        gpu=0,
    params:
        **UNLEARN_PARAMS,
        compute=COMPUTE,
        realworld=REALWORLD_STAGE_SETTINGS,
        # realworld.point: the method's matched-utility point on this replicate's own frontier
        # (unlearn.frontier.<method>, chosen on its validation split), or its base setting.
        point=config["realworld"]["point"],
        grid=lambda wc: config["unlearn"]["frontier"][wc.method],
        utility_budget=config["unlearn"]["selection"]["utility_budget"],
        batch_size=config["evaluate"]["batch_size"],
    script:
        "../scripts/unlearn_realworld.py"


rule retrain_realworld:
    """The case study's gold standard: the finetune recipe from the base model on the request's
    D+ (retain_set.json: every row holding a requested string gone), its strings then scored
    like an unlearned model's; retrained_reorder is its twin with another data order (how far
    two retrains' scores of a string lie apart is the noise floor). A string is indelible for
    a method when its excess memorisation under the unlearned model stays above that under the
    retrained model by more than that floor."""
    input:
        base=model_files("results/models/base"),
        retain="results/realworld/{dataset}/seed~{seed}/retain_set.json",
        reference="results/realworld/{dataset}/seed~{seed}/secrets_original.csv",
        heldout_reference="results/realworld/{dataset}/seed~{seed}/heldout_original.csv",
        tokenizer=TOKENIZER,
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        code=code("retrain_realworld"),
    output:
        model=model_files("results/models/{dataset}/seed~{seed}/{retrain}"),
        manifest=ensure("results/models/{dataset}/seed~{seed}/{retrain}/train.json", non_empty=True),
        secrets="results/realworld/{dataset}/seed~{seed}/secrets_{retrain}.csv",
        scored=ensure(
            "results/realworld/{dataset}/seed~{seed}/scored_{retrain}.json", non_empty=True
        ),
    log:
        log_path("retrain_realworld", "{dataset}", "seed~{seed}", "{retrain}"),
    benchmark:
        benchmark_path("retrain_realworld", "{dataset}", "seed~{seed}", "{retrain}")
    wildcard_constraints:
        dataset=one_of(REALWORLD_DATASETS),
        retrain=one_of(REALWORLD_RETRAINS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("retrain", floor=3000),
        runtime=runtime_min("retrain_realworld", floor=120, like="retrain"),
        gpu=0,
    params:
        compute=COMPUTE,
        recipe=config["train"]["finetune"],
        realworld=REALWORLD_STAGE_SETTINGS,
        seed=lambda wc: int(wc.seed),
        # The data-order key, as rule retrain's: the twin takes another order.
        order=lambda wc: wc.retrain if wc.retrain in REORDERED else "",
        checkpoint="results/checkpoints/retrain/{dataset}/seed~{seed}/{retrain}",
    script:
        "../scripts/retrain_realworld.py"


rule realworld:
    """Target: the case study on every real-world corpus."""
    input:
        expand(
            "results/realworld/{dataset}/seed~{seed}/secrets_{model}.csv",
            dataset=REALWORLD_DATASETS,
            seed=REALWORLD_REPLICATES,
            model=[*REALWORLD_RETRAINS, *(f"unlearned~{method}" for method in REALWORLD_METHODS)],
        ),
