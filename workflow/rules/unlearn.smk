# Unlearning: every method's frontier from the original model (one request, every strength of
# its grid, its operating points chosen without the evaluation canaries), the multi-cycle
# study (K sequential requests). The onion study's rules are in onion.smk, the real-world
# case study's in realworld.smk.


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
        **operating_frontier(config["unlearn"]["cycle_point"]),
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
            "results/eval/{dataset}/seed~{seed}/{model}.json",
            dataset=NLP_DATASETS,
            seed=ONION_REPLICATES,
            model=ONION_MODELS,
        ),


# The requests are light (no torch, a second or two): they run where Snakemake runs.
localrules:
    cycle_request,


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
