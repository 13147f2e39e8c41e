"""Adapter of rule inject_canaries (workflow/rules/data.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

import pandas as pd
from unlearnbench.canaries import CanaryConfig, inject_canaries, write_injection
from unlearnbench.stage import run_stage

params = dict(snakemake.params.items())
cfg = CanaryConfig(**params["canaries"], seed=params["seed"])
inp, out = snakemake.input, snakemake.output


def work(log):
    def texts(path):
        return pd.read_parquet(path, columns=["text"])["text"].tolist()

    result = inject_canaries(
        snakemake.wildcards.dataset,
        cfg,
        train=texts(inp.train),
        held_out=texts(inp.validation) + texts(inp.test),
    )
    return write_injection(
        result,
        train_path=out.train,
        canaries_path=out.canaries,
        forget_path=out.forget,
        retain_path=out.retain,
    )


run_stage(out.manifest, snakemake.log[0], params, {"canaries": params["seed"]}, work)
