"""Adapter of rule onion_unlearn (workflow/rules/unlearn.smk)."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher_estimation import FisherConfig
from unlearnbench.onion import onion_stage
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())
inp, out = snakemake.input, snakemake.output
fisher_paths = (inp.fisher_tensors, inp.fisher_meta) if hasattr(inp, "fisher_tensors") else None


def study(selection):
    return lambda log: onion_stage(
        selection,
        params["onion"]["remove"],
        params["onion"]["method"],
        params["hyper"],
        original_eval_path=inp.original_eval,
        canaries_path=inp.canaries,
        train_path=inp.train,
        model_dir=Path(inp.model[0]).parent,
        tokenizer_dir=Path(inp.tokenizer).parent,
        fisher_paths=fisher_paths,
        fisher_cfg=FisherConfig(**params["fisher"], seed=params["seed"]),
        trajectory=params["trajectory"],
        seed=params["seed"],
    )


# One process for both selections (importing torch and transformers costs ~8 s per process);
# each selection is its own stage: own metrics file, provenance and cost, one shared log.
for selection, metrics_path in zip(params["selections"], out.metrics, strict=True):
    run_stage(
        metrics_path,
        snakemake.log[0],
        {**params, "selection": selection},
        {"unlearn": params["seed"], "eval": params["seed"]},
        study(selection),
        threads=snakemake.threads,
    )
