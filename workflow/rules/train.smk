# Training stage: the base model (pretrained here, or a hub model fetched: chosen by model.source,
# HUB_MODEL in common.smk), the original (fine-tuned with canaries) and the retrained
# gold standard (D+ only). Checkpoints live outside the declared outputs, under
# results/checkpoints/, because Snakemake deletes a killed job's outputs; --rerun-incomplete
# resumes from them.


if HUB_MODEL:

    rule fetch_base_model:
        """The base LM: the hub model named by model.source at model.revision, loaded in float32
        from safetensors and saved as it comes (model.n_*, train.pretrain and pretrain.datasets
        size and train a model from scratch and are not used)."""
        input:
            tokenizer=TOKENIZER,
            code=code("fetch_base_model"),
        output:
            model=model_files("results/models/base"),
            manifest=ensure("results/models/base/train.json", non_empty=True),
        log:
            log_path("fetch_base_model"),
        benchmark:
            benchmark_path("fetch_base_model")
        conda:
            "../../envs/unlearnbench.yaml"
        threads: 1
        # Loading and saving weights computes nothing: a CPU job under every profile.
        resources:
            mem_mb=mem_mb("fetch_base_model", floor=4000),
            runtime=60,
        params:
            source=config["model"]["source"],
            revision=config["model"]["revision"],
        script:
            "../scripts/fetch_base_model.py"

else:

    rule pretrain_base:
        """The base LM: a GPT-2 trained from scratch on the pretraining corpus (no canaries)."""
        input:
            tokenizer=TOKENIZER,
            train=expand(
                "results/data/{dataset}/train.parquet", dataset=config["pretrain"]["datasets"]
            ),
            code=code("pretrain_base"),
        output:
            model=model_files("results/models/base"),
            manifest=ensure("results/models/base/train.json", non_empty=True),
        log:
            log_path("pretrain_base"),
        benchmark:
            benchmark_path("pretrain_base")
        conda:
            "../../envs/unlearnbench.yaml"
        threads: 2
        resources:
            mem_mb=mem_mb("pretrain_base", floor=4000),
            runtime=runtime_min("pretrain_base", floor=120),
            gpu=0,
        params:
            compute=COMPUTE,
            model=config["model"],
            recipe=config["train"]["pretrain"],
            seed=config["seed"],
            checkpoint="results/checkpoints/pretrain_base",
        script:
            "../scripts/pretrain_base.py"


rule finetune:
    """The original model: the base fine-tuned on the training split (with canaries for nlp
    datasets, as it is for realworld ones)."""
    input:
        base=model_files("results/models/base"),
        tokenizer=TOKENIZER,
        train=training_split,
        code=code("finetune"),
    output:
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        manifest=ensure("results/models/{dataset}/seed~{seed}/original/train.json", non_empty=True),
    log:
        log_path("finetune", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("finetune", "{dataset}", "seed~{seed}")
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("finetune", floor=3000),
        runtime=runtime_min("finetune", floor=120),
        gpu=0,
    params:
        compute=COMPUTE,
        recipe=config["train"]["finetune"],
        seed=lambda wc: int(wc.seed),
        checkpoint="results/checkpoints/finetune/{dataset}/seed~{seed}",
    script:
        "../scripts/finetune.py"


rule retrain:
    """The gold standard: the same recipe from the same base on D+ only. retrained_reorder is a
    second retrain with another data order: how far two retrains land from each other is the
    yardstick for "close to retraining" (the noise floor). The side studies' gold standards
    train the same way on their own D+ (retain_set): retrained_request~k for cycle request k,
    onion~{arm} for the onion study's arms (on its own split with sibling canaries)."""
    input:
        base=model_files("results/models/base"),
        tokenizer=TOKENIZER,
        train=retrain_split,
        retain=retain_set,
        code=code("retrain"),
    output:
        model=model_files("results/models/{dataset}/seed~{seed}/{retrain}"),
        manifest=ensure("results/models/{dataset}/seed~{seed}/{retrain}/train.json", non_empty=True),
    log:
        log_path("retrain", "{dataset}", "seed~{seed}", "{retrain}"),
    benchmark:
        benchmark_path("retrain", "{dataset}", "seed~{seed}", "{retrain}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
        retrain=one_of([*RETRAINED_MODELS, *CYCLE_RETRAINS, *ONION_RETRAINS]),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("retrain", floor=3000),
        runtime=runtime_min("retrain", floor=120),
        gpu=0,
    params:
        compute=COMPUTE,
        recipe=config["train"]["finetune"],
        seed=lambda wc: int(wc.seed),
        # The data-order key: every retrain keeps the original's order (the replicate seed), so
        # that it differs from the original only in the rows it leaves out; the twin takes
        # another (the noise floor).
        order=lambda wc: wc.retrain if wc.retrain in REORDERED else "",
        checkpoint="results/checkpoints/retrain/{dataset}/seed~{seed}/{retrain}",
    script:
        "../scripts/retrain.py"


rule train_dp:
    """DP-SGD (Opacus, Poisson sampling, per-sample clipping) from the base model on the same
    data as the original, at one target epsilon (eps~inf: the same recipe without noise); the
    manifest reports the epsilon spent."""
    input:
        base=model_files("results/models/base"),
        tokenizer=TOKENIZER,
        train="results/canaries/{dataset}/seed~{seed}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        code=code("train_dp"),
    output:
        model=model_files("results/models/{dataset}/seed~{seed}/dp_eps~{eps}"),
        manifest=ensure(
            "results/models/{dataset}/seed~{seed}/dp_eps~{eps}/train.json", non_empty=True
        ),
    log:
        log_path("train_dp", "{dataset}", "seed~{seed}", "eps~{eps}"),
    benchmark:
        benchmark_path("train_dp", "{dataset}", "seed~{seed}", "eps~{eps}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
        eps=one_of(EPSILON),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("train_dp", floor=4000),
        runtime=runtime_min("train_dp", floor=180),
        gpu=0,
    params:
        compute=COMPUTE,
        recipe=without(config["train_dp"], "epsilons", "replicates", "noise_free_control"),
        epsilon=lambda wc: EPSILON[wc.eps],
        seed=lambda wc: int(wc.seed),
        checkpoint="results/checkpoints/train_dp/{dataset}/seed~{seed}/eps~{eps}",
    script:
        "../scripts/train_dp.py"


rule models:
    """Target: every trained model."""
    input:
        expand(
            "results/models/{dataset}/seed~{seed}/{model}/train.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
            model=["original", *RETRAINED_MODELS],
        ),
        expand(
            "results/models/{dataset}/seed~{seed}/{model}/train.json",
            dataset=NLP_DATASETS,
            seed=DP_REPLICATES,
            model=DP_MODELS,
        ),
