"""Adapter of rule train_dp (workflow/rules/train.smk): DP-SGD at one target epsilon."""

import sys
from pathlib import Path

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # the unlearnbench package, also under --sdm conda

from unlearnbench.stage import run_stage
from unlearnbench.texts import read_texts
from unlearnbench.training.dp_stage import dp_finetune_from
from unlearnbench.training.dp_sweep import dp_settings

params = dict(snakemake.params.items())
recipe, sweep = dp_settings(params["recipe"], params["epsilon"], params["seed"])
inp = snakemake.input

run_stage(
    snakemake.output.manifest,
    snakemake.log[0],
    params,
    {"dp": params["seed"], "data_order": params["seed"]},
    lambda frame: dp_finetune_from(
        Path(inp.base[0]).parent,
        Path(inp.tokenizer).parent,
        read_texts([inp.train]),
        read_texts([inp.validation]),
        recipe,
        sweep,
        out_dir=Path(snakemake.output.model[0]).parent,
        checkpoint_dir=params["checkpoint"],
        device=frame.device,
    ),
    threads=snakemake.threads,
    gpus=snakemake.resources.get("gpu", 0),
)
