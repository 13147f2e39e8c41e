# Second-order information: the damped empirical Fisher of D+ at the original weights, in
# Woodbury form (never a d x d matrix), saved once and reused by every Fisher-based method.


rule estimate_fisher:
    """F = lambda I + (1/m) sum g_i g_i^T from m per-example gradients of D+, stored as the
    Woodbury factors (safetensors + JSON) with the fingerprint of the weights it belongs to, and
    the gradients themselves where one process holds them all (fisher.storage: device or host);
    with resources gpu > 1 the adapter runs once per GPU under torchrun (the sharded Fisher)."""
    input:
        unpack(request_manifests),
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        tokenizer=TOKENIZER,
        train=training_split,
        code=code("estimate_fisher"),
    output:
        tensors="results/fisher/{dataset}/seed~{seed}/fisher.safetensors",
        meta="results/fisher/{dataset}/seed~{seed}/fisher.json",
        manifest=ensure("results/fisher/{dataset}/seed~{seed}/manifest.json", non_empty=True),
    log:
        log_path("estimate_fisher", "{dataset}", "seed~{seed}"),
    benchmark:
        benchmark_path("estimate_fisher", "{dataset}", "seed~{seed}")
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("estimate_fisher", floor=6000),
        runtime=runtime_min("estimate_fisher", floor=60),
        gpu=0,
    params:
        compute=COMPUTE,
        fisher=config["fisher"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/estimate_fisher.py"


rule fisher_scaling:
    """How Fisher estimation grows: gradient, set-up and product time and peak memory for each
    m and model width of config.scaling, on randomly initialised GPT-2s of the model.* shape
    (built from scratch also when model.source names a hub model: only sizes matter here)."""
    input:
        tokenizer=TOKENIZER,
        train=expand("results/data/{dataset}/train.parquet", dataset=config["pretrain"]["datasets"]),
        code=code("fisher_scaling"),
    output:
        table="results/scaling/fisher_scaling.csv",
        manifest=ensure("results/scaling/manifest.json", non_empty=True),
    log:
        log_path("fisher_scaling"),
    benchmark:
        benchmark_path("fisher_scaling")
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("fisher_scaling", floor=8000),
        runtime=60,
    params:
        scaling=config["scaling"],
        model=without(config["model"], "source", "revision"),
        # The scaling study times one set-up per point: only lambda and the blocking matter.
        fisher={key: config["fisher"][key] for key in ("damping", "blocks")},
        seed=config["seed"],
    script:
        "../scripts/fisher_scaling.py"
