# Unlearning: every method's frontier from the original model (one request, every strength of
# its grid, its operating points chosen without the evaluation canaries), the multi-cycle
# study (K sequential requests) and the onion-effect study. The real-world case study's
# requests are unlearned by unlearn_realworld (realworld.smk).


rule sweep_frontier:
    """One method's frontier on an nlp replicate: every point of its grid
    (unlearn.frontier.<method>) run from the original model and scored like every other model
    (evaluation.score_model), then its two operating points chosen from the tuning canaries and
    the validation split only: matched erasure (the weakest point reaching the retrained
    model's tuning-canary exposure, within the distance to its twin) and matched utility (the strongest within
    unlearn.selection.utility_budget of the original's validation perplexity). One process
    for the whole grid: starting Python and torch costs more than a point."""
    input:
        unpack(fisher_input),
        **EVALUATE_DATA,
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        retrained_metrics="results/eval/{dataset}/seed~{seed}/retrained.json",
        twin_metrics="results/eval/{dataset}/seed~{seed}/retrained_reorder.json",
        original_metrics="results/eval/{dataset}/seed~{seed}/original.json",
        code=code("sweep_frontier"),
    output:
        frontier=ensure("results/frontier/{dataset}/seed~{seed}/{method}.json", non_empty=True),
    log:
        log_path("sweep_frontier", "{dataset}", "seed~{seed}", "{method}"),
    benchmark:
        benchmark_path("sweep_frontier", "{dataset}", "seed~{seed}", "{method}")
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
        method=one_of(METHODS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb("sweep_frontier", floor=6000),
        runtime=runtime_min("sweep_frontier", floor=120),
        gpu=0,
    params:
        compute=COMPUTE,
        hyper=lambda wc: config["unlearn"]["methods"][wc.method],
        grid=lambda wc: config["unlearn"]["frontier"][wc.method],
        fisher=lambda wc: fisher_settings(wc.method),
        evaluate=config["evaluate"],
        utility_budget=config["unlearn"]["selection"]["utility_budget"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/sweep_frontier.py"


rule unlearn_cycles:
    """K sequential requests: cycle k removes canary group k from cycle k-1's model, retaining
    D minus every group removed so far (Fisher methods estimate F of that set at each cycle's
    weights, so the stored Fisher is not an input); every cycle's model is kept and scored
    with the evaluate rule's function and settings (results/eval/.../cycle~k~method.json).
    The method runs at unlearn.cycle_point: its base setting or its frontier's operating point
    on the same replicate."""
    input:
        **EVALUATE_DATA,
        # the method's frontier, whose operating point the cycles run at (unless base)
        **cycle_frontier(),
        model=model_files("results/models/{dataset}/seed~{seed}/original"),
        retrained_metrics="results/eval/{dataset}/seed~{seed}/retrained.json",
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
        runtime=runtime_min("unlearn_cycles", floor=120),
        gpu=0,
    params:
        **UNLEARN_PARAMS,
        compute=COMPUTE,
        requests=REQUESTS,
        evaluate=config["evaluate"],
        cycle_point=config["unlearn"]["cycle_point"],
    script:
        "../scripts/unlearn_cycles.py"


rule unlearning:
    """Target: every frontier, cycle and onion study, with their metrics."""
    input:
        expand(
            "results/frontier/{dataset}/seed~{seed}/{method}.json",
            dataset=NLP_DATASETS,
            seed=REPLICATES,
            method=METHODS,
        ),
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=CYCLE_REPLICATES,
            model=CYCLE_MODELS,
        ),
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=CYCLE_REPLICATES,
            model=CYCLE_RETRAINS,
        ),
        expand(
            "results/onion/{dataset}/seed~{seed}/{selection}.json",
            dataset=NLP_DATASETS,
            seed=ONION_REPLICATES,
            selection=paths.ONION_SELECTIONS,
        ),
        expand(
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=ONION_REPLICATES,
            model=ONION_RETRAINS,
        ),


# The requests are light (no torch, a second or two): they run where Snakemake runs.
localrules:
    onion_request,
    cycle_request,


rule onion_request:
    """The onion study's subset S of one selection: the onion.remove canaries the original
    model exposes most (targeted) or a seeded random set of others with as many training rows
    (random), written as a request. Its retrain (rule retrain, model onion~{selection}) trains
    on the request's D+, its unlearning arm (onion_unlearn) removes its D-."""
    input:
        original_eval="results/eval/{dataset}/seed~{seed}/original.json",
        canaries="results/canaries/{dataset}/seed~{seed}/canaries.csv",
        tokenizer=TOKENIZER,
        train="results/canaries/{dataset}/seed~{seed}/train.parquet",
        code=code("onion_request"),
    output:
        forget=f"{paths.ONION_REQUEST}/forget_set.json",
        retain=f"{paths.ONION_REQUEST}/retain_set.json",
        canaries=f"{paths.ONION_REQUEST}/canaries.csv",
        manifest=ensure(f"{paths.ONION_REQUEST}/manifest.json", non_empty=True),
    log:
        log_path("onion_request", "{dataset}", "seed~{seed}", "{selection}"),
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
        selection=one_of(paths.ONION_SELECTIONS),
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        n_remove=config["onion"]["remove"],
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/onion_request.py"


rule cycle_request:
    """The retained set after the first {request} requests of the cycle study (D minus groups
    1..{request}; the groups still pending stay): the training set of that request's
    retrained model (rule retrain, model retrained_request~{request})."""
    input:
        forget="results/canaries/{dataset}/seed~{seed}/forget_set.json",
        retain="results/canaries/{dataset}/seed~{seed}/retain_set.json",
        code=code("cycle_request"),
    output:
        retain=f"{paths.CYCLE_REQUEST}/retain_set.json",
        manifest=ensure(f"{paths.CYCLE_REQUEST}/manifest.json", non_empty=True),
    log:
        log_path("cycle_request", "{dataset}", "seed~{seed}", "request~{request}"),
    wildcard_constraints:
        dataset=one_of(NLP_DATASETS),
        request=r"\d+",
    conda:
        "../../envs/unlearnbench.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/cycle_request.py"


rule onion_unlearn:
    """The onion effect: remove the most exposed canaries (targeted) and, separately, a seeded
    random set of others with as many training rows, with onion.method, recording the exposure
    of every other canary before and after (a Fisher method estimates the Fisher of each
    request's own D+). Both selections share every setting, so one job runs the two."""
    input:
        **{
            f"request_{name}": paths.expand_grid(
                f"{paths.ONION_REQUEST}/{file}",
                dataset=["{dataset}"],
                seed=["{seed}"],
                selection=paths.ONION_SELECTIONS,
            )
            for name, file in ONION_REQUEST_FILES.items()
        },
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
        runtime=runtime_min("onion_unlearn", floor=60),
        gpu=0,
    params:
        compute=COMPUTE,
        selections=paths.ONION_SELECTIONS,
        onion=without(config["onion"], "replicates", "remove"),
        hyper=config["unlearn"]["methods"][config["onion"]["method"]],
        trajectory=config["unlearn"]["trajectory"],
        fisher=fisher_settings(config["onion"]["method"]),
        seed=lambda wc: int(wc.seed),
    script:
        "../scripts/onion_unlearn.py"
