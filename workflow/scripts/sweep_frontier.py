"""Adapter of rule sweep_frontier (workflow/rules/unlearn.smk): one method's whole grid on an
nlp replicate, every point scored, the operating points chosen."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.fisher.launch import ran_on_every_gpu
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import run_stage
from unlearnbench.unlearning.frontier_stage import frontier_stage

if ran_on_every_gpu(snakemake):  # gpu > 1: this script ran once per GPU, under torchrun
    sys.exit(0)

params = dict(snakemake.params.items())
inp = snakemake.input
seed = params["seed"]
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, seed)
fisher_cfg = FisherConfig(**params["fisher"], seed=seed) if params["fisher"] else None

run_stage(
    snakemake.output.frontier,
    snakemake.log[0],
    params,
    {"unlearn": seed, "eval": seed},
    lambda frame: frontier_stage(
        snakemake.wildcards.method,
        params["hyper"],
        params["grid"],
        replicate,
        fisher_cfg,
        params["evaluate"],
        params["utility_budget"],
        inp.original_metrics,
        device=frame.device,
        twin_metrics=inp.twin_metrics,
    ),
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
