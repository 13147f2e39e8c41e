"""Adapter of rule evaluate (workflow/rules/evaluate.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.evaluation import EvalConfig, evaluate_model
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())
cfg = EvalConfig.from_settings(params["evaluate"], seed=params["seed"])
inp, wc = snakemake.input, snakemake.wildcards


def work(log):
    metrics = evaluate_model(
        Path(inp.model[0]).parent,
        Path(inp.tokenizer).parent,
        test_path=inp.test,
        train_path=inp.train,
        forget_path=inp.forget,
        retain_path=inp.retain,
        canaries_path=inp.canaries,
        cfg=cfg,
    )
    return {"dataset": wc.dataset, "seed": int(wc.seed), "model_name": wc.model, **metrics}


run_stage(
    snakemake.output.metrics,
    snakemake.log[0],
    params,
    {"eval": params["seed"]},
    work,
    threads=snakemake.threads,
)
