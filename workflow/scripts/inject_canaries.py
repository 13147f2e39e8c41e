"""Adapter of rule inject_canaries (workflow/rules/data.smk)."""

import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.canaries import CanaryConfig, inject_canaries, write_injection
from unlearnbench.stage import run_stage
from unlearnbench.texts import read_texts

params = dict(snakemake.params.items())
cfg = CanaryConfig(**params["canaries"], seed=params["seed"])
inp, out = snakemake.input, snakemake.output


def work(frame):
    result = inject_canaries(
        snakemake.wildcards.dataset,
        cfg,
        train=read_texts([inp.train]),
        held_out=read_texts([inp.validation, inp.test]),
    )
    return write_injection(
        result,
        train_path=out.train,
        canaries_path=out.canaries,
        forget_path=out.forget,
        retain_path=out.retain,
    )


run_stage(out.manifest, snakemake.log[0], params, {"canaries": params["seed"]}, work)
