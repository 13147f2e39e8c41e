"""Adapter of rule unlearn (workflow/rules/unlearn.smk): one method, one request."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.fisher_estimation import FisherConfig
from unlearnbench.stage import run_stage
from unlearnbench.unlearning import unlearn_stage

params = dict(snakemake.params.items())
inp, out, wc = snakemake.input, snakemake.output, snakemake.wildcards
fisher_paths = (inp.fisher_tensors, inp.fisher_meta) if hasattr(inp, "fisher_tensors") else None

run_stage(
    out.manifest,
    snakemake.log[0],
    params,
    {"unlearn": params["seed"], "eval": params["seed"]},
    lambda log: unlearn_stage(
        wc.method,
        params["hyper"],
        model_dir=Path(inp.model[0]).parent,
        tokenizer_dir=Path(inp.tokenizer).parent,
        train_path=inp.train,
        forget_path=inp.forget,
        retain_path=inp.retain,
        canaries_path=getattr(inp, "canaries", None),
        fisher_paths=fisher_paths,
        fisher_cfg=FisherConfig(**params["fisher"], seed=params["seed"]),
        trajectory=params["trajectory"],
        seed=params["seed"],
        out_dir=Path(out.model[0]).parent,
    ),
    threads=snakemake.threads,
)
