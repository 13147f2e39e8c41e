# Unlearning: every method of the registry from the original model (one request), the
# multi-cycle study (K sequential requests) and the onion-effect study. The real-world case
# study's requests are unlearned by unlearn_realworld (realworld.smk).


rule unlearn:
    """One unlearning request on an nlp dataset: the method removes D- from the original model
    (the manifest holds the exposure/loss trajectory over its steps and the weight-change
    histograms); the saved model is then scored with the evaluate rule's function and settings
    (results/eval/.../unlearned~method.json). Scoring in this job, like unlearn_cycles, saves a
    process per model (~10 s of importing torch and transformers, more than the unlearning
    itself at the default size); the price is that a change of evaluate settings reruns the
    unlearning too."""
    input:
        unpack(fisher_input),
        **EVALUATE_DATA,
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        code=code("unlearn"),
    output:
        model=model_files("results/models/{dataset}/seed~{seed}/unlearned~{method}"),
        manifest=ensure(
            "results/models/{dataset}/seed~{seed}/unlearned~{method}/unlearn.json", non_empty=True
        ),
        metrics=ensure("results/eval/{dataset}/seed~{seed}/unlearned~{method}.json", non_empty=True),
    log:
        log_path("unlearn", "{dataset}", "seed~{seed}", "{method}"),
    benchmark:
        benchmark_path("unlearn", "{dataset}", "seed~{seed}", "{method}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
        method=one_of(METHODS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("unlearn", floor=6000),
        runtime=60,
        gpu=0,
    params:
        **UNLEARN_PARAMS,
        evaluate=config["evaluate"],
    script:
        "../scripts/unlearn.py"


rule unlearn_cycles:
    """K sequential requests: cycle k removes canary group k from cycle k-1's model (Fisher
    methods re-estimate F at each cycle's weights); every cycle's model is kept and scored
    with the evaluate rule's function and settings (results/eval/.../cycle~k~method.json)."""
    input:
        unpack(fisher_input),
        **EVALUATE_DATA,
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        code=code("unlearn_cycles"),
    output:
        models=[
            path
            for k in range(1, REQUESTS + 1)
            for path in model_files(
                f"results/models/{{dataset}}/seed~{{seed}}/cycle~{k}~{{method}}"
            )
        ],
        manifest=ensure(
            "results/unlearn_cycles/{dataset}/seed~{seed}/{method}/cycles.json", non_empty=True
        ),
        metrics=[
            ensure(
                f"results/eval/{{dataset}}/seed~{{seed}}/cycle~{k}~{{method}}.json", non_empty=True
            )
            for k in range(1, REQUESTS + 1)
        ],
    log:
        log_path("unlearn_cycles", "{dataset}", "seed~{seed}", "{method}"),
    benchmark:
        benchmark_path("unlearn_cycles", "{dataset}", "seed~{seed}", "{method}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
        method=one_of(config["unlearn"]["cycle_methods"]),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("unlearn_cycles", floor=6000),
        runtime=120,
        gpu=0,
    params:
        **UNLEARN_PARAMS,
        requests=REQUESTS,
        evaluate=config["evaluate"],
    script:
        "../scripts/unlearn_cycles.py"


rule unlearning:
    """Target: every unlearned model, cycle and onion study, with their metrics."""
    input:
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
            model=UNLEARNED_MODELS + CYCLE_MODELS,
        ),
        expand(
            "results/onion/{dataset}/seed~{seed}/{selection}.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
            selection=["targeted", "random"],
        ),


rule onion_unlearn:
    """The onion effect: remove the most exposed canaries (targeted) and, separately, as many
    random ones with onion.method, recording the exposure of every other canary before and
    after. Both selections share every setting, so one job (one process) runs the two."""
    input:
        unpack(lambda wc: fisher_input(wc, config["onion"]["method"])),
        original_eval="results/eval/{dataset}/seed~{seed}/original.json",
        canaries="results/canaries/{dataset}/seed~{seed}/canaries.csv",
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        tokenizer=TOKENIZER,
        train="results/canaries/{dataset}/seed~{seed}/train.parquet",
        code=code("onion_unlearn"),
    output:
        metrics=[
            ensure(f"results/onion/{{dataset}}/seed~{{seed}}/{selection}.json", non_empty=True)
            for selection in paths.ONION_SELECTIONS
        ],
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
        runtime=60,
        gpu=0,
    params:
        selections=paths.ONION_SELECTIONS,
        onion=config["onion"],
        hyper=config["unlearn"]["methods"][config["onion"]["method"]],
        trajectory=config["unlearn"]["trajectory"],
        fisher=fisher_settings(config["onion"]["method"]),
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/onion_unlearn.py"
