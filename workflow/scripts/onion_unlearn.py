"""Adapter of rule onion_unlearn (workflow/rules/unlearn.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher.estimation import FisherConfig
from unlearnbench.replicate import ReplicateFiles
from unlearnbench.stage import record_stage, start_stage
from unlearnbench.studies.onion import onion_stage

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
replicate = ReplicateFiles.from_inputs(inp, snakemake.wildcards.dataset, params["seed"])
fisher_cfg = FisherConfig(**params["fisher"], seed=params["seed"]) if params["fisher"] else None


def study(selection):
    return lambda frame: onion_stage(
        selection,
        params["onion"]["remove"],
        params["onion"]["method"],
        params["hyper"],
        replicate,
        original_eval_path=inp.original_eval,
        fisher_cfg=fisher_cfg,
        trajectory=params["trajectory"],
        device=frame.device,
    )


# One process for both selections (importing torch and transformers costs ~8 s per process);
# each selection is its own result: own metrics file, provenance and cost, one shared log.
frame = start_stage(
    snakemake.log[0], params, threads=snakemake.threads, gpus=snakemake.resources.get("gpu", 0)
)
for selection, metrics_path in zip(params["selections"], out.metrics, strict=True):
    record_stage(
        metrics_path,
        {**params, "selection": selection},
        {"unlearn": params["seed"], "eval": params["seed"]},
        study(selection),
        frame,
    )
